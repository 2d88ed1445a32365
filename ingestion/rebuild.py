"""Rebuilds without downtime (`manage.py index_rebuild [--model NAME]`).

1. A new generation of the index is filled from the database's chunks (index_copy), while the
   current one keeps serving every search and taking every write. Vectors are copied from the
   current generation when the model stays; with another model every chunk is encoded again.
2. Catch-up passes copy again what changed while the previous pass ran (documents indexed,
   re-indexed or deleted since it began), until a pass finds little left.
3. The switch (SearchIndex.generation_switch: an alias swap on Elasticsearch, a pointer file
   replaced atomically on LanceDB) makes the new generation the one every process reads and
   writes, recorded as built with the model.
4. A last catch-up after the switch (and a short grace, so the writes that were on their way to
   the old generation have landed and been recorded) copies what the old generation took in the
   meantime; then the old generation is dropped.

Searches never see an empty or half-built index: until the switch they read the old generation,
after it the new one, which by then holds every document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from ingestion.embedding import Embedder, embedder
from ingestion.index_copy import documents_copied
from ingestion.models import Chunk, Document
from ingestion.search_index import SearchIndex, search_index

logger = logging.getLogger(__name__)

COPY_BATCH = 200  # documents per pass step (one read of their chunks, one index write)
CATCH_UP_PASSES = 5
CATCH_UP_DONE = 20  # a pass that copies fewer documents than this is the last before the switch
# Timestamps are compared with this much slack: a write stamps `updated_at` before it commits.
CLOCK_SLACK = timedelta(seconds=2)


@dataclass
class RebuildReport:
    generation: int
    model: str
    reembedded: bool
    documents: int
    caught_up: int


def rebuild_encoder(model: str | None) -> Embedder:
    """The settings' encoder, or one for another model (a Hub id or a local path)."""
    current = embedder()
    if not model or model == current.name:
        return current
    return Embedder(model, device=settings.EMBEDDING_DEVICE, batch_size=settings.EMBEDDING_BATCH_SIZE,
                    forward_batch=settings.EMBEDDING_FORWARD_BATCH, backend=settings.EMBEDDING_BACKEND)


def _copy(target: SearchIndex, documents: list[Document], *, encoder: Embedder, old: SearchIndex,
          reuse: bool) -> int:
    copied = documents_copied(documents, encoder=encoder, held_from=old, reuse_vectors=reuse)
    if copied:
        target.upsert_documents(copied)
    return len(copied)


def _copy_since(target: SearchIndex, since: datetime | None, *, encoder: Embedder, old: SearchIndex,
                reuse: bool, progress: Callable[[str], None]) -> int:
    """Copy every indexed document (changed since `since`, when given) into `target`."""
    documents = Document.objects.select_related("source").filter(status=Document.Status.INDEXED).order_by("pk")
    if since is not None:
        documents = documents.filter(updated_at__gte=since - CLOCK_SLACK)
    copied, last = 0, 0
    while True:
        batch = list(documents.filter(pk__gt=last)[:COPY_BATCH])
        if not batch:
            return copied
        copied += _copy(target, batch, encoder=encoder, old=old, reuse=reuse)
        last = batch[-1].pk
        if since is None:
            progress(f"copied {copied} documents")


def _gone_remove(target: SearchIndex) -> int:
    """Delete from `target` the documents the database no longer has, or no longer has indexed
    at that version (deleted, or failed on a newer version, while the copy ran)."""
    held: dict[int, int] = {}
    for chunk in target.chunks_listed().values():
        held[chunk.document_id] = max(held.get(chunk.document_id, 0), chunk.version)
    present = set(Document.objects.filter(pk__in=list(held)).values_list("pk", flat=True))
    gone = sorted(set(held) - present)
    for document_id in gone:
        target.delete_document(document_id)
    return len(gone)


def index_rebuild(*, model: str | None = None, grace_seconds: float = 2.0,
                  progress: Callable[[str], None] = logger.info) -> RebuildReport:
    """Build a new generation of the search index from the database and switch to it (see the
    module docstring); with `model`, one encoded by that embedding model."""
    index = search_index()
    encoder = rebuild_encoder(model)
    built_with = index.index_model() or embedder().identity
    reuse = encoder.identity == built_with
    progress(f"rebuilding generation {(index.generation() or 1) + 1} with {encoder.name}"
             f" ({'vectors copied' if reuse else 'every chunk encoded again'})")
    building = index.generation_begin()
    try:
        mark = timezone.now()
        documents = _copy_since(building, None, encoder=encoder, old=index, reuse=reuse, progress=progress)
        caught_up = 0
        for _ in range(CATCH_UP_PASSES):
            began, since, mark = timezone.now(), mark, timezone.now()
            copied = _copy_since(building, since, encoder=encoder, old=index, reuse=reuse, progress=progress)
            caught_up += copied
            progress(f"caught up {copied} documents changed since the previous pass")
            if copied < CATCH_UP_DONE and timezone.now() - began < timedelta(seconds=5):
                break
        _gone_remove(building)
        building.refresh()
    except BaseException:
        building.drop()
        raise
    # From here on every process reads and writes the new generation. After the grace (writes on
    # their way to the old one have landed and been recorded), what the old one took in between is
    # copied over from the database; then the old one goes.
    index.generation_switch(building, model=encoder.identity, grace_seconds=grace_seconds)
    old_taken = _copy_since(index, mark, encoder=encoder, old=index, reuse=True, progress=progress)
    _gone_remove(index)
    index.refresh()
    if not reuse:
        Chunk.objects.exclude(embedding_model=encoder.identity).update(embedding_model=encoder.identity)
    report = RebuildReport(generation=index.generation() or 1, model=encoder.identity, reembedded=not reuse,
                           documents=documents, caught_up=caught_up + old_taken)
    progress(f"generation {report.generation} serving: {documents} documents, {report.caught_up} caught up")
    return report
