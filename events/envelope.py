"""CloudEvent 1.0 envelopes for Freshet's events (the `cloudevents` package does the spec)."""

from __future__ import annotations

import uuid
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from django.utils import timezone

from events.models import Event

SOURCE = "/freshet"


def cloudevent_new(*, type: str, subject: str = "", data: dict[str, Any] | None = None,
                   source: str = SOURCE) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "source": source,
        "type": type,
        "time": timezone.now(),
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    return CloudEvent(attributes=attributes, data=data or {})


def cloudevent_from_record(event: Event) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": event.time,
        "datacontenttype": "application/json",
    }
    if event.subject:
        attributes["subject"] = event.subject
    return CloudEvent(attributes=attributes, data=event.data)
