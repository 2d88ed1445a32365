"""The feedback consumer's subscribers (feedback/subscriptions.py): thin adapters from an event
to feedback/consumer.py. Each is safe to run twice: it marks chunks for a recount from the
Feedback table (the flush does it), it adds nothing up itself."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError

from events.errors import TransientError
from feedback.consumer import document_indexed_restore, feedback_apply

logger = logging.getLogger(__name__)


def retried_on_database_errors(handler: Callable) -> Callable:
    """A deadlock or a dropped connection is worth another try: running a handler again is safe."""

    @functools.wraps(handler)
    def run(event) -> None:
        try:
            handler(event)
        except (OperationalError, InterfaceError) as error:
            raise TransientError(f"Database: {error}") from error

    return run


def _data(event) -> dict[str, Any]:
    data = event.get_data()
    return data if isinstance(data, dict) else {}


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@retried_on_database_errors
def feedback_received(event) -> None:
    """`freshet.feedback.received`: credit the chunks the vote is about (the one chunk of a
    per-citation vote, every citation of an answer vote) and act on its reason."""
    data = _data(event)
    chunk_id = str(data.get("chunk_id") or "")
    cited = data.get("cited_chunk_ids")
    if chunk_id:
        chunk_ids = [chunk_id]
    else:
        chunk_ids = [str(c) for c in cited if c] if isinstance(cited, list) else []
    if not chunk_ids:
        logger.info("Feedback %s credits no chunk (an answer without citations)", data.get("feedback_id"))
    feedback_apply(chunk_ids=chunk_ids, message_id=_int_or_none(data.get("message_id")),
                   document_id=_int_or_none(data.get("document_id")), reason=str(data.get("reason") or ""))


@retried_on_database_errors
def document_indexed_restore_scores(event) -> None:
    """`freshet.document.indexed`: a new version was written without feedback scores; put the
    scores of its voted chunks back."""
    document_id = _int_or_none(_data(event).get("document_id"))
    if document_id is not None:
        document_indexed_restore(document_id)
