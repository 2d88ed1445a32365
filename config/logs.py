"""Log records with the context of the work they are about: LOG_FORMAT=json writes one JSON
object a line (python-json-logger) with `event_id` and `document_id` where there is one.

The event handler decorator (events/handling.py) sets the context for the delivery it runs, so
every line logged while a stage works on a document carries both ids, whoever logs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

CONTEXT_FIELDS = ("event_id", "document_id")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("freshet_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (None values left out) to every record logged inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class LogContextFilter(logging.Filter):
    """Copies the current log context onto each record (a record's own `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(_JsonFormatter):
    """time, level, logger, message, the context ids and any `extra`; a traceback as `exc_info`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S%z")
        super().__init__(*args, **kwargs)


_task_tokens: dict[str, contextvars.Token] = {}


def _task_started(task_id=None, task=None, args=None, **kwargs) -> None:
    # An event delivery's first argument is the event id: its retries and give-ups carry it too.
    if task is not None and task.name == "events.tasks.event_deliver" and args:
        _task_tokens[task_id] = _context.set({**(_context.get() or {}), "event_id": str(args[0])})


def _task_finished(task_id=None, **kwargs) -> None:
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        _context.reset(token)


def task_log_context_connect() -> None:
    """Put each event delivery's event id in the log context of its whole task (Celery signals)."""
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_task_started, weak=False, dispatch_uid="freshet-log-context-prerun")
    task_postrun.connect(_task_finished, weak=False, dispatch_uid="freshet-log-context-postrun")
