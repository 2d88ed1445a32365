"""Reads of sinks and deliveries."""

from __future__ import annotations

from django.db.models import QuerySet

from events.models import Delivery, EventSink


def sinks_wanting(event_type: str) -> list[EventSink]:
    """The enabled sinks that chose `event_type` (or "*")."""
    return [sink for sink in EventSink.objects.filter(enabled=True) if sink.wants(event_type)]


def sinks_want(event_type: str) -> bool:
    """Whether any enabled sink chose `event_type`: one small query per published event, so a
    sink created or enabled counts from the next event on, in every process."""
    return any("*" in types or event_type in types
               for types in EventSink.objects.filter(enabled=True).values_list("types", flat=True))


def deliveries_of(*, sink: EventSink) -> QuerySet[Delivery]:
    return Delivery.objects.filter(sink=sink).select_related("event").order_by("-created_at", "-id")
