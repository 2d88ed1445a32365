"""What the feedback consumer writes (its subscribers are in feedback/handlers.py; the vote itself
is stored by feedback.services.feedback_record).

For every vote:
1. the chunks it credits (the one chunk of a per-citation vote, every citation of an answer vote)
   and their documents are marked dirty in Redis sets, and one flush task per
   FEEDBACK_FLUSH_SECONDS recounts their tallies from the Feedback table and writes every dirty
   chunk's score, and the profile of the questions its voters asked (feedback/profiles.py), to
   the search index in one `set_feedback` call. Recounting (not adding) makes a
   changed vote replace the old one and a repeated event count nothing twice; flushing per window
   makes a storm of votes cost one recount and one index write per window, not one per vote;
2. `outdated`: the documents are re-fetched from their source (url sources) and go through the
   pipeline again when their content changed; the chat marks answers citing them as stale when
   the new version is indexed (chat/handlers.py), and then the consumer rewrites the scores
   of the new version's chunks (`outdated` votes on the old text no longer count);
3. `incomplete` from FEEDBACK_INCOMPLETE_USERS distinct users: the document gets its own
   chunking profile with chunks twice as long (up to the model's window) and goes through the
   pipeline again (announced as `freshet.reindex.requested`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.models import Citation
from config.redis_client import redis_client
from events.services import event_publish
from feedback.models import ChunkFeedback, DocumentFeedback, Feedback
from feedback.profiles import QuestionProfile
from feedback.refetch import RefetchFailed, document_page_fetch, refetch_url
from feedback.selectors import document_tally_counts, feedback_score, vote_weight, votes_counted, votes_touching
from ingestion.chunking import max_chunk_tokens
from ingestion.embedding import VectorCache, embedder
from ingestion.models import Document
from ingestion.search_index import search_index
from ingestion.tasks import search_index_refresh_soon

logger = logging.getLogger(__name__)

FLUSH_GUARD_SECONDS = 60  # a lost flush task holds back the next one at most this long
FLUSH_BATCH = 2000  # chunks recounted and written per flush; more are left for the next one
QUESTION_CACHE_SIZE = 4096  # question embeddings kept per process (a voted answer is recounted often)


def _key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}feedback:{name}"


# --- Tallies ----------------------------------------------------------------------------------
_questions = VectorCache()


def question_vectors(questions: Iterable[str]) -> dict[str, np.ndarray]:
    """The embedding of each question (same model as the index), from a small per-process cache."""
    wanted = sorted({q for q in questions if q})
    found = _questions.get_many(wanted)
    missing = [q for q in wanted if q not in found]
    if missing:
        for question, vector in zip(missing, embedder().encode(missing), strict=True):
            found[question] = np.asarray(vector, dtype=np.float32)
            _questions.put(question, found[question], size=QUESTION_CACHE_SIZE)
    return found


def chunk_tallies_recompute(chunk_ids: Iterable[str]) -> tuple[dict[str, float], dict[str, bytes] | None]:
    """Recount the votes on these chunks, store their tallies and return their scores and
    question profiles (encoded; none for a chunk without counted votes). The profiles are None
    when the questions could not be embedded (a remote embedding service down): the scores still
    go out, the profiles stay as they were until a later recount. Call inside a transaction.

    The tally rows are locked (in chunk id order) before the votes are read, so two recounts of
    the same chunk run one after the other and the later one sees every committed vote.
    """
    ids = sorted({c for c in chunk_ids if c})
    if not ids:
        return {}, {}
    ChunkFeedback.objects.bulk_create([ChunkFeedback(chunk_id=c) for c in ids], ignore_conflicts=True)
    tallies = list(ChunkFeedback.objects.select_for_update().filter(chunk_id__in=ids).order_by("chunk_id"))
    votes = votes_touching(ids)
    counted = votes_counted(votes)
    document_of = {v.chunk_id: v.document_id for v in votes if v.document_id}
    try:
        asked: dict[str, np.ndarray] | None = question_vectors(v.question for mine in counted.values() for v in mine)
    except Exception:
        logger.warning("Could not embed the voters' questions; writing the scores alone", exc_info=True)
        asked = None
    now = timezone.now()
    profiles: dict[str, bytes] = {}
    for tally in tallies:
        mine = counted.get(tally.chunk_id, [])
        tally.up = sum(1 for v in mine if v.rating > 0)
        tally.down = sum(1 for v in mine if v.rating < 0)
        tally.score = feedback_score(mine, now=now)
        tally.document_id = document_of.get(tally.chunk_id, tally.document_id)
        tally.updated_at = now  # bulk_update does not apply auto_now
        if asked is not None:
            profile = QuestionProfile.from_votes(
                (vote_weight(v, now=now), asked[v.question]) for v in mine if v.question in asked)
            if profile is not None:
                profiles[tally.chunk_id] = profile.encode()
    ChunkFeedback.objects.bulk_update(tallies, ["up", "down", "score", "document_id", "updated_at"], batch_size=500)
    return {tally.chunk_id: tally.score for tally in tallies}, (profiles if asked is not None else None)


def document_tally_recompute(document_id: int) -> DocumentFeedback:
    """Recount the votes touching `document_id`. Call inside a transaction."""
    tally = _document_tally_locked(document_id)
    for field, value in document_tally_counts(document_id).items():
        setattr(tally, field, value if value is not None else getattr(tally, field))
    document = Document.objects.filter(pk=document_id).only("source_id", "title", "external_id").first()
    if document is not None:
        tally.source_id, tally.title = document.source_id, (document.title or document.external_id)[:500]
    tally.save()
    return tally


def _document_tally_locked(document_id: int) -> DocumentFeedback:
    DocumentFeedback.objects.bulk_create([DocumentFeedback(document_id=document_id)], ignore_conflicts=True)
    return DocumentFeedback.objects.select_for_update().get(document_id=document_id)


# --- Dirty sets and the flush (queued by feedback/tasks.py) -----------------------------------
@dataclass(frozen=True)
class FollowUp:
    """What a piece of work here leaves to be queued after its commit (feedback/tasks.py,
    followup_queue): chunks and documents to mark dirty for the next flush, documents whose
    re-fetch was claimed."""

    chunk_ids: tuple[str, ...] = ()
    document_ids: tuple[int, ...] = ()
    refetch_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class DirtyBatch:
    """The chunks and documents one flush recounts; `backlog` when more were left in the sets."""

    chunk_ids: list[str]
    document_ids: list[int]
    backlog: bool


def dirty_add(chunk_ids: list[str], document_ids: list[int]) -> None:
    """Add chunks and documents to the dirty sets (the caller makes sure a flush is coming)."""
    # A Redis error goes up as it is: the delivery task retries it (events/errors.py).
    r = redis_client()
    if chunk_ids:
        r.sadd(_key("dirty-chunks"), *chunk_ids)
    if document_ids:
        r.sadd(_key("dirty-documents"), *document_ids)


def flush_claim() -> bool:
    """Set the flush flag unless it is set; True if this caller must queue the flush. The flag
    stays set until the flush starts (dirty_take deletes it before it reads the sets), so anything
    marked dirty is either read by the pending flush or schedules the next one."""
    return bool(redis_client().set(_key("flush-scheduled"), "1", nx=True, ex=FLUSH_GUARD_SECONDS))


def _pop(name: str, limit: int) -> list[str]:
    popped = redis_client().spop(_key(name), limit) or []
    return [raw.decode() for raw in popped]


def dirty_take() -> DirtyBatch:
    """Clear the flush flag, then take one batch from the dirty sets."""
    r = redis_client()
    r.delete(_key("flush-scheduled"))
    chunk_ids = _pop("dirty-chunks", FLUSH_BATCH)
    document_ids = sorted(int(d) for d in _pop("dirty-documents", FLUSH_BATCH))
    backlog = bool(r.scard(_key("dirty-chunks")) or r.scard(_key("dirty-documents")))
    return DirtyBatch(chunk_ids=chunk_ids, document_ids=document_ids, backlog=backlog)


def feedback_scores_write(batch: DirtyBatch) -> int:
    """Recount the batch's chunks and documents and write the chunks' scores to the search index
    in one call; returns how many chunks were written. On an error the batch goes back to the
    dirty sets."""
    chunk_ids, document_ids = batch.chunk_ids, batch.document_ids
    if not chunk_ids and not document_ids:
        return 0
    r = redis_client()
    try:
        with transaction.atomic():
            scores, profiles = chunk_tallies_recompute(chunk_ids)
            for document_id in document_ids:
                document_tally_recompute(document_id)
        if scores:
            search_index().set_feedback(scores, profiles)
            search_index_refresh_soon()  # rewritten rows score with the rest in BM25 again
    except Exception:
        # Nothing is lost: the retry (or the next flush) recounts and writes them.
        if chunk_ids:
            r.sadd(_key("dirty-chunks"), *chunk_ids)
        if document_ids:
            r.sadd(_key("dirty-documents"), *document_ids)
        raise
    now = timezone.now()
    with transaction.atomic():
        # Locked in chunk id order, as recounts lock them, so the two never deadlock.
        written = list(ChunkFeedback.objects.select_for_update().filter(chunk_id__in=list(scores))
                       .order_by("chunk_id").only("chunk_id"))
        for tally in written:
            tally.indexed_score, tally.indexed_at = scores[tally.chunk_id], now
        ChunkFeedback.objects.bulk_update(written, ["indexed_score", "indexed_at"], batch_size=500)
    logger.info("Wrote the feedback scores of %d chunks to the search index", len(scores))
    return len(scores)


def chunks_voted() -> list[str]:
    """Every chunk with votes (the periodic refresh recounts them: votes decay with age)."""
    return list(ChunkFeedback.objects.filter(Q(up__gt=0) | Q(down__gt=0) | ~Q(score=0.0))
                .values_list("chunk_id", flat=True))


# --- The consumer's reaction to one vote ------------------------------------------------------
def feedback_apply(*, chunk_ids: list[str], message_id: int | None, document_id: int | None, reason: str) -> FollowUp:
    """Everything one vote sets off (see the module docstring); returns what the caller queues
    after commit. Safe to run twice."""
    documents = {int(document_id)} if document_id else set()
    if message_id and chunk_ids:
        documents |= set(Citation.objects.filter(message_id=message_id, chunk_id__in=chunk_ids)
                         .values_list("document_id", flat=True))
    refetch_ids = []
    with transaction.atomic():
        for document in sorted(documents):
            if reason == Feedback.Reason.OUTDATED:
                if document_refetch_request(document):
                    refetch_ids.append(document)
            elif reason == Feedback.Reason.INCOMPLETE:
                tally = document_tally_recompute(document)
                if tally.incomplete >= settings.FEEDBACK_INCOMPLETE_USERS:
                    document_rechunk_request(tally)
    return FollowUp(chunk_ids=tuple(chunk_ids), document_ids=tuple(documents), refetch_ids=tuple(refetch_ids))


def document_indexed_restore(document_id: int) -> FollowUp:
    """A new version of the document is in the index, written with no feedback scores: its voted
    chunks are to be recounted (outdated votes on the old text may no longer count) and written
    again."""
    ids = list(ChunkFeedback.objects.filter(document_id=document_id).values_list("chunk_id", flat=True))
    return FollowUp(chunk_ids=tuple(ids), document_ids=(document_id,)) if ids else FollowUp()


# --- outdated: re-fetch -----------------------------------------------------------------------
def document_refetch_request(document_id: int) -> bool:
    """Ask for a re-fetch of the document unless one was asked within the cool-down; True if
    asked (the caller queues the re-fetch after commit). Documents that cannot be re-fetched (not a
    url source) are recorded as such."""
    document = Document.objects.select_related("source").filter(pk=document_id).first()
    DocumentFeedback.objects.bulk_create([DocumentFeedback(document_id=document_id)], ignore_conflicts=True)
    tallies = DocumentFeedback.objects.filter(document_id=document_id)
    if document is None or refetch_url(document) is None:
        if document is None:
            detail = "Marked outdated, but the document was deleted."
        else:
            detail = (f"Marked outdated, but documents of {document.source.get_kind_display().lower()} sources "
                      "cannot be re-fetched: replace the document at its source.")
        logger.info("Document %s marked outdated: %s", document_id, detail)
        tallies.update(refetch_status=DocumentFeedback.Refetch.NOT_REFETCHABLE, refetch_detail=detail)
        return False
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.FEEDBACK_REFETCH_COOLDOWN_SECONDS)
    # A conditional UPDATE claims the re-fetch: a storm of `outdated` votes fetches once.
    claimed = tallies.filter(Q(refetch_requested_at__isnull=True) | Q(refetch_requested_at__lt=cutoff)).update(
        refetch_requested_at=now, refetch_status=DocumentFeedback.Refetch.REQUESTED, refetch_detail="")
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
        fetched = document_page_fetch(document, url)
    except RefetchFailed as error:
        logger.warning("Re-fetching document %s failed: %s", document_id, error)
        tallies.update(refetch_status=DocumentFeedback.Refetch.FAILED, refetch_detail=str(error),
                       refetched_at=timezone.now())
        return DocumentFeedback.Refetch.FAILED
    with transaction.atomic():
        if fetched.content is None:  # not modified (a 304, or the very bytes Freshet holds)
            changed = False
        else:
            changed = document_ingest(
                source=document.source, external_id=document.external_id, content=fetched.content,
                filename=fetched.filename, title=fetched.title, uri=document.uri, marker=fetched.marker or None,
                metadata=fetched.metadata or None).changed
        document.refresh_from_db(fields=["version"])
        now = timezone.now()
        if changed:
            status = DocumentFeedback.Refetch.CHANGED
            detail = f"New content from {url}: version {document.version}."
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
    """Re-chunk the document with chunks twice as long (at most the embedding model's window),
    once per document: its own chunking profile is set and it goes through the pipeline again. The
    request is also published as `freshet.reindex.requested`, for the event log and anyone
    who subscribes."""
    from ingestion.services import document_chunking_set

    document = Document.objects.select_related("source").filter(pk=tally.document_id).first()
    if document is None:
        return False
    claimed = DocumentFeedback.objects.filter(pk=tally.pk, rechunk_requested_at__isnull=True).update(
        rechunk_requested_at=timezone.now())
    if not claimed:
        return False
    size, overlap = document.chunking
    # Twice as long, up to what the embedding model reads (a longer chunk would be embedded by
    # its beginning only, and found by it).
    window = max_chunk_tokens(embedder())
    size, overlap = min(size * 2, window), min(overlap * 2, window // 4)
    event_publish(
        type="freshet.reindex.requested",
        subject=f"documents/{document.pk}",
        data={"document_id": document.pk, "source_id": document.source_id, "reason": "incomplete",
              "users": tally.incomplete, "chunk_size": size, "chunk_overlap": overlap},
    )
    rechunked = document_chunking_set(document=document, size=size, overlap=overlap)
    logger.info("Document %s: %d users found its passages incomplete; %s chunks of %d tokens",
                document.pk, tally.incomplete, "re-chunking it into" if rechunked else "it already has", size)
    return True
