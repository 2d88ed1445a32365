"""Writes of sinks and deliveries: a sink created or changed, one delivery attempt recorded with
the retry it schedules, a test event, the sweep of retries that are due.

Retries: exponential from SINK_RETRY_BASE_SECONDS (x4 an attempt) capped at
SINK_RETRY_MAX_DELAY_SECONDS, with jitter (each delay between half and all of its step), for
SINK_RETRY_ATTEMPTS attempts in all: seconds, then minutes, then hours. A 429 or 503 with
Retry-After waits what it asks (up to the cap). A 410 disables the sink. Short waits are Celery
countdowns; long ones are left to the sweep (a countdown past the broker's visibility timeout
would be delivered twice).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from events.envelope import cloudevent_from_record, cloudevent_new
from events.models import Delivery, Event, EventSink
from events.sinks.sending import Sent, http_send, queue_send
from events.webhooks import secret_new

logger = logging.getLogger(__name__)

SINK_FIELDS = ("name", "kind", "url", "types", "secret", "mode", "exchange", "routing_key", "enabled")


def sink_create(*, name: str, url: str, types: list[str], kind: str = EventSink.Kind.HTTP, secret: str = "",
                mode: str = EventSink.Mode.STRUCTURED, exchange: str = "", routing_key: str = "",
                enabled: bool = True) -> EventSink:
    """A new sink; its Standard Webhooks key generated when `secret` is empty."""
    return EventSink.objects.create(
        name=name, kind=kind, url=url, types=list(types), secret=secret or secret_new(), mode=mode,
        exchange=exchange, routing_key=routing_key, enabled=enabled,
    )


def sink_update(*, sink: EventSink, **changes: object) -> EventSink:
    """Change the given fields (any of SINK_FIELDS); enabling a sink clears why it was disabled."""
    unknown = set(changes) - set(SINK_FIELDS)
    if unknown:
        raise TypeError(f"sink_update got fields it cannot change: {sorted(unknown)}")
    for field, value in changes.items():
        setattr(sink, field, value)
    if changes.get("enabled"):
        sink.disabled_reason = ""
    sink.save()
    return sink


def retry_delay(attempt: int) -> float:
    """Seconds before the attempt after failed attempt number `attempt` (1 for the first)."""
    step = min(settings.SINK_RETRY_BASE_SECONDS * 4 ** (attempt - 1), settings.SINK_RETRY_MAX_DELAY_SECONDS)
    return step / 2 + random.uniform(0, step / 2)


def delivery_attempt(*, sink_id: int, event_id: str, attempt: int) -> Delivery | None:
    """Make attempt number `attempt` of the event to the sink, record it, and schedule the next
    one if it failed and may be retried. None when there is nothing to do: the sink or event is
    gone, the sink disabled, or this attempt was made already (a task delivered twice)."""
    sink = EventSink.objects.filter(pk=sink_id).first()
    record = Event.objects.filter(pk=event_id).first()
    if sink is None or record is None or not sink.enabled:
        return None
    try:
        delivery, created = Delivery.objects.get_or_create(sink=sink, event=record, attempt=attempt)
    except IntegrityError:  # the sink or event was deleted under us
        return None
    if not created:
        return None
    envelope = cloudevent_from_record(record)
    sent: Sent = queue_send(sink, envelope) if sink.kind == EventSink.Kind.QUEUE else http_send(sink, envelope)
    delivery.status_code, delivery.duration_ms, delivery.error = sent.status_code, sent.duration_ms, sent.error
    if sent.ok:
        delivery.status = Delivery.Status.SUCCEEDED
    elif sent.gone:
        delivery.status = Delivery.Status.FAILED
        EventSink.objects.filter(pk=sink.pk).update(
            enabled=False, disabled_reason=f"The receiver answered 410 Gone at {timezone.now():%Y-%m-%d %H:%M} UTC; "
                                           "enable the sink again once it takes events.")
    elif sent.permanent or attempt >= settings.SINK_RETRY_ATTEMPTS:
        delivery.status = Delivery.Status.FAILED
        if not sent.permanent:
            delivery.error += f" Gave up after {attempt} attempts."
    else:
        delay = retry_delay(attempt)
        if sent.retry_after is not None:
            delay = min(sent.retry_after, settings.SINK_RETRY_MAX_DELAY_SECONDS)
        delivery.status = Delivery.Status.RETRYING
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        delivery.retry_queued = delay <= settings.SINK_COUNTDOWN_MAX_SECONDS
        delivery.save()
        if delivery.retry_queued:
            _queue(sink.pk, record.pk, attempt + 1, countdown=delay)
        return delivery
    delivery.save()
    return delivery


def _queue(sink_id: int, event_id: str, attempt: int, *, countdown: float = 0) -> None:
    from events.sinks.tasks import sink_deliver

    soft, hard = settings.PIPELINE_TIME_LIMITS.get("sinks", (None, None))
    transaction.on_commit(lambda: sink_deliver.apply_async(
        args=[sink_id, event_id, attempt], queue="sinks", countdown=countdown or None,
        soft_time_limit=soft, time_limit=hard))


def sink_test_send(*, sink: EventSink) -> Event:
    """Record a `freshet.sink.test` event and queue its delivery to this sink alone (not
    published: no other sink or subscriber hears of it)."""
    envelope = cloudevent_new(type="freshet.sink.test", subject=f"sinks/{sink.pk}",
                              data={"sink": sink.name, "message": "A test event from Freshet."})
    with transaction.atomic():
        event = Event.objects.create(id=envelope.get_id(), source=envelope.get_source(), type=envelope.get_type(),
                                     subject=envelope.get_subject() or "", time=envelope.get_time(),
                                     data=envelope.get_data())
        _queue(sink.pk, event.pk, 1)
    return event


def deliveries_due_queue() -> int:
    """Queue the retries whose time has come and that no countdown carries, and take up
    attempts left "sending" by a worker that died; the number queued."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SINK_TIMEOUT * 4 + 60)
    Delivery.objects.filter(status=Delivery.Status.SENDING, created_at__lt=stale).update(
        status=Delivery.Status.RETRYING, error="The worker stopped during this attempt.", next_attempt_at=now,
        retry_queued=False)
    queued = 0
    due = Delivery.objects.filter(status=Delivery.Status.RETRYING, retry_queued=False, next_attempt_at__lte=now)
    for delivery in due.values("pk", "sink_id", "event_id", "attempt")[:1000]:
        # Claimed with a conditional update: two sweeps never queue the same retry.
        if Delivery.objects.filter(pk=delivery["pk"], retry_queued=False).update(retry_queued=True):
            with transaction.atomic():
                _queue(delivery["sink_id"], delivery["event_id"], delivery["attempt"] + 1)
            queued += 1
    return queued
