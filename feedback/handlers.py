"""The feedback consumer's subscribers (feedback/subscriptions.py): thin adapters from an event
to feedback/consumer.py. Each is safe to run twice: it recounts from the Feedback table."""

from __future__ import annotations

import logging
from typing import Any

from feedback.consumer import document_indexed_restore, feedback_apply

logger = logging.getLogger(__name__)


def _data(event) -> dict[str, Any]:
    data = event.get_data()
    return data if isinstance(data, dict) else {}


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def feedback_received(event) -> None:
    """`freshet.feedback.received`: credit the chunks the vote is about (the one chunk of a
    per-citation vote, every citation of an answer vote) and act on its reason."""
    data = _data(event)
    chunk_id = str(data.get("chunk_id") or "")
    cited = data.get("cited_chunk_ids") or []
    chunk_ids = [chunk_id] if chunk_id else [str(c) for c in cited if c] if isinstance(cited, list) else []
    if not chunk_ids:
        logger.info("Feedback %s credits no chunk (an answer without citations)", data.get("feedback_id"))
    feedback_apply(chunk_ids=chunk_ids, message_id=_int_or_none(data.get("message_id")),
                   document_id=_int_or_none(data.get("document_id")), reason=str(data.get("reason") or ""))


def document_indexed_restore_scores(event) -> None:
    """`freshet.document.indexed`: a new version was written without feedback scores; put the
    scores of its voted chunks back."""
    document_id = _int_or_none(_data(event).get("document_id"))
    if document_id is not None:
        document_indexed_restore(document_id)
