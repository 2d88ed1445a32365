"""The pipeline's stages: what each does to one document version (ingestion/handlers.py turns
the events of ingestion/subscriptions.py into these calls).

    parse -> chunk -> embed (batched) -> index (batched, drained)

Each stage re-reads the row and drops the job quietly (StaleJob) if the document is gone or has
moved on to a newer version, so each is safe to run twice and a late task never overwrites newer
content. Status changes are conditional UPDATEs (no model signal fires for them), and each one
stamps `updated_at`, which is how the sweep (recovery.py) tells a stuck document from a busy one.
The embed and index stages work on batches of documents (batching.py): a document ready for one
is a member "id:version" of the stage's claim set. Nothing here queues a task: handlers and
tasks (ingestion/handlers.py, ingestion/tasks.py) do, so this module imports neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events.errors import SoftTimeLimitExceeded
from events.handling import GaveUp
from events.services import event_publish
from ingestion.chunking import chunks_split
from ingestion.embedding import embedder, index_model_check
from ingestion.models import Chunk, Document
from ingestion.parsers import ParseError, parse
from ingestion.pipeline import handoff
from ingestion.pipeline.batching import BatchStage, ClaimSet, Skip, batch_drain, batch_run
from ingestion.search_index import ChunkRecord, DocumentChunks, search_index

logger = logging.getLogger(__name__)

INDEX_BATCH_CHUNKS = 512
# While documents stream in, a drain waits this long so that the embed batches of that moment
# make one index write (each LanceDB write is a commit, and later compaction work).
INDEX_GATHER_SECONDS = 0.25


class StaleJob(Skip):
    """The document is gone or newer than this job: drop the job."""


def document_current(document_id: int, version: int) -> Document:
    """The document at `version`; StaleJob if it is gone or has moved on."""
    document = Document.objects.select_related("source").filter(pk=document_id).first()
    if document is None or document.version != version:
        raise StaleJob
    return document


def _publish(type: str, document: Document, version: int, **extra: Any) -> None:
    event_publish(
        type=type,
        subject=f"documents/{document.pk}",
        data={"document_id": document.pk, "source_id": document.source_id, "version": version, **extra},
    )


# --- failures ---------------------------------------------------------------------------------
def failure_reason(stage: str, error: BaseException) -> str:
    """What a person reads in the document's `error`: the parser's own words, or what happened
    and what will happen next."""
    if isinstance(error, ParseError):
        return str(error)
    if isinstance(error, GaveUp):
        return (f"Gave up while {stage}: {error}. It is tried again when the document changes, or with "
                "Reindex.")
    if isinstance(error, SoftTimeLimitExceeded):
        return f"Took longer than the time limit while {stage} (PIPELINE_TIME_LIMITS)."
    return f"Internal error while {stage}: {type(error).__name__}: {error}"


def document_fail(document_id: int, version: int, *, stage: str, error: BaseException) -> None:
    """Mark the document version failed with the reason and publish `freshet.document.failed`;
    nothing if it moved on meanwhile."""
    reason = failure_reason(stage, error)[:2000]
    with transaction.atomic():
        source_id = (Document.objects.filter(pk=document_id, version=version)
                     .values_list("source_id", flat=True).first())
        updated = source_id is not None and Document.objects.filter(pk=document_id, version=version).update(
            status=Document.Status.FAILED, error=reason, updated_at=timezone.now())
        if updated:
            event_publish(type="freshet.document.failed", subject=f"documents/{document_id}",
                          data={"document_id": document_id, "source_id": source_id, "version": version,
                                "stage": stage, "reason": reason})


# --- parse, chunk -----------------------------------------------------------------------------
def document_parse(document: Document, version: int) -> None:
    if document.indexed_fingerprint and document.indexed_fingerprint == document.fingerprint():
        # Same content, title, uri and chunking as what the index holds: no work to do.
        Document.objects.filter(pk=document.pk, version=version).update(status=Document.Status.INDEXED)
        _publish("freshet.document.unchanged", document, version)
        return
    claimed = Document.objects.filter(pk=document.pk, version=version).update(
        status=Document.Status.PROCESSING, error="", updated_at=timezone.now()
    )
    if not claimed:
        raise StaleJob
    if not document.file:
        raise ParseError("The document has no stored content.")
    try:
        with document.file.open("rb") as handle:
            content = handle.read()
    except FileNotFoundError:
        raise ParseError("The stored content of the document is missing.") from None
    parsed = parse(content, document.filename or document.external_id)
    fields: dict[str, Any] = {"text": parsed.text, "media_type": parsed.media_type, "updated_at": timezone.now()}
    if not document.title:
        fields["title"] = (parsed.title or document.filename or document.external_id)[:500]
    if not Document.objects.filter(pk=document.pk, version=version).update(**fields):
        raise StaleJob
    _publish("freshet.document.parsed", document, version, media_type=parsed.media_type,
             characters=len(parsed.text))


def document_chunk(document: Document, version: int) -> None:
    model = embedder()
    size, overlap = document.chunking
    pieces = chunks_split(document.text, embedder=model, size=size, overlap=overlap)
    if not pieces:
        raise ParseError("The document contains no text to index.")
    rows = [
        Chunk(id=Chunk.make_id(document.pk, p.ordinal), document=document, ordinal=p.ordinal,
              text=p.text, token_count=p.token_count, embedding_model=model.identity, version=version)
        for p in pieces
    ]
    with transaction.atomic():
        # Locks the row (as SELECT FOR UPDATE would) and stamps the progress.
        if not Document.objects.filter(pk=document.pk, version=version).update(updated_at=timezone.now()):
            raise StaleJob
        Chunk.objects.filter(document=document, ordinal__gte=len(rows)).delete()
        Chunk.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["id"],
            update_fields=["text", "token_count", "embedding_model", "version", "ordinal"],
        )
        member = member_of(document.pk, version)
        transaction.on_commit(lambda: EMBED.claims.add([member]))
        _publish("freshet.document.chunked", document, version, chunks=len(rows))


# --- embed, index (batches) -----------------------------------------------------------------
def member_of(document_id: int, version: int) -> str:
    """A document version as a member of a batch stage's claim set."""
    return f"{document_id}:{version}"


def _member_ids(member: str) -> tuple[int, int]:
    document_id, version = member.split(":")
    return int(document_id), int(version)


def _chunks_of(document: Document, version: int) -> list[Chunk]:
    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    if not chunks or any(chunk.version != version for chunk in chunks):
        raise StaleJob  # a newer version re-chunked the document meanwhile
    return chunks


def _embed_load(member: str) -> tuple[Document, list[Chunk]]:
    document = document_current(*_member_ids(member))
    return document, _chunks_of(document, document.version)


def _embed_work(batch: list[tuple[str, tuple[Document, list[Chunk]]]]) -> None:
    model = embedder()
    index_model_check()  # vectors of another model than the index's would be compared with them
    vectors = model.encode([chunk.text for _, (_, chunks) in batch for chunk in chunks])
    offset = 0
    for member, (document, chunks) in batch:
        own = vectors[offset:offset + len(chunks)]
        offset += len(chunks)
        handoff.vectors_put(document.pk, document.version, own)
        INDEX.claims.add([member])
        _publish("freshet.chunks.embedded", document, document.version, chunks=len(chunks),
                 model=model.identity, dimension=int(own.shape[1]))
    # One ask per batch, declared in ingestion/subscriptions.py like every other step.
    event_publish(type="freshet.index.drain_requested", subject="stages/index",
                  data={"documents": [_member_ids(member)[0] for member, _ in batch]})


def _embedded(member: str) -> bool:
    # Its vectors wait for the index stage, or (the index stage marks a document indexed before
    # it drops its vectors) it is indexed.
    return handoff.vectors_waiting(*_member_ids(member)) or _indexed(member)


def _index_load(member: str) -> tuple[Document, list[Chunk], np.ndarray]:
    """A document's chunks and their vectors: those the embed stage left, or embedded again if
    they expired."""
    document = document_current(*_member_ids(member))
    chunks = _chunks_of(document, document.version)
    vectors = handoff.vectors_get(document.pk, document.version, rows=len(chunks))
    if vectors is None:
        logger.info("Vectors for document %s v%s missing; embedding again", document.pk, document.version)
        vectors = embedder().encode([chunk.text for chunk in chunks])
    return document, chunks, vectors


def _index_work(batch: list[tuple[str, tuple[Document, list[Chunk], np.ndarray]]]) -> None:
    written = [(document, _records(document, chunks, vectors)) for _, (document, chunks, vectors) in batch]
    index_model_check()
    search_index().upsert_documents([DocumentChunks(d.pk, d.version, records) for d, records in written])
    index_model_check(record=True)  # a new index records the model of its first vectors (once it exists)
    with transaction.atomic():
        for document, records in written:
            now = timezone.now()
            updated = Document.objects.filter(pk=document.pk, version=document.version).update(
                status=Document.Status.INDEXED, error="", chunk_count=len(records),
                indexed_at=now, indexed_fingerprint=document.fingerprint(), updated_at=now,
            )
            if updated:  # else a newer version is on its way, and its own write cleans up
                # `replaced`: an earlier version had been indexed (answers may cite it, votes
                # may be on it).
                _publish("freshet.document.indexed", document, document.version, chunks=len(records),
                         replaced=document.indexed_at is not None, batch=len(written))
    handoff.vectors_drop([(document.pk, document.version) for document, _ in written])


def _records(document: Document, chunks: list[Chunk], vectors: np.ndarray) -> list[ChunkRecord]:
    source = document.source
    groups = tuple(source.group_names())
    return [
        ChunkRecord(
            id=chunk.id, document_id=document.pk, source_id=source.pk, ordinal=chunk.ordinal,
            version=document.version, title=document.title, text=chunk.text, uri=document.uri,
            vector=vector.tolist(), public=source.public, groups=groups,
        )
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


def _indexed(member: str) -> bool:
    document_id, version = _member_ids(member)
    return Document.objects.filter(pk=document_id, version=version, status=Document.Status.INDEXED).exists()


def _failing(stage: str):
    def fail(member: str, error: BaseException) -> None:
        if not isinstance(error, ParseError):
            logger.error("Stage %s failed for %s", stage, member, exc_info=error)
        document_fail(*_member_ids(member), stage=stage, error=error)

    return fail


EMBED = BatchStage(
    claims=ClaimSet("embed"), load=_embed_load, size=lambda loaded: len(loaded[1]),
    budget=lambda: settings.EMBEDDING_BATCH_SIZE, work=_embed_work, done=_embedded, fail=_failing("embedding"),
    share=True,
)
INDEX = BatchStage(
    claims=ClaimSet("index"), load=_index_load, size=lambda loaded: len(loaded[1]),
    budget=lambda: INDEX_BATCH_CHUNKS, work=_index_work, done=_indexed, fail=_failing("indexing"),
)
BATCH_STAGES = {spec.claims.name: spec for spec in (EMBED, INDEX)}


def document_embed(document: Document, version: int) -> None:
    """Embed this document's chunks in one model call with those of other pending documents
    (nothing if another batch holds it or did it). The document is the one its handler read."""
    batch_run(EMBED, member_of(document.pk, version), own_load=lambda: (document, _chunks_of(document, version)))


def index_gather_seconds() -> float:
    """How long a drain of the index stage should wait before it starts: INDEX_GATHER_SECONDS
    while documents stream in (the last drain ended less than that ago), so the embed batches of
    that moment make one write; 0 for a lone document."""
    return INDEX_GATHER_SECONDS if INDEX.claims.drained_since() < INDEX_GATHER_SECONDS else 0.0


def stage_drain(stage_name: str, *, after_batch: Callable[[], None] | None = None,
                seconds: float | None = None) -> bool:
    """Run the stage's pending documents in batches (batching.batch_drain) for at most `seconds`;
    `after_batch` runs after each batch that took documents. True if documents are left waiting
    (the time ran out) and another drain should take them."""
    spec = BATCH_STAGES[stage_name]
    started = time.monotonic()
    batch_drain(spec, after_batch=after_batch, seconds=seconds)
    # Left waiting because another drainer holds the stage is that drainer's to take.
    ran_out = seconds is not None and time.monotonic() - started >= seconds
    return ran_out and bool(spec.claims.pending_count())
