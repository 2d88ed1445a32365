"""Vote -> event -> the feedback consumer (in the real worker) -> the chunk's score in the search
index -> a different ranking. LanceDB, through the real pipeline, worker, PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from chat.retrieval import retrieve
from events.models import Event
from events.tasks import event_deliver
from feedback.models import ChunkFeedback, DocumentFeedback
from feedback.services import feedback_record
from ingestion.search_index import AccessFilter
from ingestion.services import document_reindex
from tests.conftest import wait_for
from tests.factories import UserFactory
from tests.feedback.conftest import ask, first_chunk, index_feedback, settled

pytestmark = pytest.mark.worker


def ranking(corpus, k: int = 3) -> list[str]:
    access = AccessFilter(everything=True, source_ids=(corpus.source_id,))
    return [hit.chunk_id for hit in retrieve(corpus.question, access=access, k=k)]


@pytest.mark.xfail(strict=False, reason="Issue 6 is open: the feedback boost's weights are still being tuned, and "
                                      "one down and one up vote do not yet reorder this fixture's top two.")
def test_votes_rewrite_scores_in_the_index_and_change_the_ranking(corpus, settings):
    settings.SEARCH_FEEDBACK_WEIGHT = 1.0
    first, second = first_chunk(corpus.first), first_chunk(corpus.second)
    assert ranking(corpus)[:2] == [first, second]

    user = UserFactory()
    message = ask(user, corpus.question)
    assert {first, second} <= {entry["chunk_id"] for entry in message.retrieved}
    feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=first, reason="wrong_source")
    feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=second)

    wait_for(lambda: index_feedback(first) < 0 < index_feedback(second), timeout=60,
             message="the votes' scores in the search index")
    # Smoothed: one vote moves a chunk this far, no further (a thumbs-down weighs FEEDBACK_DOWN_WEIGHT).
    one_vote = 1 / (1 + settings.FEEDBACK_PRIOR)
    down = settings.FEEDBACK_DOWN_WEIGHT
    assert index_feedback(first) == pytest.approx(-down / (down + settings.FEEDBACK_PRIOR), abs=1e-3)
    assert index_feedback(second) == pytest.approx(one_vote, abs=1e-3)
    after = ranking(corpus)
    assert after[0] == second and after.index(first) > 0
    settings.SEARCH_FEEDBACK_WEIGHT = 0.0
    assert ranking(corpus)[:2] == [first, second]  # the boost is what moved them, nothing else

    tally = ChunkFeedback.objects.get(chunk_id=first)
    assert (tally.up, tally.down, tally.document_id) == (0, 1, corpus.first.pk)
    document = DocumentFeedback.objects.get(document_id=corpus.first.pk)
    assert (document.down, document.wrong_source, document.source_id) == (1, 1, corpus.source_id)

    # A changed vote replaces the old one: the chunk has one vote up, not one up and one down.
    feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=first)
    wait_for(lambda: index_feedback(first) > 0, timeout=60, message="the changed vote in the index")
    tally.refresh_from_db()
    assert (tally.up, tally.down) == (1, 0)

    # The same event delivered again (a redelivery after a crash) counts nothing twice.
    event = Event.objects.filter(type="freshet.feedback.received").latest("time")
    event_deliver(event.id, "feedback.handlers.feedback_received")
    tally.refresh_from_db()
    assert (tally.up, tally.down) == (1, 0)
    assert index_feedback(first) == pytest.approx(one_vote, abs=1e-3)


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
