"""Sink tasks, on the `sinks` queue: thin adapters over events/sinks/services.py. Imported by
the worker through CELERY_IMPORTS (settings, "Event intake and sinks")."""

from __future__ import annotations

from celery import shared_task

from events.sinks.services import deliveries_due_queue, delivery_attempt


@shared_task(acks_late=True, ignore_result=True)
def sink_deliver(sink_id: int, event_id: str, attempt: int = 1) -> None:
    """Attempt `attempt` of one event to one sink (safe to run twice: an attempt is made once)."""
    delivery_attempt(sink_id=sink_id, event_id=event_id, attempt=attempt)


@shared_task(acks_late=True, ignore_result=True)
def sink_deliveries_due() -> None:
    """Scheduled: queue the retries that are due (those too far off for a countdown)."""
    deliveries_due_queue()
