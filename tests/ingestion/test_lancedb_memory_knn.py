"""kNN in memory (ingestion/search_index/lancedb_vectors.py) answers what LanceDB's exhaustive
search answers, under every access filter, and follows writes made through another handle."""

from __future__ import annotations

import pytest

from ingestion.search_index.base import AccessFilter
from ingestion.search_index.lancedb_engine import LanceDBIndex
from tests.contract.test_search_index import chunk, ids, upsert, vector

ACCESSES = [
    AccessFilter(), AccessFilter.staff(), AccessFilter(groups=("red",)), AccessFilter(groups=("red", "blue")),
    AccessFilter(groups=("nobody",)), AccessFilter(everything=True, source_ids=(2,)),
    AccessFilter(groups=("blue",), source_ids=(1, 3)), AccessFilter(source_ids=()),
]


@pytest.fixture
def pair(tmp_path):
    memory = LanceDBIndex(tmp_path / "lancedb")
    for document in range(1, 41):
        groups = (("red",), ("blue",), ("red", "blue"), ())[document % 4]
        chunks = [chunk(document, ordinal, f"text {document} {ordinal}", source_id=document % 3 + 1,
                        public=document % 5 == 0, groups=groups, feedback=document / 100)
                  for ordinal in range(3)]
        upsert(memory, document, 1, chunks)
    return memory, LanceDBIndex(tmp_path / "lancedb", memory_knn_rows=0)


@pytest.mark.parametrize("access", ACCESSES)
def test_it_finds_what_lancedb_finds(pair, access: AccessFilter) -> None:
    memory, lance = pair
    for seed in (1, 2, 3):
        query = vector(1000 + seed)
        found, expected = memory.knn(query, k=7, access=access), lance.knn(query, k=7, access=access)

        assert ids(found) == ids(expected)
        assert [round(h.score, 5) for h in found] == [round(h.score, 5) for h in expected]
        assert [(h.title, h.text, h.uri, h.feedback, h.ordinal) for h in found] == \
               [(h.title, h.text, h.uri, h.feedback, h.ordinal) for h in expected]
    assert memory._memory_knn._held is not None  # answered from memory, not by LanceDB


def test_it_sees_writes_and_scores_made_by_another_handle(pair) -> None:
    memory, other = pair
    query = vector(7)
    memory.knn(query, k=3, access=AccessFilter.staff())

    upsert(other, 99, 1, [chunk(99, 0, "the nearest", vec=query)])
    assert ids(memory.knn(query, k=1, access=AccessFilter.staff())) == ["99-0"]
    other.set_feedback({"99-0": 0.75})
    assert memory.knn(query, k=1, access=AccessFilter.staff())[0].feedback == 0.75
    other.delete_document(99)
    assert "99-0" not in ids(memory.knn(query, k=5, access=AccessFilter.staff()))


def test_a_table_over_the_limit_is_left_to_lancedb(tmp_path) -> None:
    index = LanceDBIndex(tmp_path / "lancedb", memory_knn_rows=2)
    upsert(index, 1, 1, [chunk(1, i, f"text {i}") for i in range(3)])

    assert len(index.knn(vector(5), k=2, access=AccessFilter.staff())) == 2
    assert index._memory_knn._held is None


def test_every_filter_in_turn_on_one_snapshot_and_after_a_write(pair) -> None:
    """The masks a snapshot keeps per filter (Snapshot.allowed) are each filter's own, and a
    write (a new version: rows public now) is searched under masks worked out again."""
    memory, lance = pair
    query = vector(2024)
    for _ in range(2):  # the second pass answers from the kept masks
        for access in ACCESSES:
            assert ids(memory.knn(query, k=9, access=access)) == ids(lance.knn(query, k=9, access=access)), access
            # every visible row holds "text", with tied scores: the same rows, in either order
            assert sorted(ids(memory.bm25("text", k=500, access=access))) == \
                   sorted(ids(lance.bm25("text", k=500, access=access))), access
    held = memory._memory_knn._held
    assert held is not None and len(held.masks) == len(ACCESSES)
    assert all(mask is None or not mask.flags.writeable for mask in held.masks.values())

    upsert(lance, 7, 2, [chunk(7, 0, "text made public", version=2, source_id=2, public=True, vec=query)])
    for access in ACCESSES:
        assert ids(memory.knn(query, k=9, access=access)) == ids(lance.knn(query, k=9, access=access)), access
    assert memory._memory_knn._held is not held
    assert "7-0" in ids(memory.knn(query, k=1, access=AccessFilter()))  # public now: anyone sees it
