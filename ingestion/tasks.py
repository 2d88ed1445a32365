"""Search-index upkeep: the scheduled compaction and the coalesced refresh after writes."""

from __future__ import annotations

import functools
import logging

import redis
from celery import shared_task
from django.conf import settings

from ingestion.search_index import search_index

logger = logging.getLogger(__name__)

REFRESH_GUARD_SECONDS = 30  # a lost refresh task holds back the next one at most this long


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _refresh_flag() -> str:
    return f"{settings.REDIS_KEY_PREFIX}search-index:refresh-scheduled"


@shared_task(acks_late=True, ignore_result=True)
def search_index_optimize() -> None:
    """Compact the index and fold new rows into its indexes (LanceDB makes a version per write)."""
    search_index().optimize()


@shared_task(acks_late=True, ignore_result=True, autoretry_for=(RuntimeError, OSError), retry_backoff=True,
             max_retries=5)
def search_index_refresh() -> None:
    """Fold what was written since the last refresh into the full-text index (see
    SearchIndex.refresh). The flag is cleared before the work, so a write landing meanwhile
    schedules the next refresh instead of being missed."""
    _redis().delete(_refresh_flag())
    search_index().refresh()


def search_index_refresh_soon() -> None:
    """After a write to the index: one refresh within SEARCH_INDEX_REFRESH_SECONDS, however many
    writes ask for it (Elasticsearch's refresh interval, for the embedded engine). Without Redis
    the refresh waits for the scheduled compaction, which does the same; the write itself stands."""
    try:
        scheduled = _redis().set(_refresh_flag(), "1", nx=True, ex=REFRESH_GUARD_SECONDS)
    except redis.RedisError as error:
        logger.warning("Search index refresh not scheduled (%s); the scheduled compaction will do it", error)
        return
    if scheduled:
        search_index_refresh.apply_async(countdown=settings.SEARCH_INDEX_REFRESH_SECONDS, queue="index")
