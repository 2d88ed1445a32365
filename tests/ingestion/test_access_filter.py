"""AccessFilter.narrowed: narrowing a caller's access never widens it."""

from ingestion.search_index import AccessFilter


def test_it_narrows_a_users_sources_to_the_ones_asked_for_that_they_may_see():
    users = AccessFilter(everything=True, source_ids=(1, 2, 3))
    assert users.narrowed([2, 9]).source_ids == (2,)
    assert users.narrowed([9]).source_ids == ()  # a source outside their access: nothing, not everything


def test_it_narrows_staff_to_exactly_the_sources_asked_for():
    assert AccessFilter.staff().narrowed([5, 4]).source_ids == (4, 5)
    assert AccessFilter.staff().narrowed([5]).everything
