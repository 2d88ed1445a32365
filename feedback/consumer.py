"""What the feedback consumer writes (its subscribers are in feedback/handlers.py; the vote itself
is stored by feedback.services.feedback_record).

For every vote:
1. the tallies of the chunks it credits (the one chunk of a per-citation vote, every citation of
   an answer vote) and of their documents are recomputed from the Feedback table, so a changed
   vote replaces the old one and a repeated event counts nothing twice;
2. chunks whose score changed are marked dirty in a Redis set, and one flush per
   FEEDBACK_FLUSH_SECONDS writes every dirty chunk's score to the search index in one
   `set_feedback` call: a storm of votes makes one write per window, not one per vote;
3. `outdated`: the documents are re-fetched from their source (url sources) and go through the
   pipeline again when their content changed; the chat marks answers citing them as stale when
   the new version is indexed (chat/subscriptions.py);
4. `incomplete` from FEEDBACK_INCOMPLETE_USERS distinct users: a `freshet.reindex.requested`
   event asks for the document to be cut into larger chunks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.models import Citation
from events.errors import TransientError
from events.services import event_publish
from feedback.models import ChunkFeedback, DocumentFeedback, Feedback
from feedback.refetch import RefetchFailed, refetch_url, url_fetch
from feedback.selectors import (
    chunk_scores,
    document_tally_counts,
    feedback_score,
    votes_counted,
    votes_touching,
)
from ingestion.models import Document
from ingestion.search_index import search_index

logger = logging.getLogger(__name__)

SCORE_EPSILON = 1e-6  # scores closer than this to what the index holds are not rewritten
FLUSH_GUARD_SECONDS = 60  # a lost flush task holds back others at most this long
FLUSH_BATCH = 1000


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _dirty_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}feedback:dirty"


def _flush_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}feedback:flush-scheduled"


# --- Tallies ----------------------------------------------------------------------------------
def chunk_tallies_recompute(chunk_ids: Iterable[str], *, reset_indexed: bool = False) -> list[str]:
    """Recount the votes on these chunks and store each one's score; returns the chunks whose
    score is not what the index holds (they need writing). Call inside a transaction.

    The tally rows are locked before the votes are read, so two handlers recounting the same
    chunk run one after the other and the later one sees every committed vote.
    `reset_indexed`: the index copy lost its scores (the document was re-indexed).
    """
    ids = sorted({c for c in chunk_ids if c})
    if not ids:
        return []
    ChunkFeedback.objects.bulk_create([ChunkFeedback(chunk_id=c) for c in ids], ignore_conflicts=True)
    tallies = {t.chunk_id: t for t in ChunkFeedback.objects.select_for_update().filter(chunk_id__in=ids)
               .order_by("chunk_id")}
    votes = votes_touching(ids)
    counted = votes_counted(votes)
    document_of = {v.chunk_id: v.document_id for v in votes if v.document_id}
    now = timezone.now()
    stale: list[str] = []
    for chunk_id in ids:
        tally = tallies[chunk_id]
        mine = counted.get(chunk_id, [])
        tally.up = sum(1 for v in mine if v.rating > 0)
        tally.down = sum(1 for v in mine if v.rating < 0)
        tally.score = feedback_score(mine, now=now)
        tally.document_id = document_of.get(chunk_id, tally.document_id)
        if reset_indexed:
            tally.indexed_score = None
        if tally.indexed_score is None or abs(tally.score - tally.indexed_score) > SCORE_EPSILON:
            stale.append(chunk_id)
        tally.updated_at = now  # bulk_update does not apply auto_now
    ChunkFeedback.objects.bulk_update(list(tallies.values()),
                                      ["up", "down", "score", "document_id", "indexed_score", "updated_at"])
    return stale


def document_tally_recompute(document_id: int) -> DocumentFeedback:
    """Recount the votes touching `document_id`. Call inside a transaction."""
    DocumentFeedback.objects.bulk_create([DocumentFeedback(document_id=document_id)], ignore_conflicts=True)
    tally = DocumentFeedback.objects.select_for_update().get(document_id=document_id)
    for field, value in document_tally_counts(document_id).items():
        setattr(tally, field, value if value is not None else getattr(tally, field))
    document = Document.objects.filter(pk=document_id).only("source_id", "title", "external_id").first()
    if document is not None:
        tally.source_id, tally.title = document.source_id, (document.title or document.external_id)[:500]
    tally.save()
    return tally


# --- Scores into the search index -------------------------------------------------------------
def scores_mark_dirty(chunk_ids: Iterable[str]) -> None:
    """After commit, add the chunks to the dirty set and make sure one flush is scheduled."""
    ids = sorted(set(chunk_ids))
    if ids:
        transaction.on_commit(lambda: _dirty_add(ids))


def _dirty_add(chunk_ids: list[str]) -> None:
    from feedback.tasks import feedback_flush

    try:
        r = _redis()
        r.sadd(_dirty_key(), *chunk_ids)
        # The flag is set until the flush starts (it deletes the flag before it reads the set),
        # so a chunk added now is either read by the pending flush or schedules a new one.
        scheduled = r.set(_flush_key(), "1", nx=True, ex=FLUSH_GUARD_SECONDS)
    except redis.RedisError as error:
        raise TransientError(f"Redis: {error}") from error
    if scheduled:
        feedback_flush.apply_async(countdown=settings.FEEDBACK_FLUSH_SECONDS, queue="feedback")


def feedback_scores_flush() -> int:
    """Write the score of every dirty chunk to the search index in one call; returns how many."""
    r = _redis()
    r.delete(_flush_key())
    ids: list[str] = []
    while True:
        popped = r.spop(_dirty_key(), FLUSH_BATCH)
        if not popped:
            break
        ids.extend(raw.decode() for raw in popped)
    if not ids:
        return 0
    scores = chunk_scores(ids)
    try:
        search_index().set_feedback(scores)
    except Exception:
        r.sadd(_dirty_key(), *ids)  # nothing is lost: the retry (or the next flush) writes them
        raise
    now = timezone.now()
    written = list(ChunkFeedback.objects.filter(chunk_id__in=ids).only("chunk_id"))
    for tally in written:
        tally.indexed_score, tally.indexed_at = scores[tally.chunk_id], now
    ChunkFeedback.objects.bulk_update(written, ["indexed_score", "indexed_at"], batch_size=500)
    logger.info("Wrote the feedback scores of %d chunks to the search index", len(ids))
    return len(ids)


def feedback_scores_refresh() -> int:
    """Recount every tallied chunk (votes decay with age) and flush those that moved; returns
    how many chunks were marked for writing."""
    ids = list(ChunkFeedback.objects.filter(Q(up__gt=0) | Q(down__gt=0) | ~Q(score=0.0))
               .values_list("chunk_id", flat=True))
    marked = 0
    for start in range(0, len(ids), 500):
        with transaction.atomic():
            stale = chunk_tallies_recompute(ids[start:start + 500])
            scores_mark_dirty(stale)
            marked += len(stale)
    if not marked and _redis().scard(_dirty_key()):
        feedback_scores_flush()  # leftovers of a flush that never ran
    return marked


# --- The consumer's reaction to one vote ------------------------------------------------------
def feedback_apply(*, chunk_ids: list[str], message_id: int | None, document_id: int | None, reason: str) -> None:
    """Everything one vote sets off (see the module docstring). Safe to run twice."""
    documents = {int(document_id)} if document_id else set()
    if message_id and chunk_ids:
        documents |= set(Citation.objects.filter(message_id=message_id, chunk_id__in=chunk_ids)
                         .values_list("document_id", flat=True))
    with transaction.atomic():
        stale = chunk_tallies_recompute(chunk_ids)
        documents |= set(ChunkFeedback.objects.filter(chunk_id__in=chunk_ids, document_id__isnull=False)
                         .values_list("document_id", flat=True))
        tallies = [document_tally_recompute(d) for d in sorted(documents)]
        scores_mark_dirty(stale)
        for tally in tallies:
            if reason == Feedback.Reason.OUTDATED:
                document_refetch_request(tally.document_id)
            if reason == Feedback.Reason.INCOMPLETE and tally.incomplete >= settings.FEEDBACK_INCOMPLETE_USERS:
                document_rechunk_request(tally)


def document_indexed_restore(document_id: int) -> None:
    """A new version of the document is in the index, written with no feedback scores: recount
    its tallied chunks (outdated votes may no longer count) and write their scores again."""
    ids = list(ChunkFeedback.objects.filter(document_id=document_id).values_list("chunk_id", flat=True))
    if not ids:
        return
    with transaction.atomic():
        scores_mark_dirty(chunk_tallies_recompute(ids, reset_indexed=True))


# --- outdated: re-fetch -----------------------------------------------------------------------
def document_refetch_request(document_id: int) -> bool:
    """Ask for a re-fetch of the document unless one was asked within the cool-down; True if
    asked. Documents that cannot be re-fetched (not a url source) are recorded as such."""
    from feedback.tasks import document_refetch as refetch_task

    document = Document.objects.select_related("source").filter(pk=document_id).first()
    tallies = DocumentFeedback.objects.filter(document_id=document_id)
    if document is None or refetch_url(document) is None:
        kind = document.source.get_kind_display() if document is not None else "deleted"
        detail = (f"Marked outdated, but documents of {kind.lower()} sources cannot be re-fetched: "
                  "replace the document at its source." if document is not None
                  else "Marked outdated, but the document was deleted.")
        logger.info("Document %s marked outdated: %s", document_id, detail)
        tallies.update(refetch_status=DocumentFeedback.Refetch.NOT_REFETCHABLE, refetch_detail=detail)
        return False
    now = timezone.now()
    cutoff = now - timezone.timedelta(seconds=settings.FEEDBACK_REFETCH_COOLDOWN_SECONDS)
    # A conditional UPDATE claims the re-fetch: a storm of `outdated` votes fetches once.
    claimed = tallies.filter(Q(refetch_requested_at__isnull=True) | Q(refetch_requested_at__lt=cutoff)).update(
        refetch_requested_at=now, refetch_status=DocumentFeedback.Refetch.REQUESTED, refetch_detail="")
    if claimed:
        transaction.on_commit(lambda: refetch_task.apply_async(args=[document_id], queue="feedback"))
    return bool(claimed)


def document_refetch(*, document_id: int) -> str:
    """Fetch the document from its source again and ingest it (the pipeline runs only when the
    content changed). Returns the outcome, also recorded in the document's tally. TransientError
    when the source may answer later."""
    from ingestion.services import document_ingest

    tallies = DocumentFeedback.objects.filter(document_id=document_id)
    document = Document.objects.select_related("source").filter(pk=document_id).first()
    url = refetch_url(document) if document is not None else None
    if document is None or url is None:
        tallies.update(refetch_status=DocumentFeedback.Refetch.NOT_REFETCHABLE,
                       refetch_detail="The document is gone or its source cannot be re-fetched.")
        return DocumentFeedback.Refetch.NOT_REFETCHABLE
    try:
        content = url_fetch(url)
    except RefetchFailed as error:
        logger.warning("Re-fetching document %s failed: %s", document_id, error)
        tallies.update(refetch_status=DocumentFeedback.Refetch.FAILED, refetch_detail=str(error),
                       refetched_at=timezone.now())
        return DocumentFeedback.Refetch.FAILED
    with transaction.atomic():
        result = document_ingest(source=document.source, external_id=document.external_id, content=content,
                                 uri=document.uri)
        now = timezone.now()
        if result.changed:
            status = DocumentFeedback.Refetch.CHANGED
            detail = f"New content from {url}: version {result.document.version}."
            tallies.update(refetch_status=status, refetch_detail=detail, refetched_at=now, content_refreshed_at=now)
        else:
            status, detail = DocumentFeedback.Refetch.UNCHANGED, f"{url} still serves the indexed content."
            tallies.update(refetch_status=status, refetch_detail=detail, refetched_at=now)
    logger.info("Re-fetched document %s: %s", document_id, detail)
    return status


def document_refetch_give_up(*, document_id: int, detail: str) -> None:
    DocumentFeedback.objects.filter(document_id=document_id).update(
        refetch_status=DocumentFeedback.Refetch.FAILED, refetch_detail=detail, refetched_at=timezone.now())


# --- incomplete: ask for larger chunks --------------------------------------------------------
def document_rechunk_request(tally: DocumentFeedback) -> bool:
    """Publish `freshet.reindex.requested` for larger chunks, once per document.

    Ingestion has no per-document chunking yet (chunking is a source's profile), so the request
    is an event for it to act on; the tally records that it was made.
    """
    document = Document.objects.select_related("source").filter(pk=tally.document_id).first()
    if document is None:
        return False
    claimed = DocumentFeedback.objects.filter(pk=tally.pk, rechunk_requested_at__isnull=True).update(
        rechunk_requested_at=timezone.now())
    if not claimed:
        return False
    size, overlap = document.source.chunking
    event_publish(
        type="freshet.reindex.requested",
        subject=f"documents/{document.pk}",
        data={"document_id": document.pk, "source_id": document.source_id, "reason": "incomplete",
              "users": tally.incomplete, "chunk_size": size * 2, "chunk_overlap": overlap * 2},
    )
    logger.info("Document %s: %d users found its passages incomplete; asked for chunks of %d tokens",
                document.pk, tally.incomplete, size * 2)
    return True
