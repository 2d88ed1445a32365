"""The feedback consumer's event handlers (feedback/subscriptions.py): thin adapters from an
event to feedback/consumer.py, under the one error policy (events/handling.py), that queue what
the work asks for (feedback/tasks.py). Each is safe to run twice: it marks chunks for a recount
from the Feedback table (the flush does it), it adds nothing up itself."""

from __future__ import annotations

import logging

from events.handling import EventData, data_int, event_handler
from feedback.consumer import document_indexed_restore, feedback_apply
from feedback.tasks import followup_queue

logger = logging.getLogger(__name__)


@event_handler
def feedback_received(data: EventData) -> None:
    """`freshet.feedback.received`: credit the chunks the vote is about (the one chunk of a
    per-citation vote, every citation of an answer vote) and act on its reason."""
    chunk_id = str(data.get("chunk_id") or "")
    cited = data.get("cited_chunk_ids")
    if chunk_id:
        chunk_ids = [chunk_id]
    else:
        chunk_ids = [str(c) for c in cited if c] if isinstance(cited, list) else []
    if not chunk_ids:
        logger.info("Feedback %s credits no chunk (an answer without citations)", data.get("feedback_id"))
    followup_queue(feedback_apply(chunk_ids=chunk_ids, message_id=data_int(data, "message_id"),
                                  document_id=data_int(data, "document_id"), reason=str(data.get("reason") or "")))


@event_handler
def document_indexed_restore_scores(data: EventData) -> None:
    """`freshet.document.indexed`: a new version was written without feedback scores; put the
    scores of its voted chunks back."""
    document_id = data_int(data, "document_id")
    if document_id is not None:
        followup_queue(document_indexed_restore(document_id))
