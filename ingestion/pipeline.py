"""The pipeline stages, each an event subscriber on its own queue (ingestion/subscriptions.py):

    document.changed -> parse -> document.parsed -> chunk -> document.chunked -> embed
    -> chunks.embedded -> index -> document.indexed        (or document.failed at any stage)

Every stage takes the document id and version from the event, re-reads the row and drops the
job quietly if the document is gone or has moved on to a newer version, so each is safe to run
twice and a late task never overwrites newer content. Status changes are conditional UPDATEs
(no model signal fires for them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from config.redis_client import redis_client
from events.errors import TransientError
from events.services import event_publish
from ingestion.chunking import chunks_split
from ingestion.embedding import embedder
from ingestion.models import Chunk, Document, Source
from ingestion.parsers import ParseError, parse
from ingestion.search_index import ChunkRecord, DocumentChunks, search_index
from ingestion.tasks import search_index_refresh_soon

logger = logging.getLogger(__name__)
T = TypeVar("T")

VECTORS_TTL_SECONDS = 24 * 3600
TRANSIENT = (TransientError, ConnectionError, TimeoutError, redis.RedisError,
             OperationalError, InterfaceError)


class StaleJob(Exception):
    """The document is gone or newer than this job: drop the job."""


def _data(event) -> dict[str, Any]:
    data = event.get_data()
    return data if isinstance(data, dict) else {}


def _current(document_id: int, version: int) -> Document:
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


def document_fail(document: Document, version: int, *, stage: str, reason: str) -> None:
    with transaction.atomic():
        updated = Document.objects.filter(pk=document.pk, version=version).update(
            status=Document.Status.FAILED, error=reason[:2000], updated_at=timezone.now()
        )
        if updated:
            _publish("freshet.document.failed", document, version, stage=stage, reason=reason[:2000])


def stage(name: str) -> Callable:
    """Wrap a stage handler: stale jobs are dropped, transient errors retried by the delivery
    task, and any other error fails the document with a reason instead of killing the worker."""

    def decorate(handler: Callable[[Document, int, dict], None]) -> Callable:
        @functools.wraps(handler)
        def run(event) -> None:
            data = _data(event)
            try:
                document_id, version = int(data["document_id"]), int(data["version"])
            except (KeyError, TypeError, ValueError):
                logger.error("Malformed %s event %s: %r", name, event.get_id(), data)
                return
            try:
                document = _current(document_id, version)
                handler(document, version, data)
            except StaleJob:
                logger.info("Dropping %s of document %s v%s: gone or superseded", name, document_id, version)
            except ParseError as error:
                document_fail(document, version, stage=name, reason=str(error))
            except TRANSIENT:
                raise
            except DatabaseError:
                raise
            except Exception as error:
                logger.exception("Stage %s failed for document %s v%s", name, document_id, version)
                document_fail(document, version, stage=name,
                              reason=f"Internal error while {name}: {type(error).__name__}: {error}")

        return run

    return decorate


@stage("parsing")
def document_parse(document: Document, version: int, data: dict) -> None:
    if document.indexed_fingerprint and document.indexed_fingerprint == document.fingerprint():
        # Same content, title, uri and chunking as what the index holds: no work to do.
        Document.objects.filter(pk=document.pk, version=version).update(status=Document.Status.INDEXED)
        _publish("freshet.document.unchanged", document, version)
        return
    claimed = Document.objects.filter(pk=document.pk, version=version).update(
        status=Document.Status.PROCESSING, error=""
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
    fields: dict[str, Any] = {"text": parsed.text, "media_type": parsed.media_type}
    if not document.title:
        fields["title"] = (parsed.title or document.filename or document.external_id)[:500]
    if not Document.objects.filter(pk=document.pk, version=version).update(**fields):
        raise StaleJob
    _publish("freshet.document.parsed", document, version, media_type=parsed.media_type,
             characters=len(parsed.text))


@stage("chunking")
def document_chunk(document: Document, version: int, data: dict) -> None:
    model = embedder()
    size, overlap = document.chunking
    pieces = chunks_split(document.text, embedder=model, size=size, overlap=overlap)
    if not pieces:
        raise ParseError("The document contains no text to index.")
    rows = [
        Chunk(id=Chunk.make_id(document.pk, p.ordinal), document=document, ordinal=p.ordinal,
              text=p.text, token_count=p.token_count, embedding_model=model.name, version=version)
        for p in pieces
    ]
    with transaction.atomic():
        if not Document.objects.select_for_update().filter(pk=document.pk, version=version).exists():
            raise StaleJob
        Chunk.objects.filter(document=document, ordinal__gte=len(rows)).delete()
        Chunk.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["id"],
            update_fields=["text", "token_count", "embedding_model", "version", "ordinal"],
        )
        transaction.on_commit(lambda: _pending_add("embed", document, version))
        _publish("freshet.document.chunked", document, version, chunks=len(rows))


def _chunks_of(document: Document, version: int) -> list[Chunk]:
    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    if not chunks or any(chunk.version != version for chunk in chunks):
        raise StaleJob  # a newer version re-chunked the document meanwhile
    return chunks


def _vectors_key(document_id: int, version: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}vectors:{document_id}:{version}"


def _pending_key(stage_name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:pending"


def _claim_key(stage_name: str, member: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:claim:{member}"


def _pending_add(stage_name: str, document: Document, version: int) -> None:
    redis_client().zadd(_pending_key(stage_name), {f"{document.pk}:{version}": time.time()})


BATCH_CLAIM_SECONDS = 120
INDEX_BATCH_CHUNKS = 512


@contextlib.contextmanager
def _batch(stage_name: str, document: Document, version: int, *, load: Callable[[Document, int], T],
           size: Callable[[T], int], budget: int) -> Iterator[list[tuple[Document, int, T]]]:
    """This task's document, and other documents waiting for the same stage, as one batch: one
    model call or one index write for many small documents is what keeps a busy pipeline close to
    the bare model's speed, while an idle one still handles a lone document at once.

    Documents waiting are members "id:version" of a Redis sorted set (`_pending_add`, by the stage
    before). Each is claimed with SET NX before it joins; a task whose document is claimed by
    another batch retries shortly (transient), and finds its work done. If a batch dies, its
    claims expire and every document's own task does its part: nothing is lost. `load` gives a
    document's input (StaleJob: leave it out), `size` its share of the `budget`.
    """
    r = redis_client()
    member = f"{document.pk}:{version}"
    if not r.set(_claim_key(stage_name, member), "1", nx=True, ex=BATCH_CLAIM_SECONDS):
        raise TransientError(f"document {member} is in another {stage_name} batch")
    claimed = [member]
    try:
        own = load(document, version)
        batch = [(document, version, own)]
        budget -= size(own)
        while budget > 0:
            popped = r.zpopmin(_pending_key(stage_name), count=4)
            if not popped:
                break
            for raw, _score in popped:
                other = raw.decode()
                if not r.set(_claim_key(stage_name, other), "1", nx=True, ex=BATCH_CLAIM_SECONDS):
                    continue
                claimed.append(other)
                other_id, other_version = (int(part) for part in other.split(":"))
                try:
                    other_document = _current(other_id, other_version)
                    loaded = load(other_document, other_version)
                except StaleJob:
                    continue
                batch.append((other_document, other_version, loaded))
                budget -= size(loaded)
        yield batch
    finally:
        r.delete(*(_claim_key(stage_name, m) for m in claimed))


@stage("embedding")
def document_embed(document: Document, version: int, data: dict) -> None:
    """Embed this document's chunks, in one model call with those of other documents waiting
    for the same stage (`_batch`)."""
    r = redis_client()
    r.zrem(_pending_key("embed"), f"{document.pk}:{version}")
    if r.exists(_vectors_key(document.pk, version)):
        return  # embedded in another task's batch
    if _indexed(document, version):
        return
    with _batch("embed", document, version, load=_chunks_of, size=len,
                budget=settings.EMBEDDING_BATCH_SIZE) as batch:
        model = embedder()
        try:
            vectors = model.encode([chunk.text for _, _, chunks in batch for chunk in chunks])
        except Exception:
            if len(batch) == 1:
                raise
            # Another document may be what broke the batch: this task answers for its own one
            # only, and the others' own tasks embed them (their claims are released after).
            logger.exception("Batch embedding failed; embedding document %s v%s alone", document.pk, version)
            batch = batch[:1]
            vectors = model.encode([chunk.text for chunk in batch[0][2]])
        # Vectors live in the search index only; between the embed and index stages they wait in
        # Redis (a claim check), so events stay small. If they expire, the index stage re-embeds.
        offset = 0
        for batch_document, batch_version, chunks in batch:
            own = vectors[offset:offset + len(chunks)]
            offset += len(chunks)
            key = _vectors_key(batch_document.pk, batch_version)
            r.set(key, own.astype(np.float32).tobytes(), ex=VECTORS_TTL_SECONDS)
            _pending_add("index", batch_document, batch_version)
            _publish("freshet.chunks.embedded", batch_document, batch_version, chunks=len(chunks),
                     model=model.name, dimension=int(own.shape[1]), vectors_key=key, batch=len(batch))


def _indexed(document: Document, version: int) -> bool:
    """Whether this version is indexed already (read now: the index stage marks a document
    indexed before it drops its vectors, so a task that finds no vectors asks this second)."""
    return Document.objects.filter(pk=document.pk, version=version, status=Document.Status.INDEXED).exists()


def _index_load(document: Document, version: int) -> tuple[list[Chunk], np.ndarray | None]:
    """A document's chunks and the vectors the embed stage left for them (None: gone)."""
    chunks = _chunks_of(document, version)
    raw = redis_client().get(_vectors_key(document.pk, version))
    if not raw or len(raw) % (4 * len(chunks)):
        return chunks, None
    return chunks, np.frombuffer(raw, dtype=np.float32).reshape(len(chunks), -1)


@stage("indexing")
def document_index(document: Document, version: int, data: dict) -> None:
    """Write this document's chunks into the search index, in one write with those of other
    documents waiting for the same stage (`_batch`), then mark each indexed."""
    redis_client().zrem(_pending_key("index"), f"{document.pk}:{version}")
    if document.status == Document.Status.INDEXED:
        return  # indexed in another task's batch (checked again below if its vectors are gone)
    with _batch("index", document, version, load=_index_load, size=lambda loaded: len(loaded[0]),
                budget=INDEX_BATCH_CHUNKS) as batch:
        written = []
        for batch_document, batch_version, (chunks, vectors) in batch:
            if vectors is None:
                if batch_document is not document:
                    continue  # its own task embeds it again
                if _indexed(document, version):
                    return
                logger.info("Vectors for document %s v%s missing; embedding again", document.pk, version)
                vectors = embedder().encode([chunk.text for chunk in chunks])
            written.append((batch_document, batch_version, _records(batch_document, batch_version, chunks, vectors)))
        index = search_index()
        index.ensure(dimension=len(written[0][2][0].vector))
        try:
            index.upsert_documents([DocumentChunks(d.pk, v, records) for d, v, records in written])
        except TRANSIENT:
            raise
        except Exception:
            if len(written) == 1:
                raise
            # As in the embed stage: this task answers for its own document only.
            logger.exception("Batch index write failed; writing document %s v%s alone", document.pk, version)
            written = [item for item in written if item[0] is document]
            index.upsert_documents([DocumentChunks(d.pk, v, records) for d, v, records in written])
        search_index_refresh_soon()
        with transaction.atomic():
            for batch_document, batch_version, records in written:
                updated = Document.objects.filter(pk=batch_document.pk, version=batch_version).update(
                    status=Document.Status.INDEXED, error="", chunk_count=len(records),
                    indexed_at=timezone.now(), indexed_fingerprint=batch_document.fingerprint(),
                )
                if updated:  # else a newer version is on its way, and its own write cleans up
                    # `replaced`: an earlier version had been indexed (answers may cite it, votes
                    # may be on it).
                    _publish("freshet.document.indexed", batch_document, batch_version, chunks=len(records),
                             replaced=batch_document.indexed_at is not None, batch=len(written))
        redis_client().delete(*(_vectors_key(d.pk, v) for d, v, _ in written))


def _records(document: Document, version: int, chunks: list[Chunk], vectors: np.ndarray) -> list[ChunkRecord]:
    source = document.source
    groups = tuple(source.group_names())
    return [
        ChunkRecord(
            id=chunk.id, document_id=document.pk, source_id=source.pk, ordinal=chunk.ordinal,
            version=version, title=document.title, text=chunk.text, uri=document.uri,
            vector=vector.tolist(), public=source.public, groups=groups,
        )
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


def document_unindex(event) -> None:
    data = _data(event)
    search_index().delete_document(int(data["document_id"]))
    search_index_refresh_soon()
    if data.get("file"):
        from django.core.files.storage import default_storage

        default_storage.delete(data["file"])


def source_unindex(event) -> None:
    search_index().delete_source(int(_data(event)["source_id"]))
    search_index_refresh_soon()


def source_sync_access(event) -> None:
    """A source's access or chunking changed: rewrite the access fields of its chunks, and send
    documents whose chunking no longer matches back through the pipeline."""
    source = Source.objects.filter(pk=int(_data(event)["source_id"])).first()
    if source is None:
        return
    search_index().set_source_access(source_id=source.pk, public=source.public, groups=source.group_names())
    search_index_refresh_soon()
    documents = source.documents.select_related("source").filter(status=Document.Status.INDEXED)
    for document in documents.iterator():
        if document.indexed_fingerprint != document.fingerprint():
            from ingestion.services import document_reindex

            document_reindex(document=document)
