"""The subscriber of every event type some sink chose (events/subscriptions.py, with a gate)."""

from __future__ import annotations

from django.conf import settings

from events.sinks.selectors import sinks_wanting
from events.sinks.services import delivery_attempt


def event_to_sinks(envelope) -> None:
    """Deliver the event to each enabled sink that chose its type. With one such sink its first
    attempt is made here, a hand-off sooner; with several, each gets a task of its own, so a slow
    receiver holds up no other. Retries go on by themselves (tasks.sink_deliver)."""
    from events.sinks.tasks import sink_deliver

    sinks = sinks_wanting(envelope.get_type())
    if len(sinks) == 1:
        delivery_attempt(sink_id=sinks[0].pk, event_id=envelope.get_id(), attempt=1)
        return
    soft, hard = settings.PIPELINE_TIME_LIMITS.get("sinks", (None, None))
    for sink in sinks:
        sink_deliver.apply_async(args=[sink.pk, envelope.get_id(), 1], queue="sinks",
                                 soft_time_limit=soft, time_limit=hard)
