"""The ingestion app's event handlers, the targets of ingestion/subscriptions.py: thin adapters
from an event to a pipeline stage (ingestion/pipeline/stages.py) or an index upkeep."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.files.storage import default_storage

from events.handling import EventData, data_int, event_handler
from ingestion import tasks
from ingestion.models import Document, Source
from ingestion.parsers import ParseError
from ingestion.pipeline import stages
from ingestion.search_index import search_index
from ingestion.services import document_reindex

logger = logging.getLogger(__name__)


def stage(name: str, work: Callable[[Document, int], None]) -> Callable:
    """The event handler of a stage `work(document, version)`: it takes the document id and
    version from the event, drops the job if the document is gone or moved on, and fails the
    document with the reason when the stage fails (at once for a permanent error, after the last
    try for a transient one)."""

    def failed(data: EventData, error: BaseException) -> None:
        document_id, version = data_int(data, "document_id"), data_int(data, "version")
        if document_id is not None and version is not None:
            stages.document_fail(document_id, version, stage=name, error=error)

    def handle(data: EventData) -> None:
        document_id, version = data_int(data, "document_id"), data_int(data, "version")
        if document_id is None or version is None:
            logger.error("Malformed %s event: %r", name, data)
            return
        try:
            work(stages.document_current(document_id, version), version)
        except stages.StaleJob:
            logger.info("Dropping %s of document %s v%s: gone or superseded", name, document_id, version)

    handle.__name__ = handle.__qualname__ = work.__name__
    return event_handler(handle, failed=failed, expected=(ParseError,))


document_parse = stage("parsing", stages.document_parse)
document_chunk = stage("chunking", stages.document_chunk)
document_embed = stage("embedding", stages.document_embed)


@event_handler
def index_drain_schedule(data: EventData) -> None:
    """An embed batch left documents for the index stage: have them written."""
    tasks.drain_soon("index", countdown=stages.index_gather_seconds())


@event_handler
def document_unindex(data: EventData) -> None:
    document_id = data_int(data, "document_id")
    if document_id is None:
        return
    search_index().delete_document(document_id)
    tasks.search_index_refresh_soon()
    if data.get("file"):
        default_storage.delete(str(data["file"]))


@event_handler
def source_unindex(data: EventData) -> None:
    source_id = data_int(data, "source_id")
    if source_id is not None:
        search_index().delete_source(source_id)
        tasks.search_index_refresh_soon()


@event_handler
def source_sync_access(data: EventData) -> None:
    """A source's access or chunking changed: rewrite the access fields of its chunks, and send
    documents whose chunking no longer matches back through the pipeline."""
    source = Source.objects.filter(pk=data_int(data, "source_id")).first()
    if source is None:
        return
    search_index().set_source_access(source_id=source.pk, public=source.public, groups=source.group_names())
    tasks.search_index_refresh_soon()
    documents = source.documents.select_related("source").filter(status=Document.Status.INDEXED)
    for document in documents.iterator():
        if document.indexed_fingerprint != document.fingerprint():
            document_reindex(document=document)
