"""The query's embedding: from a per-process cache, else encoded together with the queries that
arrive at the same time (`QueryBatcher`)."""

from __future__ import annotations

import threading

from django.conf import settings

from ingestion.embedding import VectorCache, embedder, index_model_check


class QueryBatcher:
    """Embeds concurrent queries together: the model runs one forward pass at a time per process
    (Embedder holds a lock), so under concurrent searches each query would wait for every query
    ahead of it. Instead, whichever caller finds the model idle encodes everything waiting, in
    one batch, and hands each caller its vector; a batch of eight short queries costs little
    more than one. A single caller is encoded at once, with no added wait."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._waiting: list[dict] = []
        self._busy = False

    def encode(self, text: str) -> list[float]:
        slot: dict = {"text": text}
        with self._ready:
            self._waiting.append(slot)
            while "vector" not in slot and "error" not in slot:
                if self._busy:
                    self._ready.wait()
                    continue
                self._busy, batch, self._waiting = True, self._waiting, []
                self._ready.release()
                try:
                    vectors = embedder().encode([s["text"] for s in batch])
                    results = [{"vector": vector.tolist()} for vector in vectors]
                except BaseException as error:  # every caller of this batch gets the model's error
                    results = [{"error": error}] * len(batch)
                finally:
                    self._ready.acquire()
                    self._busy = False
                for waiting, result in zip(batch, results, strict=True):
                    waiting.update(result)
                self._ready.notify_all()
        if "error" in slot:
            raise slot["error"]
        return slot["vector"]


_query_batcher = QueryBatcher()
query_cache = VectorCache()


def query_vector(query: str) -> list[float]:
    """The query's embedding: from a per-process LRU of the last SEARCH_QUERY_CACHE_SIZE queries
    (people ask the same things again: a retried chat question, a popular search), else encoded.
    Vectors depend on the query text and the model only, so the cache never needs invalidating."""
    index_model_check()  # a query vector of another model than the index's would match nothing
    size = settings.SEARCH_QUERY_CACHE_SIZE
    if size and (held := query_cache.get_many([query])):
        return held[query]
    vector = _query_batcher.encode(query)
    query_cache.put(query, vector, size=size)
    return vector
