"""Reconciliation: the database's chunks against the index's, per source (`manage.py reconcile`).

For each document the pipeline has finished (indexed), the index must hold exactly its chunks of
its current version. A difference is one of:

- missing: a chunk of the database that the index lacks (deleted behind Freshet's back, a write
  lost);
- stale: a chunk the index holds at another version than the document's;
- surplus: a chunk the index holds that the database does not: an ordinal past the document's
  last, or an orphan (its document, or its whole source, is gone).

Documents still on their way through the pipeline (pending, processing) or failed are the
pipeline's business and are left alone. `--fix` writes each differing document again from the
database (index_copy) and deletes the orphans.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ingestion.embedding import embedder
from ingestion.index_copy import documents_copied
from ingestion.models import Chunk, Document, Source
from ingestion.search_index import SearchIndex, search_index

logger = logging.getLogger(__name__)

FIX_BATCH = 100  # documents written per index request when fixing


@dataclass
class SourceDifferences:
    """What differs between the database and the index for one source (or for one that is gone)."""

    source_id: int
    name: str
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    surplus: list[str] = field(default_factory=list)
    rewrite: set[int] = field(default_factory=set)  # documents to write again from the database
    orphans: set[int] = field(default_factory=set)  # documents to delete from the index
    source_gone: bool = False

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stale or self.surplus)

    def summary(self) -> str:
        if self.clean:
            return f"{self.name}: in step"
        parts = [f"{len(ids)} {what} ({', '.join(sorted(ids)[:5])}{', ...' if len(ids) > 5 else ''})"
                 for what, ids in (("missing", self.missing), ("stale", self.stale), ("surplus", self.surplus)) if ids]
        return f"{self.name}: " + "; ".join(parts)


def source_differences(source: Source, *, index: SearchIndex | None = None) -> SourceDifferences:
    """Compare one source's chunks in the database with those the index holds."""
    index = index or search_index()
    found = SourceDifferences(source.pk, source.name)
    statuses = dict(source.documents.values_list("pk", "status"))
    versions = dict(source.documents.filter(status=Document.Status.INDEXED).values_list("pk", "version"))
    expected: dict[str, tuple[int, int]] = {}
    for chunk_id, document_id, version in Chunk.objects.filter(document_id__in=list(versions)).values_list(
            "id", "document_id", "version"):
        if version == versions[document_id]:
            expected[chunk_id] = (document_id, version)
        else:
            versions.pop(document_id, None)  # re-chunked meanwhile: on its way through the pipeline
    held = index.chunks_listed(source_id=source.pk)
    for chunk_id, chunk in held.items():
        if chunk.document_id not in statuses:
            found.surplus.append(chunk_id)
            found.orphans.add(chunk.document_id)
        elif chunk.document_id not in versions:
            continue  # pending, processing or failed: the pipeline answers for it
        elif chunk_id not in expected:
            found.surplus.append(chunk_id)
            found.rewrite.add(chunk.document_id)
        elif chunk.version != versions[chunk.document_id]:
            found.stale.append(chunk_id)
            found.rewrite.add(chunk.document_id)
    for chunk_id, (document_id, _) in expected.items():
        if document_id in versions and chunk_id not in held:
            found.missing.append(chunk_id)
            found.rewrite.add(document_id)
    return found


def index_differences(*, source: Source | None = None, index: SearchIndex | None = None) -> list[SourceDifferences]:
    """The differences of `source`, or of every source and of the sources the index holds chunks
    of that the database no longer has."""
    index = index or search_index()
    if source is not None:
        return [source_differences(source, index=index)]
    found = [source_differences(s, index=index) for s in Source.objects.order_by("name")]
    known = {s.source_id for s in found}
    gone: dict[int, SourceDifferences] = {}
    for chunk_id, chunk in index.chunks_listed().items():
        if chunk.source_id not in known:
            entry = gone.setdefault(chunk.source_id, SourceDifferences(
                chunk.source_id, f"(deleted source {chunk.source_id})", source_gone=True))
            entry.surplus.append(chunk_id)
    return found + [gone[key] for key in sorted(gone)]


def differences_fix(differences: list[SourceDifferences], *, index: SearchIndex | None = None) -> int:
    """Repair what `index_differences` found: orphans deleted, differing documents written again
    from the database; how many documents (and gone sources) were repaired."""
    index = index or search_index()
    repaired = 0
    for entry in differences:
        if entry.source_gone:
            index.delete_source(entry.source_id)
            repaired += 1
            continue
        for document_id in sorted(entry.orphans):
            index.delete_document(document_id)
            repaired += 1
        rewrite = sorted(entry.rewrite)
        for start in range(0, len(rewrite), FIX_BATCH):
            documents = list(Document.objects.select_related("source").filter(pk__in=rewrite[start:start + FIX_BATCH]))
            held = index.chunks_listed(source_id=entry.source_id)
            # A chunk held at a newer version than the database's would win the version guard.
            for document in documents:
                if any(c.document_id == document.pk and c.version > document.version for c in held.values()):
                    index.delete_document(document.pk)
            copied = documents_copied(documents, encoder=embedder(), held_from=index, reuse_vectors=True)
            index.upsert_documents(copied)
            repaired += len(copied)
    if repaired:
        index.refresh()
    return repaired
