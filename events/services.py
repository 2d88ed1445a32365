"""Publishing: record the event, then route it to its subscribers once the transaction commits."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from events.envelope import SOURCE, cloudevent_new
from events.models import Event
from events.subscriptions import subscriptions_for

logger = logging.getLogger(__name__)


def event_publish(*, type: str, subject: str = "", data: dict[str, Any] | None = None,
                  source: str = SOURCE) -> Event:
    """Record a CloudEvent in the event log and, after commit, queue one delivery per subscriber.

    Called inside a transaction, a rollback drops both the record and the deliveries, so no
    ghost job ever runs for a change that did not happen.
    """
    envelope = cloudevent_new(type=type, subject=subject, data=data, source=source)
    event = Event.objects.create(
        id=envelope.get_id(),
        source=envelope.get_source(),
        type=envelope.get_type(),
        subject=subject,
        time=envelope.get_time(),
        data=envelope.get_data() or {},
    )
    transaction.on_commit(lambda: event_route(event_id=event.id, event_type=event.type, data=event.data))
    return event


def event_route(*, event_id: str, event_type: str, data: dict[str, Any] | None = None) -> None:
    """Queue one delivery per subscriber of `event_type` whose filter `data` passes, on the
    subscriber's queue and under that queue's time limits (PIPELINE_TIME_LIMITS)."""
    from events.tasks import event_deliver

    for subscription in subscriptions_for(event_type, data if data is not None else {}):
        soft, hard = settings.PIPELINE_TIME_LIMITS.get(subscription.queue, (None, None))
        event_deliver.apply_async(
            args=[event_id, subscription.handler], queue=subscription.queue,
            soft_time_limit=soft, time_limit=hard,
        )
