"""How votes are counted: one per user per chunk, a per-user hourly cap, smoothing, decay, and
the consumer's reactions to `incomplete` and `outdated` (the handler called directly on the
recorded event; the end-to-end path is in test_reindex.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from events.envelope import cloudevent_from_record
from events.models import Event
from feedback.handlers import feedback_received
from feedback.models import ChunkFeedback, DocumentFeedback, Feedback
from feedback.selectors import Vote, feedback_score
from feedback.services import feedback_record
from feedback.tasks import feedback_scores_flush, feedback_scores_refresh
from ingestion.embedding import embedder
from ingestion.models import Document, Source
from ingestion.services import document_ingest
from tests.factories import SourceFactory, UserFactory
from tests.feedback.conftest import message_citing


@pytest.fixture
def documents(db) -> list[Document]:
    source = SourceFactory()
    return [document_ingest(source=source, external_id=f"d{i}", content=f"Document {i}.".encode()).document
            for i in range(6)]


@pytest.fixture
def handle_latest_vote(eager_tasks, django_capture_on_commit_callbacks):
    """Deliver the last `freshet.feedback.received` to the consumer in this process, as the worker
    would, and run the flush it asks for."""
    def handle() -> None:
        event = Event.objects.filter(type="freshet.feedback.received").latest("time")
        with django_capture_on_commit_callbacks(execute=True):
            feedback_received(cloudevent_from_record(event))
        feedback_scores_flush()
    return handle


def tally(chunk_id: str) -> tuple[int, int]:
    row = ChunkFeedback.objects.filter(chunk_id=chunk_id).first()
    return (row.up, row.down) if row else (0, 0)


def vote(rating: int, *, days_old: float = 0.0) -> Vote:
    return Vote(feedback_id=1, user_id=1, chunk_id="c", document_id=1, rating=rating, reason="", on_chunk=True,
                at=timezone.now() - timedelta(days=days_old), hour_rank=0)


def test_the_score_is_smoothed_bounded_and_decays(settings):
    settings.FEEDBACK_PRIOR = 1.0
    settings.FEEDBACK_HALF_LIFE_DAYS = 30.0
    settings.FEEDBACK_DOWN_WEIGHT = 1.0
    assert feedback_score([]) == 0.0
    assert feedback_score([vote(-1)]) == pytest.approx(-0.5)  # one vote cannot bury a chunk
    assert feedback_score([vote(1)] * 1000) == pytest.approx(1000 / 1001)
    assert -1 < feedback_score([vote(-1)] * 10_000) < -0.999
    assert feedback_score([vote(1, days_old=30)]) == pytest.approx(0.5 / 1.5)  # half the weight after a half-life
    assert feedback_score([vote(1, days_old=3000)]) == pytest.approx(0.0, abs=1e-9)

    settings.FEEDBACK_DOWN_WEIGHT = 0.5  # a thumbs-down counts half
    assert feedback_score([vote(-1)]) == pytest.approx(-0.5 / 1.5)
    assert feedback_score([vote(1), vote(-1)]) == pytest.approx(0.5 / 2.5)
    assert -1 < feedback_score([vote(-1)] * 10_000) < -0.999
    settings.FEEDBACK_DOWN_WEIGHT = 0.0  # thumbs-down steer nothing
    assert feedback_score([vote(-1)] * 5) == 0.0


def test_a_user_counts_once_per_chunk_and_a_changed_vote_replaces_the_old_one(documents, handle_latest_vote):
    user = UserFactory()
    chunks = [(f"{d.pk}-0", d.pk) for d in documents[:3]]
    message = message_citing(user, chunks)
    first = chunks[0][0]

    feedback_record(user=user, message_id=message.pk, rating=1)  # the answer: every citation
    handle_latest_vote()
    assert [tally(c) for c, _ in chunks] == [(1, 0)] * 3

    feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=first)  # the passage itself wins
    handle_latest_vote()
    assert tally(first) == (0, 1)
    assert tally(chunks[1][0]) == (1, 0)

    feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=first)  # changed: replaced, not added
    handle_latest_vote()
    handle_latest_vote()  # delivered twice: still one vote
    assert tally(first) == (1, 0)

    # The same user asking again and voting again on the same passage is still one voice.
    again = message_citing(user, chunks[:1])
    feedback_record(user=user, message_id=again.pk, rating=1, chunk_id=first)
    handle_latest_vote()
    assert tally(first) == (1, 0)
    other = UserFactory()
    feedback_record(user=other, message_id=message_citing(other, chunks[:1]).pk, rating=1, chunk_id=first)
    handle_latest_vote()
    assert tally(first) == (2, 0)
    assert ChunkFeedback.objects.get(chunk_id=first).score == pytest.approx(feedback_score([vote(1)] * 2), abs=1e-4)


def test_votes_past_the_hourly_cap_are_kept_but_steer_nothing(documents, settings, handle_latest_vote):
    settings.FEEDBACK_USER_VOTES_PER_HOUR = 3
    steerer, honest = UserFactory(), UserFactory()
    chunks = [(f"{d.pk}-0", d.pk) for d in documents]
    message = message_citing(steerer, chunks)
    for chunk_id, _ in chunks:
        feedback_record(user=steerer, message_id=message.pk, rating=-1, chunk_id=chunk_id)
        handle_latest_vote()
    assert Feedback.objects.filter(user=steerer).count() == 6
    assert [tally(c) for c, _ in chunks] == [(0, 1)] * 3 + [(0, 0)] * 3

    # Someone else's votes in the same hour are theirs to spend.
    mine = message_citing(honest, chunks[3:4])
    feedback_record(user=honest, message_id=mine.pk, rating=1, chunk_id=chunks[3][0])
    handle_latest_vote()
    assert tally(chunks[3][0]) == (1, 0)

    # Changing a vote keeps its place in its hour: it spends nothing new.
    feedback_record(user=steerer, message_id=message.pk, rating=1, chunk_id=chunks[0][0])
    handle_latest_vote()
    assert tally(chunks[0][0]) == (1, 0)

    # The next hour, the user's votes count again.
    Feedback.objects.filter(user=steerer).update(created_at=F("created_at") - timedelta(hours=1))
    later = message_citing(steerer, chunks[5:])
    feedback_record(user=steerer, message_id=later.pk, rating=-1, chunk_id=chunks[5][0])
    handle_latest_vote()
    assert tally(chunks[5][0]) == (0, 1)
    assert tally(chunks[4][0]) == (0, 0)


def test_repeated_incomplete_asks_once_for_larger_chunks(documents, settings, handle_latest_vote):
    settings.FEEDBACK_INCOMPLETE_USERS = 3
    document = documents[0]
    chunk = (f"{document.pk}-0", document.pk)

    def incomplete_from_a_new_user() -> None:
        user = UserFactory()
        message = message_citing(user, [chunk])
        feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=chunk[0], reason="incomplete")
        handle_latest_vote()

    def requests() -> list[dict]:
        return list(Event.objects.filter(type="freshet.reindex.requested").values_list("data", flat=True))

    incomplete_from_a_new_user()
    incomplete_from_a_new_user()
    assert requests() == []
    incomplete_from_a_new_user()
    assert len(requests()) == 1
    size, overlap = document.source.chunking
    window = embedder().max_tokens - 2  # chunks twice as long, up to what the model reads
    larger = (min(2 * size, window), min(2 * overlap, window // 4))
    assert larger[0] > size
    assert requests()[0] == {"document_id": document.pk, "source_id": document.source_id, "reason": "incomplete",
                             "users": 3, "chunk_size": larger[0], "chunk_overlap": larger[1]}
    # The document now has its own, larger chunking, and a new version went through the pipeline
    # (eagerly, in this test) with it.
    rechunked = Document.objects.get(pk=document.pk)
    assert rechunked.chunking == larger and rechunked.version == document.version + 1
    assert rechunked.indexed_fingerprint == rechunked.fingerprint() != document.fingerprint()
    assert Source.objects.get(pk=document.source_id).chunking == (size, overlap)  # the source is untouched
    incomplete_from_a_new_user()
    assert len(requests()) == 1  # once per document
    assert Document.objects.get(pk=document.pk).version == document.version + 1
    tally_row = DocumentFeedback.objects.get(document_id=document.pk)
    assert tally_row.incomplete == 4 and tally_row.rechunk_requested_at is not None


def test_outdated_on_an_upload_is_recorded_and_nothing_is_fetched(documents, handle_latest_vote):
    document = documents[0]
    user = UserFactory()
    message = message_citing(user, [(f"{document.pk}-0", document.pk)])
    feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=f"{document.pk}-0", reason="outdated")
    handle_latest_vote()
    tally_row = DocumentFeedback.objects.get(document_id=document.pk)
    assert tally_row.refetch_status == DocumentFeedback.Refetch.NOT_REFETCHABLE
    assert "cannot be re-fetched" in tally_row.refetch_detail
    assert tally_row.outdated == 1 and tally_row.refetch_requested_at is None


def test_the_periodic_refresh_lets_old_votes_fade(documents, settings, handle_latest_vote,
                                                  django_capture_on_commit_callbacks):
    settings.FEEDBACK_PRIOR, settings.FEEDBACK_HALF_LIFE_DAYS = 1.0, 10.0
    user = UserFactory()
    chunk_id = f"{documents[0].pk}-0"
    feedback_record(user=user, message_id=message_citing(user, [(chunk_id, documents[0].pk)]).pk, rating=1,
                    chunk_id=chunk_id)
    handle_latest_vote()
    assert ChunkFeedback.objects.get(chunk_id=chunk_id).score == pytest.approx(0.5, abs=1e-4)

    Feedback.objects.update(updated_at=timezone.now() - timedelta(days=10))  # one half-life ago
    with django_capture_on_commit_callbacks(execute=True):
        assert feedback_scores_refresh() == 1
    tally_row = ChunkFeedback.objects.get(chunk_id=chunk_id)
    assert tally_row.score == pytest.approx(0.5 / 1.5, abs=1e-4) and tally_row.up == 1
    assert tally_row.indexed_score == tally_row.score


def test_scores_still_go_out_when_the_questions_cannot_be_embedded(documents, monkeypatch):
    """The questions are embedded by a remote service that is down (a closed port): the recount
    gives the scores and no profiles (None: the index keeps the ones it has), and the profiles
    come with the next recount once the model answers."""
    import socket

    from django.db import transaction

    from feedback import consumer
    from feedback.profiles import QuestionProfile
    from ingestion import embedding

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    user = UserFactory()
    chunk_id = f"{documents[0].pk}-0"
    message = message_citing(user, [(chunk_id, documents[0].pk)], question="Which glaciers retreat fastest?")
    feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=chunk_id)
    consumer._questions.clear()

    working = embedder()
    monkeypatch.setattr(embedding, "_embedder", embedding.Embedder(url=f"http://127.0.0.1:{port}"))
    with transaction.atomic():
        scores, profiles = consumer.chunk_tallies_recompute([chunk_id])
    assert profiles is None
    assert scores == {chunk_id: pytest.approx(feedback_score([vote(1)]), abs=1e-4)}

    monkeypatch.setattr(embedding, "_embedder", working)
    with transaction.atomic():
        scores, profiles = consumer.chunk_tallies_recompute([chunk_id])
    profile = QuestionProfile.decode(profiles[chunk_id])
    assert (profile.up, profile.down) == (pytest.approx(1.0, abs=1e-4), 0.0)
    asked = working.encode(["Which glaciers retreat fastest?"])[0]
    assert profile.up_question == pytest.approx(asked, abs=1e-5)
