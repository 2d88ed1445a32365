"""The chat's event handlers (chat/subscriptions.py): documents that changed or went away make
open conversations mark the answers that cited them as stale."""

from __future__ import annotations

from chat.services import answers_mark_stale
from events.handling import EventData, data_int, event_handler


@event_handler
def document_indexed_mark_stale(data: EventData) -> None:
    """A new version is in the index (published after the index write)."""
    document_id = data_int(data, "document_id")
    if document_id is not None:
        answers_mark_stale(document_id=document_id)


@event_handler
def document_deleted_mark_stale(data: EventData) -> None:
    """The document is gone; its chunks leave the index in a sibling subscriber, and retrieval
    already skips documents that no longer exist, so asking again cannot cite it."""
    document_id = data_int(data, "document_id")
    if document_id is not None:
        answers_mark_stale(document_id=document_id)
