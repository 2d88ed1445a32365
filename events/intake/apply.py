"""The subscriber of `freshet.events.received`: a source's recorded events become document
changes, in the order they came, through ingestion.services (acting as the system).

One source's events are applied by one task at a time (a lock on its Source row), so an upsert
and the delete after it never swap; a task that finds nothing left (another took it) is a no-op.
Each event is its own savepoint: one that fails (a broken PDF is not one of them: that fails
its document later, in the pipeline) is marked failed with its reason and the rest go on.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.redis_client import redis_client
from events.errors import RETRYABLE
from events.handling import data_int, event_handler
from events.intake.services import apply_flag
from events.models import ReceivedEvent

logger = logging.getLogger(__name__)


@event_handler
def received_apply(data: dict) -> None:
    source_id = data_int(data, "source_id")
    if source_id is not None:
        received_events_apply(source_id=source_id)


def received_events_apply(*, source_id: int) -> int:
    """Apply the pending events of the source; the number applied or failed."""
    from ingestion.models import Source

    try:  # cleared before reading: an event recorded from now on asks for an apply of its own
        redis_client().delete(apply_flag(source_id))
    except redis.RedisError:
        pass
    done = 0
    while True:
        with transaction.atomic():
            source = Source.objects.select_for_update().filter(pk=source_id).first()
            if source is None:
                return done
            pending = list(
                ReceivedEvent.objects.filter(source_id=source_id, status=ReceivedEvent.Status.PENDING)
                .order_by("id")[: settings.EVENTS_APPLY_BATCH]
            )
            _apply_batch(source, pending)
            done += len(pending)
        if len(pending) < settings.EVENTS_APPLY_BATCH:
            return done


def _apply_batch(source, pending: list[ReceivedEvent]) -> None:
    """Apply `pending` in order, inside the caller's transaction. On SQLite that transaction
    holds the one write lock the intake also needs, so the batch asks little of it: one query
    for which of its deletes have a document at all, and one update marking what was applied."""
    from ingestion.models import Document

    deleted = {received.external_id for received in pending if received.action == ReceivedEvent.Action.DELETE}
    present = set(
        Document.objects.filter(source=source, external_id__in=deleted).values_list("external_id", flat=True)
    ) if deleted else set()
    upserted: set[str] = set()
    applied: list[int] = []
    for received in pending:
        if received.action == ReceivedEvent.Action.UPSERT:
            upserted.add(received.external_id)
        elif received.external_id not in present and received.external_id not in upserted:
            applied.append(received.pk)  # deleting what is not there is done already
            continue
        if _apply_one(source, received):
            applied.append(received.pk)
    if applied:
        # The content is in the document now; the row stays as the event's idempotency key.
        ReceivedEvent.objects.filter(pk__in=applied).update(
            status=ReceivedEvent.Status.APPLIED, content=b"", applied_at=timezone.now())


def _apply_one(source, received: ReceivedEvent) -> bool:
    """Make the change of one event, in a savepoint; False (the event marked failed, with its
    reason) if it cannot be made."""
    from ingestion.models import Document
    from ingestion.services import document_delete, document_ingest

    try:
        with transaction.atomic():
            if received.action == ReceivedEvent.Action.UPSERT:
                document_ingest(
                    source=source, external_id=received.external_id, content=bytes(received.content),
                    filename=received.filename, title=received.title, uri=received.uri, user=None,
                    metadata=received.metadata,
                )
            else:
                document = Document.objects.filter(source=source, external_id=received.external_id).first()
                if document is not None:
                    document_delete(document=document, user=None)
    except RETRYABLE:
        raise  # the whole batch is tried again by the delivery task
    except Exception as error:
        logger.exception("Pushed event %s of source %s failed", received.pk, source.pk)
        ReceivedEvent.objects.filter(pk=received.pk).update(
            status=ReceivedEvent.Status.FAILED, error=f"{type(error).__name__}: {error}"[:2000],
            applied_at=timezone.now(),
        )
        return False
    return True
