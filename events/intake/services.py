"""Recording pushed events: what the HTTP intake and the broker consumer call once a request or
message is read and its source known.

Recording is the commit point: the events are rows of ReceivedEvent (idempotent by the push
source, the event's source and its id), in one transaction; after it, one
`freshet.events.received` in the event log asks for them to be applied. Its subscriber
(apply.py) makes the changes in the order they came, so an intake answers 202 in milliseconds
and a batch of a hundred costs one insert.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import transaction

from config.redis_client import redis_client
from events.intake.binding import Incoming
from events.intake.changes import change_for
from events.models import ReceivedEvent
from events.services import event_publish

RECEIVED = "freshet.events.received"


@dataclass(frozen=True)
class Recorded:
    accepted: int  # new events recorded
    duplicates: int  # events already recorded (or twice in the same batch): no-ops


def events_record(*, source, events: list[Incoming], via: str) -> Recorded:
    """Record `events` pushed to `source` (a push or queue Source). Every event is checked first
    (EventInvalid, TypeNotAccepted): one bad event refuses the whole lot and nothing is
    recorded. Events already recorded are counted as duplicates and change nothing."""
    as_documents = bool((source.config or {}).get("events_as_documents"))
    changes = []
    for index, event in enumerate(events):
        where = f"event {index}" if len(events) > 1 else ""
        changes.append((event, change_for(event, events_as_documents=as_documents, where=where)))

    keys: dict[tuple[str, str], tuple] = {}
    for event, change in changes:
        keys.setdefault((event.source, event.id), (event, change))
    duplicates = len(changes) - len(keys)
    if not keys:
        return Recorded(accepted=0, duplicates=duplicates)
    with transaction.atomic():
        existing = set(
            ReceivedEvent.objects.filter(source=source, ce_id__in={event_id for _, event_id in keys})
            .values_list("ce_source", "ce_id")
        )
        rows = [
            ReceivedEvent(
                source=source, ce_source=event.source, ce_id=event.id, type=event.type, via=via,
                attributes=event.attributes, action=change.action, external_id=change.external_id,
                title=change.title, uri=change.uri, filename=change.filename, content=change.content,
                metadata=change.metadata,
            )
            for key, (event, change) in keys.items() if key not in existing
        ]
        duplicates += len(keys) - len(rows)
        if rows:
            # A concurrent delivery of the same event meets the unique constraint: skipped, not an error.
            ReceivedEvent.objects.bulk_create(rows, ignore_conflicts=True)
            source_id, count = source.pk, len(rows)
            transaction.on_commit(lambda: apply_request(source_id=source_id, count=count))
    return Recorded(accepted=len(rows), duplicates=duplicates)


def apply_flag(source_id: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}events:apply-queued:{source_id}"


def apply_request(*, source_id: int, count: int) -> None:
    """After a commit: publish `freshet.events.received` for the source, unless one is queued and
    its apply has not started yet (a Redis flag the apply clears before it reads): it will take
    these events too. Under many small pushes that is one apply task per burst, not per request.
    The flag expires, and the sweep (tasks.received_events_sweep) takes what a lost task left."""
    try:
        first = redis_client().set(apply_flag(source_id), 1, nx=True, ex=30)
    except redis.RedisError:
        first = True  # no flag to go by: publish
    if first:
        event_publish(type=RECEIVED, subject=f"sources/{source_id}", data={"source_id": source_id, "count": count})
