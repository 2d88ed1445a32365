"""Celery tasks of the ingestion app beside the event deliveries: search-index upkeep, the
drains of the batch stages and the periodic sweep. Thin adapters; the work is in
ingestion/pipeline/."""

from __future__ import annotations

import logging
import math
import time

import redis
from celery import shared_task
from django.conf import settings

from config.redis_client import redis_client
from events.errors import RETRYABLE, retry_countdown
from ingestion.pipeline.recovery import batches_recover, documents_sweep
from ingestion.pipeline.stages import BATCH_STAGES, stage_drain
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
    """Periodic: the index's housekeeping (SearchIndex.optimize)."""
    search_index().optimize()


@shared_task(acks_late=True, ignore_result=True, autoretry_for=RETRYABLE + (RuntimeError, OSError),
             retry_backoff=True, max_retries=5)
def search_index_refresh() -> None:
    """Make what was written since the last refresh count in searches (SearchIndex.refresh). The
    flag is cleared before the work, so a write landing meanwhile schedules the next refresh
    instead of being missed."""
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
def pipeline_sweep() -> None:
    """Periodic (PIPELINE_SWEEP_SECONDS): documents of a batch whose process died go back to
    pending, stages with documents pending for long (nobody's task took them) are drained on
    their own queues, and documents stuck for PIPELINE_STUCK_SECONDS are published again."""
    for stage_name in batches_recover():
        drain_soon(stage_name)
    documents_sweep()


def drain_soon(stage_name: str, *, countdown: float = 0.0) -> None:
    """Have the stage's pending documents drained `countdown` seconds from now, once however
    many ask meanwhile (the drain clears the ask before it looks, so nothing asked for after it
    looked is missed)."""
    if BATCH_STAGES[stage_name].claims.drain_request():
        soft, hard = settings.PIPELINE_TIME_LIMITS[stage_name]
        pipeline_batch_drain.apply_async(args=[stage_name], queue=stage_name, countdown=countdown,
                                         soft_time_limit=soft, time_limit=hard)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def pipeline_batch_drain(self, stage_name: str) -> None:
    """Run the stage's pending documents in batches (ingestion/pipeline/batching.py). A transient
    failure leaves them pending and tries again with backoff; past EVENT_RETRY_MAX tries the
    periodic sweep takes them up (the documents wait for the service, they do not fail for it)."""
    # Each batch is short, a drain of a large backlog is not: stop well inside the soft time
    # limit and leave the rest to the next drain, so the limit never cuts a batch in half.
    soft, _ = settings.PIPELINE_TIME_LIMITS.get(stage_name, (None, None))
    try:
        left = stage_drain(stage_name, after_batch=search_index_refresh_soon if stage_name == "index" else None,
                           seconds=soft / 2 if soft else None)
    except RETRYABLE as error:
        if self.request.retries >= settings.EVENT_RETRY_MAX:
            logger.error("Drain of %s still failing after %d tries (%s); the sweep takes it up",
                         stage_name, self.request.retries + 1, error)
            return
        raise self.retry(exc=error, countdown=retry_countdown(
            self.request.retries, maximum=settings.EVENT_RETRY_BACKOFF_MAX)) from error
    if left:
        drain_soon(stage_name)


# --- Connector syncs (ingestion/connectors/sync.py) -----------------------------------------
# The listing is one task; the items to fetch are done by source_sync_fetch tasks, at most
# sync.fetch_tasks_per_source() of them per source at a time, each queuing its successor.


@shared_task(acks_late=True, ignore_result=True)
def source_sync_list(run_id: int) -> None:
    """List a running sync's source and start its fetch tasks (dropped if the run is gone or over)."""
    from ingestion.connectors import sync
    from ingestion.models import SyncRun

    run = SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.RUNNING).first()
    if run is None:
        return
    try:
        left = sync.sync_list(run=run)
    except BaseException as error:
        sync.sync_fail(run=run, error=error)
        raise
    if not left:
        sync.sync_finish_if_done(run=run)
        return
    for _ in range(min(sync.fetch_tasks_per_source(), math.ceil(left / settings.SYNC_CHUNK_ITEMS))):
        source_sync_fetch.apply_async(args=[run_id], queue="sync")


@shared_task(acks_late=True, ignore_result=True, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def source_sync_fetch(run_id: int) -> None:
    """Fetch one chunk of a running sync's items, then queue the next chunk or finish the run."""
    from ingestion.connectors import sync
    from ingestion.models import SyncRun

    run = SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.RUNNING).first()
    if run is None:
        return
    if sync.sync_chunk(run=run):
        if sync.sync_items_unclaimed(run=run):
            source_sync_fetch.apply_async(args=[run_id], queue="sync")
            return
    sync.sync_finish_if_done(run=run)


@shared_task(acks_late=True, ignore_result=True)
def source_sync_scheduled(source_id: int) -> None:
    """A source's PeriodicTask (django-celery-beat) fired: start its sync, unless one runs."""
    from ingestion.connectors import sync
    from ingestion.models import Source
    from ingestion.services import source_schedule_keep

    source = Source.objects.filter(pk=source_id).first()
    if source is None:
        source_schedule_keep(source_id=source_id)  # the source is gone: so goes its schedule
        return
    try:
        sync.source_sync_request(source, trigger="schedule")
    except sync.SyncAlreadyRunning:
        logger.info("Scheduled sync of source %s skipped: one is running", source_id)
