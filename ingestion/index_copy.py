"""The index's copy of documents, made from the database: what reconciliation (`manage.py
reconcile --fix`) and rebuilds (`manage.py index_rebuild`) write. The database keeps every chunk's
text, so the index can always be made again from it; vectors are taken from the index when it
holds them for the same chunk, version and model, and encoded again otherwise. Feedback scores and
question profiles are carried over from what the index held.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ingestion.embedding import Embedder
from ingestion.models import Chunk, Document
from ingestion.search_index import ChunkRecord, DocumentChunks, SearchIndex


def documents_copied(documents: Iterable[Document], *, encoder: Embedder, held_from: SearchIndex | None,
                     reuse_vectors: bool) -> list[DocumentChunks]:
    """Each document at its current version as the index should hold it: its chunks of that
    version from the database (a document whose chunks are of another version is on its way
    through the pipeline and is left out), vectors from `held_from` when `reuse_vectors` and it
    holds the chunk at that version, else encoded by `encoder`."""
    documents = [d for d in documents if d.status == Document.Status.INDEXED]
    by_document: dict[int, list[Chunk]] = {}
    for chunk in Chunk.objects.filter(document__in=documents).order_by("document_id", "ordinal"):
        by_document.setdefault(chunk.document_id, []).append(chunk)
    current = [(d, by_document[d.pk]) for d in documents
               if by_document.get(d.pk) and all(c.version == d.version for c in by_document[d.pk])]
    held = held_from.get_chunks([c.id for _, chunks in current for c in chunks]) if held_from is not None else {}
    missing = [c for d, chunks in current for c in chunks
               if not (reuse_vectors and c.id in held and held[c.id].version == d.version)]
    encoded = dict(zip((c.id for c in missing), encoder.encode([c.text for c in missing]), strict=True)) \
        if missing else {}
    copied = []
    for document, chunks in current:
        source = document.source
        groups = tuple(source.group_names())
        records = []
        for chunk in chunks:
            old = held.get(chunk.id)
            vector = encoded[chunk.id] if chunk.id in encoded else np.asarray(old.vector)
            records.append(ChunkRecord(
                id=chunk.id, document_id=document.pk, source_id=source.pk, ordinal=chunk.ordinal,
                version=document.version, title=document.title, text=chunk.text, uri=document.uri,
                vector=[float(x) for x in vector], public=source.public, groups=groups,
                feedback=old.feedback if old else 0.0, feedback_profile=old.feedback_profile if old else b"",
            ))
        copied.append(DocumentChunks(document.pk, document.version, records))
    return copied
