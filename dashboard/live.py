"""The dashboard's live feed: every committed event, summarised, reaches the Channels group
`dashboard` within DASHBOARD_LIVE_SECONDS, in one message per process and interval.

The observer (event_offer) runs in the publishing process right after the commit, on the
pipeline's hot path, so it only appends to a bounded in-memory buffer; a daemon thread of that
process, with an event loop of its own that keeps the channel layer's connection, sends what
gathered. A process that publishes nothing starts no thread. A summary lost in a process that
dies is only a late tick on a screen: each snapshot is read from the database anyway.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

GROUP = "dashboard"
BUFFER_EVENTS = 500  # per process and interval; more are counted, not listed


def event_summary(event) -> dict[str, Any]:
    """What a dashboard needs of one event (never the whole data: it may be large)."""
    data = event.data if isinstance(event.data, dict) else {}
    summary = {"id": event.id, "type": event.type, "subject": event.subject, "time": event.time.isoformat()}
    for key in ("document_id", "source_id", "version", "stage", "reason"):
        if key in data:
            summary[key] = data[key] if key != "reason" else str(data[key])[:300]
    return summary


class _Feed:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.buffer: collections.deque[dict] = collections.deque(maxlen=BUFFER_EVENTS)
        self.dropped = 0
        self.pid: int | None = None

    def offer(self, event) -> None:
        summary = event_summary(event)
        with self.lock:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            self.buffer.append(summary)
            if self.pid != os.getpid():  # the first event in this process
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="dashboard-feed", daemon=True).start()
        self.wake.set()

    def _take(self) -> tuple[list[dict], int]:
        with self.lock:
            events, dropped = list(self.buffer), self.dropped
            self.buffer.clear()
            self.dropped = 0
            self.wake.clear()
        return events, dropped

    def _run(self) -> None:
        from channels.layers import get_channel_layer

        loop = asyncio.new_event_loop()
        layer = get_channel_layer()
        while True:
            self.wake.wait()
            time.sleep(settings.DASHBOARD_LIVE_SECONDS)  # gather what arrives meanwhile: one message
            events, dropped = self._take()
            if not events or layer is None:
                continue
            try:
                loop.run_until_complete(layer.group_send(
                    GROUP, {"type": "dashboard.events", "events": events, "dropped": dropped}))
            except Exception as error:  # Redis away: the screens catch up with the next snapshot
                logger.warning("Dashboard feed could not reach the channel layer: %s", error)


_feed = _Feed()


def _forked() -> None:
    # A Celery pool process is forked from the main one: its feed starts empty, with a lock that
    # no thread of the parent may be holding, and a thread of its own on the first event.
    global _feed
    _feed = _Feed()


os.register_at_fork(after_in_child=_forked)


def event_offer(event) -> None:
    """The event observer (dashboard/apps.py): queue the event's summary for the live feed."""
    if settings.DASHBOARD_LIVE_SECONDS > 0:
        _feed.offer(event)
