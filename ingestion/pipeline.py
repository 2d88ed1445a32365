"""The pipeline stages, each an event subscriber on its own queue (ingestion/subscriptions.py):

    document.changed -> parse -> document.parsed -> chunk -> document.chunked -> embed
    -> chunks.embedded -> index -> document.indexed        (or document.failed at any stage)

Every stage takes the document id and version from the event, re-reads the row and drops the
job quietly if the document is gone or has moved on to a newer version, so each is safe to run
twice and a late task never overwrites newer content. Status changes are conditional UPDATEs
(no model signal fires for them). The embed and index stages work in batches of documents (see
"batches" below).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from config.redis_client import redis_client
from events.services import event_publish
from events.tasks import RETRYABLE
from ingestion.chunking import chunks_split
from ingestion.embedding import embedder
from ingestion.models import Chunk, Document, Source
from ingestion.parsers import ParseError, parse
from ingestion.search_index import ChunkRecord, DocumentChunks, search_index
from ingestion.tasks import search_index_refresh_soon

logger = logging.getLogger(__name__)

VECTORS_TTL_SECONDS = 24 * 3600


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


def _fail(name: str, document: Document, version: int, error: Exception) -> None:
    """Fail the document for an error of stage `name`, with a reason a person can act on."""
    if isinstance(error, StaleJob):
        logger.info("Dropping %s of document %s v%s: gone or superseded", name, document.pk, version)
    elif isinstance(error, ParseError):
        document_fail(document, version, stage=name, reason=str(error))
    else:
        logger.error("Stage %s failed for document %s v%s", name, document.pk, version, exc_info=error)
        document_fail(document, version, stage=name,
                      reason=f"Internal error while {name}: {type(error).__name__}: {error}")


@contextlib.contextmanager
def _failing(name: str, document: Document, version: int) -> Iterator[None]:
    """Run one document's work: a transient error goes up (the delivery task retries it), any
    other fails the document (`_fail`) instead of killing the worker."""
    try:
        yield
    except (*RETRYABLE, DatabaseError):
        raise
    except Exception as error:
        _fail(name, document, version, error)


def stage(name: str) -> Callable:
    """Wrap a stage handler taking (document, version, event data) into an event handler."""

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
            except StaleJob:
                logger.info("Dropping %s of document %s v%s: gone or superseded", name, document_id, version)
                return
            with _failing(name, document, version):
                handler(document, version, data)

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


# --- batches ----------------------------------------------------------------------------------
# The embed and index stages work on many documents at once: one model call or one index write
# for many small documents is what keeps a busy pipeline close to the bare model's speed, while
# an idle one still handles a lone document at once.
#
# A document ready for such a stage is a member "id:version" of the stage's pending set (a Redis
# sorted set, added by the stage before). A task claims documents (SET NX, held by its batch)
# and moves them from pending to in flight; once their results are out they leave in flight.
# A document's own task that finds it claimed by another batch does nothing: that batch answers
# for it. If a batch's process dies, its claims expire (BATCH_CLAIM_SECONDS) and the periodic
# sweep (`batches_recover`) puts its documents back to pending and drains them: a crash delays
# the work, never drops it.

# Longer than any healthy batch runs (64 chunks to embed, 512 to write), or a live batch's
# documents would be taken up again by the sweep (harmless, the work is idempotent, but wasted).
BATCH_CLAIM_SECONDS = 300
DRAIN_FLAG_SECONDS = 30  # a lost drain task holds back the next one at most this long
INDEX_BATCH_CHUNKS = 512


@dataclass(frozen=True)
class BatchStage:
    name: str  # also the queue
    stage: str  # as in failure reasons
    done: Callable[[Document, int], bool]  # whether another batch did it already
    load: Callable[[Document, int], Any]  # the document's input; StaleJob: leave it out
    size: Callable[[Any], int]  # its share of the budget
    budget: Callable[[], int]
    work: Callable[[list[tuple[Document, int, Any]]], None]
    # Take at most half of what waits, so other processes get the rest instead of idling (for
    # work that uses a core each); else all of it up to the budget.
    share: bool = False


def _member(document: Document, version: int) -> str:
    return f"{document.pk}:{version}"


def _pending_key(stage_name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:pending"


def _inflight_key(stage_name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:inflight"


def _claim_key(stage_name: str, member: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:claim:{member}"


def _pending_add(stage_name: str, document: Document, version: int) -> None:
    redis_client().zadd(_pending_key(stage_name), {_member(document, version): time.time()})


def _claim(stage_name: str, members: list[str], holder: str) -> list[str]:
    """Claim `members` for the batch `holder` (one round trip); those won move to in flight."""
    if not members:
        return []
    r = redis_client()
    pipe = r.pipeline(transaction=False)
    for member in members:
        pipe.set(_claim_key(stage_name, member), holder, nx=True, ex=BATCH_CLAIM_SECONDS)
    won = [member for member, ok in zip(members, pipe.execute(), strict=True) if ok]
    if won:
        pipe.zadd(_inflight_key(stage_name), dict.fromkeys(won, time.time()))
        pipe.zrem(_pending_key(stage_name), *won)
        pipe.execute()
    return won


def _settle(stage_name: str, members: list[str], *, done: list[str]) -> None:
    """Release the claims of a batch: `done` members leave the stage, the others go back to
    pending for the next batch."""
    if not members:
        return
    r = redis_client()
    pipe = r.pipeline(transaction=False)
    pipe.delete(*(_claim_key(stage_name, member) for member in members))
    pipe.zrem(_inflight_key(stage_name), *members)
    finished = set(done)
    again = [member for member in members if member not in finished]
    if again:
        pipe.zadd(_pending_key(stage_name), dict.fromkeys(again, time.time()))
    pipe.execute()


def _batch_run(spec: BatchStage, document: Document | None = None, version: int = 0) -> int:
    """Run one batch of `spec`'s stage: this task's document (unless None, a drain), then other
    pending documents while the budget lasts; how many documents it claimed. A transient error
    sends what was claimed back to pending (and goes up, for the task to retry); anything else
    is the failure of a document."""
    holder = _member(document, version) if document is not None else f"drain:{uuid.uuid4().hex}"
    claimed: list[str] = []
    batch: list[tuple[Document, int, Any]] = []
    budget = spec.budget()
    again = False
    try:
        if document is not None:
            claimed = _claim(spec.name, [holder], holder)
            if not claimed:
                logger.debug("Document %s is in another %s batch, which answers for it", holder, spec.name)
                return 0
            if spec.done(document, version):  # by a batch that has ended
                return 1
            loaded = spec.load(document, version)  # errors: the stage's, for this document
            batch.append((document, version, loaded))
            budget -= spec.size(loaded)
        r = redis_client()
        waiting = r.zcard(_pending_key(spec.name))
        room = (waiting + 1) // 2 if spec.share else waiting
        skipped = 0  # pending, but claimed by another batch this very moment
        while budget > 0 and room > 0:
            candidates = [raw.decode() for raw in
                          r.zrange(_pending_key(spec.name), skipped, skipped + min(room, 8) - 1)]
            if not candidates:
                break
            won = _claim(spec.name, candidates, holder)
            claimed += won
            room -= len(won)
            skipped += len(candidates) - len(won)
            for member in won:
                other_id, other_version = (int(part) for part in member.split(":"))
                try:
                    other = _current(other_id, other_version)
                except StaleJob:
                    continue
                with _failing(spec.stage, other, other_version):
                    loaded = spec.load(other, other_version)
                    batch.append((other, other_version, loaded))
                    budget -= spec.size(loaded)
        if batch:
            _batch_work(spec, batch)
        return len(claimed)
    except (*RETRYABLE, DatabaseError):
        again = True
        raise
    finally:
        # Claimed and not done for a transient reason: back to pending. Else each document
        # claimed is through this stage: done, stale, or failed with its reason.
        _settle(spec.name, claimed, done=[] if again else claimed)


def _batch_work(spec: BatchStage, batch: list[tuple[Document, int, Any]]) -> None:
    """The stage's work on the batch; if it fails, on each document alone, so a document that
    breaks a batch fails alone and the others go on."""
    try:
        spec.work(batch)
        return
    except (*RETRYABLE, DatabaseError):
        raise
    except Exception as error:
        if len(batch) == 1:
            _fail(spec.stage, batch[0][0], batch[0][1], error)
            return
        logger.exception("A %s batch of %d documents failed; doing each alone", spec.name, len(batch))
    for item in batch:
        with _failing(spec.stage, item[0], item[1]):
            spec.work([item])


def _embed_work(batch: list[tuple[Document, int, list[Chunk]]]) -> None:
    model = embedder()
    vectors = model.encode([chunk.text for _, _, chunks in batch for chunk in chunks])
    # Vectors live in the search index only; between the embed and index stages they wait in
    # Redis (a claim check), so events stay small. If they expire, the index stage re-embeds.
    r = redis_client()
    offset = 0
    for document, version, chunks in batch:
        own = vectors[offset:offset + len(chunks)]
        offset += len(chunks)
        key = _vectors_key(document.pk, version)
        r.set(key, own.astype(np.float32).tobytes(), ex=VECTORS_TTL_SECONDS)
        _pending_add("index", document, version)
        _publish("freshet.chunks.embedded", document, version, chunks=len(chunks),
                 model=model.name, dimension=int(own.shape[1]), vectors_key=key, batch=len(batch),
                 batch_first=document is batch[0][0])


def _index_load(document: Document, version: int) -> tuple[list[Chunk], np.ndarray]:
    """A document's chunks and their vectors: those the embed stage left, or embedded again if
    they expired."""
    chunks = _chunks_of(document, version)
    raw = redis_client().get(_vectors_key(document.pk, version))
    if raw and not len(raw) % (4 * len(chunks)):
        return chunks, np.frombuffer(raw, dtype=np.float32).reshape(len(chunks), -1)
    logger.info("Vectors for document %s v%s missing; embedding again", document.pk, version)
    return chunks, embedder().encode([chunk.text for chunk in chunks])


def _index_work(batch: list[tuple[Document, int, tuple[list[Chunk], np.ndarray]]]) -> None:
    written = [(document, version, _records(document, version, chunks, vectors))
               for document, version, (chunks, vectors) in batch]
    index = search_index()
    index.ensure(dimension=len(written[0][2][0].vector))
    index.upsert_documents([DocumentChunks(d.pk, v, records) for d, v, records in written])
    search_index_refresh_soon()
    with transaction.atomic():
        for document, version, records in written:
            updated = Document.objects.filter(pk=document.pk, version=version).update(
                status=Document.Status.INDEXED, error="", chunk_count=len(records),
                indexed_at=timezone.now(), indexed_fingerprint=document.fingerprint(),
            )
            if updated:  # else a newer version is on its way, and its own write cleans up
                # `replaced`: an earlier version had been indexed (answers may cite it, votes
                # may be on it).
                _publish("freshet.document.indexed", document, version, chunks=len(records),
                         replaced=document.indexed_at is not None, batch=len(written))
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


def _indexed(document: Document, version: int) -> bool:
    return Document.objects.filter(pk=document.pk, version=version, status=Document.Status.INDEXED).exists()


def _embedded(document: Document, version: int) -> bool:
    # Its vectors wait for the index stage, or (the index stage marks a document indexed before
    # it drops its vectors) it is indexed.
    return bool(redis_client().exists(_vectors_key(document.pk, version))) or _indexed(document, version)


BATCH_STAGES = {
    spec.name: spec for spec in (
        BatchStage("embed", "embedding", done=_embedded, load=_chunks_of, size=len,
                   budget=lambda: settings.EMBEDDING_BATCH_SIZE, work=_embed_work, share=True),
        BatchStage("index", "indexing", done=_indexed, load=_index_load, size=lambda loaded: len(loaded[0]),
                   budget=lambda: INDEX_BATCH_CHUNKS, work=_index_work),
    )
}


@stage("embedding")
def document_embed(document: Document, version: int, data: dict) -> None:
    """Embed this document's chunks, in one model call with those of other pending documents
    (`_batch_run` does nothing if another batch holds it or did it)."""
    _batch_run(BATCH_STAGES["embed"], document, version)


INDEX_GATHER_SECONDS = 0.25


def document_index(event) -> None:
    """The index stage. It hears the first `chunks.embedded` of each embed batch only (see
    ingestion/subscriptions.py): every document embedded waits in the stage's pending set, and
    this task has it drained, a batch (one index write) at a time, each document marked indexed.
    While documents stream in (the last drain ended less than INDEX_GATHER_SECONDS ago), the
    drain waits that long, gathering what the embed batches of that moment produce into one
    write: each LanceDB write is a commit, and later compaction work. A lone document goes at
    once."""
    drained_at = float(redis_client().get(_drained_at_key("index")) or 0.0)
    busy = time.time() - drained_at < INDEX_GATHER_SECONDS
    drain_soon("index", countdown=INDEX_GATHER_SECONDS if busy else 0.0)


def _drained_at_key(stage_name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:drained-at"


def _drain_flag(stage_name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:drain-scheduled"


def drain_soon(stage_name: str, *, countdown: float = 0.0) -> None:
    """Have the stage's pending documents drained `countdown` seconds from now, once however
    many ask meanwhile (the drain clears the flag before it looks, so nothing asked for after
    it looked is missed)."""
    from ingestion.tasks import pipeline_batch_drain

    if redis_client().set(_drain_flag(stage_name), "1", nx=True, ex=DRAIN_FLAG_SECONDS):
        pipeline_batch_drain.apply_async(args=[stage_name], queue=stage_name, countdown=countdown)


def _drainer_key(stage_name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{stage_name}:drainer"


def batch_drain(stage_name: str) -> int:
    """Run batches of the stage's pending documents until none is left; how many it claimed.

    One drainer at a time per stage: a task that finds another draining leaves its documents to
    it, so while one batch is written the next ones gather, and a busy pipeline makes few large
    writes instead of many small ones. The drainer looks again after it lets go, so a document
    that arrived meanwhile is never left without one.
    """
    spec = BATCH_STAGES[stage_name]
    r = redis_client()
    r.delete(_drain_flag(stage_name))
    key, me = _drainer_key(stage_name), uuid.uuid4().hex
    handled = 0
    while r.zcard(_pending_key(stage_name)) and r.set(key, me, nx=True, ex=BATCH_CLAIM_SECONDS):
        taken = True
        try:
            while taken and r.zcard(_pending_key(stage_name)):
                # Nothing taken: what waits is being claimed by another batch this very moment
                # (which answers for it).
                taken = _batch_run(spec)
                handled += taken
                r.set(key, me, xx=True, ex=BATCH_CLAIM_SECONDS)
        finally:
            if r.get(key) == me.encode():
                r.delete(key)
        if not taken:
            break
    if handled:
        r.set(_drained_at_key(stage_name), f"{time.time():.3f}", ex=60)
    return handled


def batches_recover(*, older_than: float = BATCH_CLAIM_SECONDS) -> dict[str, int]:
    """Put documents whose batch died (in flight, claim expired) back to pending, and report the
    stages with documents to drain: those, and any pending longer than `older_than` seconds
    (their own tasks are gone: a batch that failed for a transient reason put them back)."""
    r = redis_client()
    stale: dict[str, int] = {}
    now = time.time()
    for name in BATCH_STAGES:
        inflight = [raw.decode() for raw in r.zrangebyscore(_inflight_key(name), "-inf", now - BATCH_CLAIM_SECONDS)]
        holders = r.mget([_claim_key(name, member) for member in inflight]) if inflight else []
        orphans = [member for member, holder in zip(inflight, holders, strict=True) if holder is None]
        if orphans:
            logger.warning("Recovering %d documents of a dead %s batch", len(orphans), name)
            _settle(name, orphans, done=[])
        waiting = len(orphans) + r.zcount(_pending_key(name), "-inf", now - older_than)
        if waiting:
            stale[name] = waiting
    return stale


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
