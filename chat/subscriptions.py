"""The chat listens for documents that changed or went away, so open conversations can mark the
answers that cited them as stale. A new subscription; the ingestion pipeline does not know."""

from __future__ import annotations

from events.subscriptions import Subscription


def _document_id(event) -> int | None:
    data = event.get_data()
    try:
        return int(data["document_id"])
    except (KeyError, TypeError, ValueError):
        return None


def document_indexed_mark_stale(event) -> None:
    """A new version is in the index (published after the index write)."""
    from chat.services import answers_mark_stale

    document_id = _document_id(event)
    if document_id is not None:
        answers_mark_stale(document_id=document_id)


def document_deleted_mark_stale(event) -> None:
    """The document is gone; its chunks leave the index in a sibling subscriber, and retrieval
    already skips documents that no longer exist, so asking again cannot cite it."""
    from chat.services import answers_mark_stale

    document_id = _document_id(event)
    if document_id is not None:
        answers_mark_stale(document_id=document_id)


SUBSCRIPTIONS = [
    # Only a version that replaced an indexed one: a document never indexed before was never cited.
    Subscription("freshet.document.indexed", "chat.subscriptions.document_indexed_mark_stale", queue="sync",
                 when={"replaced": True}),
    Subscription("freshet.document.deleted", "chat.subscriptions.document_deleted_mark_stale", queue="sync"),
]
