"""Writes to sources and documents. Saving a document is what starts the pipeline: the model
signal publishes `freshet.document.changed` after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.db import transaction

from config.exceptions import ApplicationError
from ingestion.models import Document, Source
from ingestion.selectors import document_may_change, sources_visible_to


class DocumentChangeForbidden(ApplicationError):
    """The caller may see the document but not change it (selectors.document_may_change)."""

    status = 403


class DocumentSourceNotVisible(ApplicationError):
    """The source does not exist, or the caller may not see it (the same answer for both)."""

    status = 404


class DocumentSourceNotUploadable(ApplicationError):
    """People upload only into `upload` sources: a connector owns the documents of the others
    (its next sync would overwrite or prune what was uploaded beside it)."""

    status = 400


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
    user=None,
    marker: str | None = None,
    metadata: dict | None = None,
) -> IngestResult:
    """Create or update the document `external_id` of `source` with `content`, acting as `user`
    (None: the system, for connectors, re-fetches and evaluation, which may change any document).

    A new document records `user` as its uploader. `user` must be able to see `source`
    (DocumentSourceNotVisible) and, to replace an existing document, be allowed to change it
    (DocumentChangeForbidden, even when the content is the same); nothing is written then.
    Identical content, title and uri change nothing and start no work; anything else stores the
    bytes under a generated name, bumps the version and resets the status to pending. Replacing
    keeps the original uploader. `marker` and `metadata` (None: left as they are) are what the
    source says about the item (a connector's sync); storing them alone starts no work.
    """
    if user is not None and not sources_visible_to(user).filter(pk=source.pk).exists():
        raise DocumentSourceNotVisible(f"There is no source {source.pk}, or you may not see it.")
    if user is not None and source.kind != Source.Kind.UPLOAD:
        raise DocumentSourceNotUploadable(source_upload_refusal(source))
    content_hash = hashlib.sha256(content).hexdigest()
    document = (
        Document.objects.select_for_update().filter(source=source, external_id=external_id).first()
    )
    created = document is None
    if document is None:
        document = Document(source=source, external_id=external_id, version=0, uploaded_by=user)
    elif user is not None and not document_may_change(user=user, document=document):
        raise DocumentChangeForbidden(
            f"A document {external_id!r} of source {source.name!r} exists and was uploaded by someone else; "
            "only its uploader, the source's editors or staff may replace it. Upload it under another "
            "name or external_id."
        )
    elif (
        document.content_hash == content_hash
        and document.title == (title or document.title)
        and document.uri == (uri or document.uri)
        and document.status != Document.Status.FAILED
    ):
        document_source_note(document=document, marker=marker, metadata=metadata)
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
    if marker is not None:
        document.marker = marker[:512]
    if metadata is not None:
        document.metadata = metadata
    document.file.save("content", ContentFile(content), save=False)
    document.save()
    if old_file:
        storage = document.file.storage
        transaction.on_commit(lambda: storage.delete(old_file))
    return IngestResult(document=document, created=created, changed=True)


def document_source_note(*, document: Document, marker: str | None = None, metadata: dict | None = None) -> None:
    """Store what the source now says about an unchanged document (its change marker, metadata)
    without a save: no signal, so no `freshet.document.changed` and no pipeline work."""
    changes: dict = {}
    if marker is not None and marker[:512] != document.marker:
        changes["marker"] = marker[:512]
    if metadata is not None and metadata != document.metadata:
        changes["metadata"] = metadata
    if changes:
        Document.objects.filter(pk=document.pk).update(**changes)
        for field, value in changes.items():
            setattr(document, field, value)


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


def document_delete(*, document: Document, user=None) -> None:
    """Delete the document, acting as `user` (None: the system); the signal's event removes its
    chunks from the index. DocumentChangeForbidden if `user` may not change it."""
    if user is not None and not document_may_change(user=user, document=document):
        raise DocumentChangeForbidden(
            f"Document {document.pk} was uploaded by someone else; only its uploader, the editors of "
            "its source or staff may delete it."
        )
    document.delete()


def source_upload_refusal(source: Source) -> str:
    """Why nobody may upload into `source`, for a person; "" for an `upload` source."""
    if source.kind == Source.Kind.UPLOAD:
        return ""
    return (f"Source {source.name!r} is a {source.kind} source; its documents come from its connector. "
            "Upload into a source of kind 'upload'.")


def source_reindex(*, source: Source) -> int:
    """Run the whole pipeline again for every document of `source`; how many."""
    count = 0
    for document in source.documents.all().iterator():
        document_reindex(document=document)
        count += 1
    return count


def source_retry_failed(*, source: Source) -> int:
    """Send the failed documents of `source` through the pipeline again; how many."""
    count = 0
    for document in source.documents.filter(status=Document.Status.FAILED).iterator():
        document_reindex(document=document)
        count += 1
    return count


def source_delete(*, source: Source) -> None:
    source_id = source.pk
    source.delete()
    source_schedule_keep(source_id=source_id)


# --- Sync schedules (django-celery-beat) ----------------------------------------------------
# Each source with a schedule has one PeriodicTask, named after the source, that beat's
# DatabaseScheduler runs; it is kept in step here whenever a source is created, changed or
# deleted, and stays editable in the admin (Periodic tasks).


def source_schedule_name(source_id: int) -> str:
    return f"freshet-source-sync-{source_id}"


def source_schedule_keep(*, source_id: int) -> None:
    """Create, change or remove the PeriodicTask of source `source_id` to match its
    `schedule_minutes` (none for a deleted source, a kind with nothing to sync, or no schedule)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from ingestion.connectors.base import CONNECTORS, connector_for

    connector_for("upload")  # registers every kind
    source = Source.objects.filter(pk=source_id).first()
    name = source_schedule_name(source_id)
    syncs = source is not None and source.kind in CONNECTORS and CONNECTORS[source.kind].syncs
    if not syncs or not source.schedule_minutes:
        PeriodicTask.objects.filter(name=name).delete()
        return
    interval, _ = IntervalSchedule.objects.get_or_create(every=source.schedule_minutes,
                                                         period=IntervalSchedule.MINUTES)
    task, created = PeriodicTask.objects.get_or_create(name=name, defaults={
        "task": "ingestion.tasks.source_sync_scheduled", "interval": interval, "args": f"[{source_id}]",
        "queue": "sync", "description": f"Sync of source {source.name!r} (kept in step with the source).",
    })
    if not created and task.interval_id != interval.pk:
        task.interval = interval
        task.save(update_fields=["interval"])


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
    editor_groups: list[Group] | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    schedule_minutes: int | None = None,
    prune: bool = True,
) -> Source:
    source = Source.objects.create(
        name=name, kind=kind, config=config or {}, public=public, chunk_size=chunk_size,
        chunk_overlap=chunk_overlap, schedule_minutes=schedule_minutes, prune=prune,
    )
    if groups:
        source.groups.set(groups)
    if editor_groups:
        source.editor_groups.set(editor_groups)
    source_schedule_keep(source_id=source.pk)
    return source


SOURCE_UPDATABLE_FIELDS = ("name", "kind", "config", "public", "chunk_size", "chunk_overlap", "schedule_minutes",
                           "prune")


@transaction.atomic
def source_update(*, source: Source, groups: list[Group] | None = None,
                  editor_groups: list[Group] | None = None, **changes: object) -> Source:
    """Change the given fields of `source` (any of SOURCE_UPDATABLE_FIELDS) and, when `groups` or
    `editor_groups` is not None, replace those groups. Nothing is saved when nothing changed."""
    unknown = set(changes) - set(SOURCE_UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(f"source_update got fields it cannot change: {sorted(unknown)}")
    changed = [field for field, value in changes.items() if getattr(source, field) != value]
    for field in changed:
        setattr(source, field, changes[field])
    if changed:
        source.save(update_fields=changed)
    if {"kind", "schedule_minutes"} & set(changed):
        source_schedule_keep(source_id=source.pk)
    if groups is not None and {g.pk for g in groups} != set(source.groups.values_list("pk", flat=True)):
        source.groups.set(groups)
    # Editor groups are read at request time (selectors.document_may_change) and are not copied
    # into the index, so changing them publishes nothing.
    if editor_groups is not None and (
        {g.pk for g in editor_groups} != set(source.editor_groups.values_list("pk", flat=True))
    ):
        source.editor_groups.set(editor_groups)
    return source
