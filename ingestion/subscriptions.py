"""The ingestion workflow, as data: which event runs which stage, on which queue."""

from events.subscriptions import Subscription

SUBSCRIPTIONS = [
    Subscription("freshet.document.changed", "ingestion.pipeline.document_parse", queue="parse"),
    Subscription("freshet.document.parsed", "ingestion.pipeline.document_chunk", queue="chunk"),
    Subscription("freshet.document.chunked", "ingestion.pipeline.document_embed", queue="embed"),
    # The rest of an embed batch waits in the index stage's pending set, for this one's task.
    Subscription("freshet.chunks.embedded", "ingestion.pipeline.document_index", queue="index",
                 when={"batch_first": True}),
    Subscription("freshet.document.deleted", "ingestion.pipeline.document_unindex", queue="index"),
    Subscription("freshet.source.deleted", "ingestion.pipeline.source_unindex", queue="index"),
    Subscription("freshet.source.changed", "ingestion.pipeline.source_sync_access", queue="sync"),
]
