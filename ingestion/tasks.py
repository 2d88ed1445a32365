"""Search-index upkeep: the scheduled compaction and the coalesced refresh after writes."""

from __future__ import annotations

import logging
import time

import redis
from celery import shared_task
from django.conf import settings

from config.redis_client import redis_client
from events.tasks import RETRYABLE
from ingestion.search_index import search_index

logger = logging.getLogger(__name__)

REFRESH_GUARD_SECONDS = 30  # a lost refresh task holds back the next one at most this long
REFRESH_COST_FACTOR = 20  # refreshes at most every 20x the last refresh's duration


def _refresh_flag() -> str:
    return f"{settings.REDIS_KEY_PREFIX}search-index:refresh-scheduled"


def _refresh_cost() -> str:
    return f"{settings.REDIS_KEY_PREFIX}search-index:refresh-seconds"


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
    r = redis_client()
    r.delete(_refresh_flag())
    started = time.monotonic()
    if search_index().refresh():
        r.set(_refresh_cost(), f"{time.monotonic() - started:.3f}", ex=3600)


def search_index_refresh_soon() -> None:
    """After a write to the index: one refresh within SEARCH_INDEX_REFRESH_SECONDS, however many
    writes ask for it (Elasticsearch's refresh interval, for the embedded engine). Without Redis
    the refresh waits for the scheduled compaction, which does the same; the write itself stands."""
    try:
        r = redis_client()
        scheduled = r.set(_refresh_flag(), "1", nx=True, ex=REFRESH_GUARD_SECONDS)
        cost = float(r.get(_refresh_cost()) or 0.0) if scheduled else 0.0
    except (redis.RedisError, ValueError) as error:
        logger.warning("Search index refresh not scheduled (%s); the scheduled compaction will do it", error)
        return
    if scheduled:
        # A refresh grows with the index: on a large one, wait long enough that refreshing takes
        # at most 1/REFRESH_COST_FACTOR of a core while documents stream in.
        countdown = min(max(settings.SEARCH_INDEX_REFRESH_SECONDS, REFRESH_COST_FACTOR * cost), REFRESH_GUARD_SECONDS)
        search_index_refresh.apply_async(countdown=countdown, queue="index")


@shared_task(acks_late=True, ignore_result=True)
def pipeline_batches_recover() -> None:
    """Periodic: documents of a batch whose process died go back to pending, and stages with
    documents pending for long (nobody's task took them) are drained on their own queues."""
    from ingestion.pipeline import batches_recover, drain_soon

    for stage_name in batches_recover():
        drain_soon(stage_name)


@shared_task(acks_late=True, ignore_result=True, autoretry_for=RETRYABLE, retry_backoff=2, retry_backoff_max=300,
             max_retries=None)
def pipeline_batch_drain(stage_name: str) -> None:
    """Run the stage's pending documents in batches (see ingestion.pipeline, batches)."""
    from ingestion.pipeline import batch_drain

    batch_drain(stage_name)
