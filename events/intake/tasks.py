"""Intake tasks: thin adapters over events/intake/apply.py. Imported by the worker through
CELERY_IMPORTS (settings, "Event intake and sinks")."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from events.intake.apply import received_events_apply
from events.models import ReceivedEvent


@shared_task(acks_late=True, ignore_result=True)
def received_events_sweep() -> None:
    """Scheduled: apply what was recorded a minute ago and is still pending (its
    `freshet.events.received` delivery was lost, say with a flushed broker), so that a 202 is
    never a change that does not happen."""
    before = timezone.now() - timedelta(seconds=60)
    stale = (ReceivedEvent.objects.filter(status=ReceivedEvent.Status.PENDING, received_at__lt=before).order_by()
             .values_list("source_id", flat=True).distinct())
    for source_id in list(stale):
        received_events_apply(source_id=source_id)
