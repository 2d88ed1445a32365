"""The chat listens for documents that changed or went away (chat/handlers.py). A new
subscription; the ingestion pipeline does not know."""

from events.subscriptions import Subscription

SUBSCRIPTIONS = [
    # Only a version that replaced an indexed one: a document never indexed before was never cited.
    Subscription("freshet.document.indexed", "chat.handlers.document_indexed_mark_stale", queue="sync",
                 when={"replaced": True}),
    Subscription("freshet.document.deleted", "chat.handlers.document_deleted_mark_stale", queue="sync"),
]
