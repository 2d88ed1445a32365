"""Writes to sources and documents. Saving a document is what starts the pipeline: the model
signal publishes `freshet.document.changed` after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.db import transaction

from ingestion.models import Document, Source


@dataclass(frozen=True)
class IngestResult:
    document: Document
    created: bool
    changed: bool


def source_get_or_create(*, name: str, kind: str = Source.Kind.UPLOAD, public: bool = True) -> Source:
    source, _ = Source.objects.get_or_create(name=name, defaults={"kind": kind, "public": public})
    return source


@transaction.atomic
def document_ingest(
    *,
    source: Source,
    external_id: str,
    content: bytes,
    filename: str = "",
    title: str = "",
    uri: str = "",
) -> IngestResult:
    """Create or update the document `external_id` of `source` with `content`.

    Identical content, title and uri change nothing and start no work; anything else stores the
    bytes under a generated name, bumps the version and resets the status to pending.
    """
    content_hash = hashlib.sha256(content).hexdigest()
    document = (
        Document.objects.select_for_update().filter(source=source, external_id=external_id).first()
    )
    created = document is None
    if document is None:
        document = Document(source=source, external_id=external_id, version=0)
    elif (
        document.content_hash == content_hash
        and document.title == (title or document.title)
        and document.uri == (uri or document.uri)
        and document.status != Document.Status.FAILED
    ):
        return IngestResult(document=document, created=False, changed=False)

    old_file = document.file.name if document.file else ""
    document.title = title or document.title
    document.uri = uri or document.uri
    document.filename = (filename or document.filename)[:255]
    document.content_hash = content_hash
    document.size = len(content)
    document.version += 1
    document.status = Document.Status.PENDING
    document.error = ""
    document.file.save("content", ContentFile(content), save=False)
    document.save()
    if old_file:
        storage = document.file.storage
        transaction.on_commit(lambda: storage.delete(old_file))
    return IngestResult(document=document, created=created, changed=True)


@transaction.atomic
def document_reindex(*, document: Document) -> Document:
    """Run the whole pipeline again for `document`, even if its content did not change."""
    Document.objects.filter(pk=document.pk).update(indexed_fingerprint="")
    document.refresh_from_db()
    document.version += 1
    document.status = Document.Status.PENDING
    document.error = ""
    document.save()
    return document


@transaction.atomic
def document_chunking_set(*, document: Document, size: int | None, overlap: int | None) -> bool:
    """Give one document its own chunking profile (None: back to its source's) and send it
    through the pipeline again if that changes its chunks; True if it does."""
    document = Document.objects.select_for_update().select_related("source").get(pk=document.pk)
    before = document.chunking
    document.chunk_size, document.chunk_overlap = size, overlap
    Document.objects.filter(pk=document.pk).update(chunk_size=size, chunk_overlap=overlap)
    if document.chunking == before:
        return False
    document_reindex(document=document)
    return True


def document_delete(*, document: Document) -> None:
    """Delete the document; the signal's event removes its chunks from the index."""
    document.delete()


def source_delete(*, source: Source) -> None:
    source.delete()


# --- Sources through the REST API -----------------------------------------------------------
# Saving a source publishes `freshet.source.changed` (signal); its subscriber rewrites the
# access fields of the source's chunks and re-chunks documents whose chunking changed.


@transaction.atomic
def source_create(
    *,
    name: str,
    kind: str = Source.Kind.UPLOAD,
    config: dict | None = None,
    public: bool = True,
    groups: list[Group] | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    schedule_minutes: int | None = None,
) -> Source:
    source = Source.objects.create(
        name=name, kind=kind, config=config or {}, public=public, chunk_size=chunk_size,
        chunk_overlap=chunk_overlap, schedule_minutes=schedule_minutes,
    )
    if groups:
        source.groups.set(groups)
    return source


SOURCE_UPDATABLE_FIELDS = ("name", "kind", "config", "public", "chunk_size", "chunk_overlap", "schedule_minutes")


@transaction.atomic
def source_update(*, source: Source, groups: list[Group] | None = None, **changes: object) -> Source:
    """Change the given fields of `source` (any of SOURCE_UPDATABLE_FIELDS) and, when `groups` is
    not None, replace its groups. Nothing is saved when nothing changed."""
    unknown = set(changes) - set(SOURCE_UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(f"source_update got fields it cannot change: {sorted(unknown)}")
    changed = [field for field, value in changes.items() if getattr(source, field) != value]
    for field in changed:
        setattr(source, field, changes[field])
    if changed:
        source.save(update_fields=changed)
    if groups is not None and {g.pk for g in groups} != set(source.groups.values_list("pk", flat=True)):
        source.groups.set(groups)
    return source
