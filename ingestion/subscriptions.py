"""The ingestion workflow, as data: which event runs which handler (ingestion/handlers.py), on
which queue. A document's whole path:

    document.changed -> parse -> document.parsed -> chunk -> document.chunked -> embed
    -> chunks.embedded (each document) + index.drain_requested (each embed batch) -> index
    -> document.indexed                                      (or document.failed at any stage)

The embed stage leaves each document it embedded in the index stage's pending set and asks once
per batch for a drain; the drain writes what waits, a batch (one index write) at a time.
"""

from events.subscriptions import Subscription

SUBSCRIPTIONS = [
    Subscription("freshet.document.changed", "ingestion.handlers.document_parse", queue="parse"),
    Subscription("freshet.document.parsed", "ingestion.handlers.document_chunk", queue="chunk"),
    Subscription("freshet.document.chunked", "ingestion.handlers.document_embed", queue="embed"),
    Subscription("freshet.index.drain_requested", "ingestion.handlers.index_drain_schedule", queue="index"),
    Subscription("freshet.document.deleted", "ingestion.handlers.document_unindex", queue="index"),
    Subscription("freshet.source.deleted", "ingestion.handlers.source_unindex", queue="index"),
    Subscription("freshet.source.changed", "ingestion.handlers.source_sync_access", queue="sync"),
]
