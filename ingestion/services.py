"""Writes to sources and documents. Saving a document is what starts the pipeline: the model
signal publishes `freshet.document.changed` after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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


def document_delete(*, document: Document) -> None:
    """Delete the document; the signal's event removes its chunks from the index."""
    document.delete()


def source_delete(*, source: Source) -> None:
    source.delete()
