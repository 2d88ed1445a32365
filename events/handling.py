"""How every app's event handlers take an event: `event_handler` decodes the event's data and
applies the error policy of events/errors.py, so a handler is only its own work.

    @event_handler
    def document_deleted_mark_stale(data: dict) -> None: ...

A handler's retryable error goes up to the delivery task (events/tasks.py), which tries again
with backoff up to EVENT_RETRY_MAX times and then gives up through the handler's `failed`; any
other error is permanent: logged, and handed to `failed` at once (a pipeline stage fails its
document with the reason). Either way the worker goes on with the next event.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from config.logs import log_context
from events.errors import RETRYABLE

logger = logging.getLogger(__name__)

EventData = dict[str, Any]
Failed = Callable[[EventData, BaseException], None]


class GaveUp(Exception):
    """A transient failure that outlasted every retry."""

    def __init__(self, error: BaseException, tries: int) -> None:
        self.error, self.tries = error, tries
        super().__init__(f"still failing after {tries} tries ({type(error).__name__}: {error})")


def event_data(event) -> EventData:
    """The event's data as a dict ({} for none or for data of another shape)."""
    data = event.get_data()
    return data if isinstance(data, dict) else {}


def data_int(data: EventData, key: str) -> int | None:
    """`data[key]` as an int, or None when it is missing or not a number."""
    value = data.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def event_handler(handler: Callable[[EventData], None] | None = None, *, failed: Failed | None = None,
                  expected: tuple[type[Exception], ...] = ()):
    """Make `handler(data)` an event handler (a callable taking a CloudEvent) under the error
    policy; `failed(data, error)` hears of permanent errors, and of a `GaveUp` from the delivery
    task once retries run out. Errors of the `expected` kinds (a file that cannot be parsed) are
    logged without a traceback."""

    def decorate(handler: Callable[[EventData], None]) -> Callable:
        @functools.wraps(handler)
        def handle(event) -> None:
            data = event_data(event)
            with log_context(event_id=event.get_id(), document_id=data_int(data, "document_id")):
                _run(event, data)

        def _run(event, data: EventData) -> None:
            try:
                handler(data)
            except RETRYABLE:
                raise  # the delivery task tries again later
            except Exception as error:
                logger.log(logging.INFO if isinstance(error, expected) else logging.ERROR,
                           "Handler %s failed on event %s (%s): %s", handler.__qualname__, event.get_id(),
                           event.get_type(), error, exc_info=not isinstance(error, expected))
                if failed is not None:
                    failed(data, error)

        def give_up(event, error: BaseException, tries: int) -> None:
            logger.error("Handler %s gave up on event %s after %d tries: %s", handler.__qualname__,
                         event.get_id(), tries, error)
            if failed is not None:
                failed(event_data(event), GaveUp(error, tries))

        handle.give_up = give_up
        return handle

    return decorate(handler) if handler is not None else decorate
