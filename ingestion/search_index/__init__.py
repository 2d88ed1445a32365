"""The search index, chosen by settings: LanceDB by default, Elasticsearch when
ELASTICSEARCH_URL is set. Built once per process."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from ingestion.search_index.base import AccessFilter, ChunkRecord, DocumentChunks, SearchHit, SearchIndex

__all__ = ["AccessFilter", "ChunkRecord", "DocumentChunks", "SearchHit", "SearchIndex", "search_index",
           "search_index_reset"]


@cache
def search_index() -> SearchIndex:
    if settings.ELASTICSEARCH_URL:
        from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex

        return ElasticsearchIndex(
            url=settings.ELASTICSEARCH_URL,
            alias=settings.ELASTICSEARCH_INDEX,
            timeout=settings.ELASTICSEARCH_TIMEOUT,
        )
    from ingestion.search_index.lancedb_engine import LanceDBIndex

    return LanceDBIndex(settings.SEARCH_INDEX_DIR, search_lag_seconds=settings.SEARCH_INDEX_SEARCH_LAG_SECONDS,
                        memory_knn_rows=settings.SEARCH_INDEX_MEMORY_KNN_ROWS,
                        memory_bm25=settings.SEARCH_INDEX_MEMORY_BM25)


def search_index_reset() -> None:
    """Forget the built engine (tests that switch settings)."""
    search_index.cache_clear()
