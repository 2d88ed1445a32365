"""Publishing: record the event, then route it to its subscribers once the transaction commits."""

from __future__ import annotations

import logging
from collections.abc import Callable
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
    transaction.on_commit(lambda: event_committed(event))
    return event


# Observers hear of every published event once its transaction commits, in the publishing
# process (the dashboard's live feed, the metrics): a new observer is one registration in an app's
# ready(), never an edit of a producer. They must be quick and must not block.
_observers: list[Callable[[Event], None]] = []


def event_observer_add(observer: Callable[[Event], None]) -> None:
    """Call `observer(event)` after the commit of every event published from now on (once)."""
    if observer not in _observers:
        _observers.append(observer)


def event_committed(event: Event) -> None:
    """Route a committed event to its subscribers, then tell the observers."""
    try:
        event_route(event_id=event.id, event_type=event.type, data=event.data)
    finally:
        for observer in _observers:
            try:
                observer(event)
            except Exception:  # an observer's bug must never cost a delivery or a commit
                logger.exception("Event observer %r failed on %s", observer, event.id)


def event_route(*, event_id: str, event_type: str, data: dict[str, Any] | None = None) -> None:
    """Queue one delivery per subscriber of `event_type` whose filter `data` passes, on the
    subscriber's queue and under that queue's time limits (PIPELINE_TIME_LIMITS)."""
    from events.tasks import event_deliver

    for subscription in subscriptions_for(event_type, data if data is not None else {}):
        try:
            admitted = subscription.admits(event_type)
        except Exception:  # noqa: BLE001
            # The gate could not be asked (the database just went away): the transaction that
            # published the event has committed, so raising here would make its producer retry
            # work already done. Queue the delivery; its handler decides once it can.
            logger.warning("Gate of %s failed on %s; delivering anyway", subscription.handler, event_type,
                           exc_info=True)
            admitted = True
        if not admitted:
            continue
        soft, hard = settings.PIPELINE_TIME_LIMITS.get(subscription.queue, (None, None))
        event_deliver.apply_async(
            args=[event_id, subscription.handler], queue=subscription.queue,
            soft_time_limit=soft, time_limit=hard,
        )
