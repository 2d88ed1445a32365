"""Vote -> event -> the feedback consumer (in the real worker) -> the chunk's score in the search
index -> a different ranking. LanceDB, through the real pipeline, worker, PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from chat.retrieval import retrieve
from events.models import Event
from events.tasks import event_deliver
from feedback.models import ChunkFeedback, DocumentFeedback
from feedback.profiles import QuestionProfile
from feedback.services import feedback_record
from ingestion.search_index import AccessFilter, search_index
from ingestion.services import document_reindex
from tests.conftest import wait_for
from tests.factories import UserFactory
from tests.feedback.conftest import ask, first_chunk, index_feedback, index_refreshed, settled

pytestmark = pytest.mark.worker


def ranking(corpus, k: int = 3) -> list[str]:
    # BM25 is compared before and after votes rewrite rows: on the same statistics.
    wait_for(index_refreshed, timeout=30, message="the worker to refresh the full-text index")
    access = AccessFilter(everything=True, source_ids=(corpus.source_id,))
    return [hit.chunk_id for hit in retrieve(corpus.question, access=access, k=k)]


def test_votes_rewrite_scores_in_the_index_and_change_the_ranking(corpus, settings):
    settings.SEARCH_FEEDBACK_WEIGHT = 1.0
    settings.SEARCH_FEEDBACK_CONTEXT_WEIGHT = 0.0  # the chunks' own scores alone (the next test: context)
    chunk_document = {first_chunk(corpus.first): corpus.first, first_chunk(corpus.second): corpus.second}
    # Both passages answer the question; whichever the fusion puts first is voted down, the
    # runner-up up.
    first, second = ranking(corpus)[:2]
    assert {first, second} == set(chunk_document)

    # One vote moves a chunk a little (smoothed); three people agreeing reorder the two.
    voters = []
    for _ in range(3):
        user = UserFactory()
        message = ask(user, corpus.question)
        assert {first, second} <= {entry["chunk_id"] for entry in message.retrieved}
        feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=first, reason="wrong_source")
        feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=second)
        voters.append((user, message))

    prior, down = settings.FEEDBACK_PRIOR, settings.FEEDBACK_DOWN_WEIGHT
    wait_for(lambda: index_feedback(first) == pytest.approx(-3 * down / (3 * down + prior), abs=1e-3)
             and index_feedback(second) == pytest.approx(3 / (3 + prior), abs=1e-3),
             timeout=60, message="the votes' smoothed scores in the search index")
    after = ranking(corpus)
    assert after[0] == second and after.index(first) > 0
    settings.SEARCH_FEEDBACK_WEIGHT = 0.0
    assert ranking(corpus)[:2] == [first, second]  # the boost is what moved them, nothing else

    tally = ChunkFeedback.objects.get(chunk_id=first)
    assert (tally.up, tally.down, tally.document_id) == (0, 3, chunk_document[first].pk)
    document = DocumentFeedback.objects.get(document_id=chunk_document[first].pk)
    assert (document.down, document.wrong_source, document.source_id) == (3, 3, corpus.source_id)

    # A changed vote replaces the old one: the chunk has one vote up and two down, not four votes.
    user, message = voters[0]
    feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=first)
    expected = (1 - 2 * down) / (1 + 2 * down + prior)
    wait_for(lambda: index_feedback(first) == pytest.approx(expected, abs=1e-3), timeout=60,
             message="the changed vote in the index")
    tally.refresh_from_db()
    assert (tally.up, tally.down) == (1, 2)

    # The same event delivered again (a redelivery after a crash) counts nothing twice.
    event = Event.objects.filter(type="freshet.feedback.received").latest("time")
    event_deliver(event.id, "feedback.handlers.feedback_received")
    tally.refresh_from_db()
    assert (tally.up, tally.down) == (1, 2)
    assert index_feedback(first) == pytest.approx(expected, abs=1e-3)


def test_a_vote_steers_the_question_it_was_cast_for_and_not_an_unrelated_one(corpus, settings):
    """The context boost alone (the chunks' own scores weigh nothing here): one person's votes put
    the runner-up first when their question is asked again, and change nothing for a question
    about something else, though the voted chunks are among its candidates."""
    settings.SEARCH_FEEDBACK_WEIGHT = 0.0
    settings.SEARCH_FEEDBACK_CONTEXT_WEIGHT = 2.0
    access = AccessFilter(everything=True, source_ids=(corpus.source_id,))
    unrelated = f"Why does sourdough{corpus.marker} bread rise so slowly overnight?"

    def scores(question: str) -> dict[str, float]:
        wait_for(index_refreshed, timeout=30, message="the worker to refresh the full-text index")
        return {hit.chunk_id: hit.score for hit in retrieve(question, access=access, k=10)}

    first, second = ranking(corpus)[:2]
    before = scores(unrelated)
    assert {first, second} <= set(before)

    user = UserFactory()
    message = ask(user, corpus.question)
    feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=first)
    feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=second)

    def profiles():
        held = search_index().get_chunks([first, second])
        return all(held[c].feedback_profile for c in (first, second)) and held
    held = wait_for(profiles, timeout=60, message="the question profiles in the search index")
    up, down = (QuestionProfile.decode(held[c].feedback_profile) for c in (second, first))
    assert (up.up, up.down, down.up) == (pytest.approx(1.0, abs=1e-3), 0.0, 0.0)
    assert down.down == pytest.approx(settings.FEEDBACK_DOWN_WEIGHT, abs=1e-3)

    assert ranking(corpus)[:2] == [second, first]
    assert scores(unrelated) == pytest.approx(before)
    settings.SEARCH_FEEDBACK_CONTEXT_WEIGHT = 0.0
    assert ranking(corpus)[:2] == [first, second]


def test_an_answer_vote_credits_every_citation_and_scores_survive_a_reindex(corpus):
    user = UserFactory()
    message = ask(user, corpus.question)
    cited = list(message.citations.values_list("chunk_id", flat=True))
    assert cited
    feedback_record(user=user, message_id=message.pk, rating=-1)
    wait_for(lambda: all(index_feedback(c) < 0 for c in cited), timeout=60,
             message="every cited chunk's score in the index")
    down = ChunkFeedback.objects.filter(chunk_id__in=cited, down=1).values_list("chunk_id", flat=True)
    assert set(down) == set(cited)

    # A new version is written to the index without scores; the consumer puts them back.
    second = first_chunk(corpus.second)
    other = UserFactory()
    message = ask(other, corpus.question)
    feedback_record(user=other, message_id=message.pk, rating=1, chunk_id=second)
    wait_for(lambda: index_feedback(second) > 0, timeout=60, message="the up vote in the index")
    held = index_feedback(second)
    document_reindex(document=corpus.second)
    settled(corpus.second, version=2)
    wait_for(lambda: index_feedback(second) == pytest.approx(held, abs=1e-6), timeout=60,
             message="the score restored after the reindex")
