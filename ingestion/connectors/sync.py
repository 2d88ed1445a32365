"""The sync of one source through its connector (base.py): list, diff against the manifest,
fetch what is new or changed, prune what is gone, and record it all on a SyncRun.

The manifest (the source's documents: external id → marker, content hash) is read BEFORE the
listing, so a document added while a long crawl runs (by the folder watcher, a push) is not in
it and cannot be pruned by that crawl. Items whose listed marker equals the document's cost
nothing; items fetched whose content hash is unchanged only get their marker stored (a queryset
update: no save signal, so no `freshet.document.changed` and no pipeline work). Nothing is pruned
when the listing failed (SourceUnavailable, or anything else): a half listing is not the source.

One sync per source at a time: the database refuses a second `running` SyncRun of a source (a
partial unique index), so two requests racing cannot both start one (SyncAlreadyRunning).

Fairness between sources: the listing writes the items to fetch as SyncItem rows, and fetch
tasks on the `sync` queue each claim at most SYNC_CHUNK_ITEMS of them; a source never has more
than SYNC_ITEMS_IN_FLIGHT items claimed, i.e. never more than
ceil(SYNC_ITEMS_IN_FLIGHT / SYNC_CHUNK_ITEMS) fetch tasks queued or running. A fetch task queues
its successor when it finishes, so a 100,000-page sitemap advances a few chunks at a time while a
10-entry feed's tasks queue behind those few chunks, not behind 100,000 pages.

Two ways to drive it, both with the same steps:
- `source_sync(source, trigger=...)`: the whole sync in the calling process (the CLI's --wait,
  tests); returns the finished run.
- `source_sync_request(source, trigger=...)`: claims the run and leaves the work to tasks
  (ingestion/tasks.py: source_sync_list, then source_sync_fetch chunks); returns the running run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.exceptions import ApplicationError
from events.errors import TransientError
from events.services import event_publish
from ingestion.connectors.base import Item, ItemFailed, SourceUnavailable, connector_for
from ingestion.models import Document, Source, SyncItem, SyncRun
from ingestion.services import document_ingest, document_source_note

logger = logging.getLogger(__name__)

# The event types of a sync (CloudEvents `type`), published with data {source_id, sync_run_id, ...}.
SYNC_STARTED = "freshet.sync.started"
SYNC_FINISHED = "freshet.sync.finished"

NEW, CHANGED, UNCHANGED, FAILED = "new", "changed", "unchanged", "failed"
_COUNTERS = {NEW: "items_new", CHANGED: "items_changed", UNCHANGED: "items_unchanged", FAILED: "items_failed"}
ERROR_LINES_KEPT = 20  # item failures written into SyncRun.error; the count is always exact
_BULK = 1000
HEARTBEAT_SECONDS = 10.0


class SyncAlreadyRunning(ApplicationError):
    """A sync of the source is running; `run` is that one."""

    status = 409

    def __init__(self, message: str, *, run: SyncRun):
        self.run = run
        super().__init__(message)


class SourceNotSyncable(ApplicationError):
    """The source's kind has nothing to list (upload, push, queue: documents are sent to Freshet)."""

    status = 400


@dataclass(frozen=True)
class ItemResult:
    outcome: str  # NEW, CHANGED, UNCHANGED or FAILED
    message: str = ""
    document_id: int | None = None


# --- Starting and finishing -----------------------------------------------------------------


def sync_start(*, source: Source, trigger: str) -> SyncRun:
    """Claim the source's one running sync and publish `freshet.sync.started`.

    SourceNotSyncable for kinds with nothing to list; SyncAlreadyRunning while another sync of
    the source runs (one whose heartbeat is older than SYNC_STALE_SECONDS lost its worker: it is
    failed and this one starts)."""
    if not connector_for(source.kind).syncs:
        raise SourceNotSyncable(
            f"Source {source.name!r} is a {source.kind} source: its documents are sent to Freshet, there is "
            "nothing to sync.")
    stale_before = timezone.now() - timedelta(seconds=settings.SYNC_STALE_SECONDS)
    for stale in SyncRun.objects.filter(source=source, status=SyncRun.Status.RUNNING, heartbeat_at__lt=stale_before):
        _run_close(stale, status=SyncRun.Status.FAILED,
                   error=f"Abandoned: no progress for {settings.SYNC_STALE_SECONDS} s (SYNC_STALE_SECONDS); "
                         "its worker probably stopped.")
    with transaction.atomic():
        try:
            with transaction.atomic():
                run = SyncRun.objects.create(source=source, trigger=trigger[:32], heartbeat_at=timezone.now())
        except IntegrityError:
            running = SyncRun.objects.filter(source=source, status=SyncRun.Status.RUNNING).first()
            if running is None:  # it finished between the insert and this read: try once more
                run = SyncRun.objects.create(source=source, trigger=trigger[:32], heartbeat_at=timezone.now())
            else:
                raise SyncAlreadyRunning(
                    f"A sync of source {source.name!r} is already running (sync run {running.pk}, started "
                    f"{running.started_at:%Y-%m-%d %H:%M:%S} UTC); wait for it to finish.", run=running,
                ) from None
        event_publish(type=SYNC_STARTED, subject=f"sources/{source.pk}",
                      data={"source_id": source.pk, "sync_run_id": run.pk, "trigger": run.trigger})
    return run


def _run_close(run: SyncRun, *, status: str, error: str = "") -> bool:
    """Finish `run` once (a conditional UPDATE: of two callers, one wins) and publish
    `freshet.sync.finished`; True for the caller that finished it."""
    now = timezone.now()
    with transaction.atomic():
        changes = {"status": status, "finished_at": now, "heartbeat_at": now}
        if error:
            changes["error"] = error
        if not SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(**changes):
            return False
        SyncItem.objects.filter(run_id=run.pk).delete()
        if status != SyncRun.Status.FAILED:
            Source.objects.filter(pk=run.source_id).update(last_synced_at=now)
        run.refresh_from_db()
        event_publish(type=SYNC_FINISHED, subject=f"sources/{run.source_id}", data={
            "source_id": run.source_id, "sync_run_id": run.pk, "status": run.status,
            "items_seen": run.items_seen, "items_new": run.items_new, "items_changed": run.items_changed,
            "items_unchanged": run.items_unchanged, "items_deleted": run.items_deleted,
            "items_failed": run.items_failed, "error": run.error[:1000],
        })
    return True


def sync_finish_if_done(*, run: SyncRun) -> bool:
    """Finish `run` if none of its items is left to fetch (claimed ones count: their task is
    still at work); True if this call finished it."""
    if SyncItem.objects.filter(run_id=run.pk).exists():
        return False
    run.refresh_from_db(fields=["items_failed"])
    return _run_close(run, status=SyncRun.Status.PARTIAL if run.items_failed else SyncRun.Status.SUCCEEDED)


# --- Listing and pruning --------------------------------------------------------------------


def sync_list(*, run: SyncRun, progress: Callable[[SyncRun], None] | None = None) -> int:
    """List the source, diff the listing against the manifest, store the items to fetch, prune
    what is gone. Returns how many items are left to fetch; a failed listing fails the run
    (nothing pruned) and returns 0."""
    source = Source.objects.get(pk=run.source_id)
    connector = connector_for(source.kind)
    # The manifest first (see the module docstring): external id → (document id, marker).
    manifest = {eid: (pk, marker) for eid, pk, marker
                in Document.objects.filter(source=source).values_list("external_id", "pk", "marker").iterator()}
    seen: set[str] = set()
    unchanged = 0
    pending: list[SyncItem] = []
    queued = 0
    beat = time.monotonic()
    try:
        for item in connector.items(source):
            if item.external_id in seen:
                continue
            seen.add(item.external_id)
            known = manifest.get(item.external_id)
            if known is not None and item.marker and known[1] == item.marker:
                unchanged += 1
                if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    queued += _pending_store(run, pending, seen=len(seen), unchanged=unchanged)
                    unchanged, pending, beat = 0, [], time.monotonic()
                continue
            pending.append(SyncItem(run_id=run.pk, external_id=item.external_id[:1024], marker=item.marker[:512],
                                    uri=item.uri[:2048], title=item.title[:500]))
            # Store in bulk, and beat the heart at least every HEARTBEAT_SECONDS even while
            # every item is unchanged, so a long listing is never taken for a dead one.
            if len(pending) >= _BULK or time.monotonic() - beat >= HEARTBEAT_SECONDS:
                queued += _pending_store(run, pending, seen=len(seen), unchanged=unchanged)
                unchanged, pending, beat = 0, [], time.monotonic()
                if progress:
                    progress(run)
    except Exception as error:  # noqa: BLE001  (any listing failure fails the run; the worker goes on)
        if not isinstance(error, (SourceUnavailable, TransientError, OSError)):
            logger.exception("Listing source %s failed", source.pk)
        message = str(error) or error.__class__.__name__
        _run_close(run, status=SyncRun.Status.FAILED,
                   error=f"The source could not be listed, so nothing was pruned: {message}")
        return 0
    queued += _pending_store(run, pending, seen=len(seen), unchanged=unchanged)
    if not SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).exists():
        return 0  # failed meanwhile (taken for abandoned, the source deleted): it must not prune
    if source.prune:
        gone = [pk for eid, (pk, _) in manifest.items() if eid not in seen]
        deleted = 0
        for start in range(0, len(gone), _BULK):
            # A queryset delete still sends post_delete per document: each leaves the index.
            deleted += Document.objects.filter(source=source, pk__in=gone[start:start + _BULK]).delete()[1].get(
                Document._meta.label, 0)
        if deleted:
            SyncRun.objects.filter(pk=run.pk).update(items_deleted=F("items_deleted") + deleted)
    return queued


def _pending_store(run: SyncRun, pending: list[SyncItem], *, seen: int, unchanged: int) -> int:
    with transaction.atomic():
        SyncItem.objects.bulk_create(pending)
        SyncRun.objects.filter(pk=run.pk).update(items_seen=seen, items_unchanged=F("items_unchanged") + unchanged,
                                                 heartbeat_at=timezone.now())
    return len(pending)


# --- Fetching items -------------------------------------------------------------------------


def sync_chunk(*, run: SyncRun, limit: int | None = None) -> int:
    """Claim up to `limit` (SYNC_CHUNK_ITEMS) unclaimed items of `run`, sync each, record the
    outcomes. Returns how many it did (0: nothing left to claim). Items claimed by a task that
    died are claimable again after SYNC_STALE_SECONDS."""
    limit = limit or settings.SYNC_CHUNK_ITEMS
    now = timezone.now()
    reclaim_before = now - timedelta(seconds=settings.SYNC_STALE_SECONDS)
    with transaction.atomic():
        ids = list(
            SyncItem.objects.select_for_update(skip_locked=True)
            .filter(run_id=run.pk).filter(Q(claimed_at=None) | Q(claimed_at__lt=reclaim_before))
            .order_by("id").values_list("id", flat=True)[:limit]
        )
        SyncItem.objects.filter(id__in=ids).update(claimed_at=now)
    if not ids:
        return 0
    source = Source.objects.get(pk=run.source_id)
    try:
        for row in SyncItem.objects.filter(id__in=ids).order_by("id"):
            result = item_sync(source=source, item=Item(external_id=row.external_id, marker=row.marker,
                                                        uri=row.uri, title=row.title))
            with transaction.atomic():
                counters = {_COUNTERS[result.outcome]: F(_COUNTERS[result.outcome]) + 1}
                SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now(), **counters)
                if result.outcome == FAILED:
                    _error_line_add(run, f"{row.external_id}: {result.message}")
                row.delete()
    finally:
        # Stopped by an outage (the database, the broker): what this chunk did not do is
        # claimable again at once, by this task's retry or another fetch task.
        SyncItem.objects.filter(id__in=ids).update(claimed_at=None)
    return len(ids)


def sync_items_unclaimed(*, run: SyncRun) -> bool:
    return SyncItem.objects.filter(run_id=run.pk, claimed_at=None).exists()


def sync_fail(*, run: SyncRun, error: BaseException) -> None:
    """Fail `run` because its task stopped with `error` (frees the source's one running slot)."""
    _run_close(run, status=SyncRun.Status.FAILED, error=f"Stopped: {error.__class__.__name__}: {error}")


def _error_line_add(run: SyncRun, line: str) -> None:
    current = SyncRun.objects.select_for_update().only("error").get(pk=run.pk)
    lines = current.error.splitlines()
    if len(lines) < ERROR_LINES_KEPT:
        SyncRun.objects.filter(pk=run.pk).update(error="\n".join([*lines, line[:2000]]))
    elif len(lines) == ERROR_LINES_KEPT:
        SyncRun.objects.filter(pk=run.pk).update(
            error="\n".join([*lines, "... more item failures: see items_failed for the count."]))


def item_sync(*, source: Source, item: Item) -> ItemResult:
    """Fetch one item and take it in: NEW or CHANGED went into the pipeline (document_ingest, as
    the system), UNCHANGED cost no pipeline work, FAILED says why. Also used by the folder
    watcher for one file. ItemFailed fails the item at once; TransientError after
    SYNC_ITEM_RETRIES more tries; anything else a connector raises fails the item too (logged),
    so one bad item never stops the sync."""
    connector = connector_for(source.kind)
    document = Document.objects.filter(source=source, external_id=item.external_id).first()
    fetched = None
    for attempt in range(settings.SYNC_ITEM_RETRIES + 1):
        try:
            fetched = connector.fetch(source, item, document=document)
            break
        except ItemFailed as error:
            return ItemResult(FAILED, str(error) or "the item could not be fetched")
        except TransientError as error:
            if attempt == settings.SYNC_ITEM_RETRIES:
                return ItemResult(FAILED, f"{error} (still failing after {attempt + 1} tries)")
            time.sleep(min(2.0 ** attempt * 0.5, 5.0))
        except Exception as error:  # noqa: BLE001
            logger.exception("Fetching %r of source %s failed", item.external_id, source.pk)
            return ItemResult(FAILED, f"{error.__class__.__name__}: {error}")
    assert fetched is not None
    marker = (fetched.marker or item.marker)[:512]
    if fetched.content is None:  # "not modified"
        if document is None:
            return ItemResult(FAILED, "the source answered 'not modified' for an item Freshet does not hold")
        document_source_note(document=document, marker=marker, metadata=fetched.metadata or None)
        return ItemResult(UNCHANGED, document_id=document.pk)
    if len(fetched.content) > settings.MAX_UPLOAD_BYTES:
        return ItemResult(FAILED, f"{len(fetched.content):,} bytes is over MAX_UPLOAD_BYTES "
                                  f"({settings.MAX_UPLOAD_BYTES:,})")
    title = fetched.title or item.title
    uri = fetched.uri or item.uri
    if (
        document is not None
        and document.content_hash == hashlib.sha256(fetched.content).hexdigest()
        and (not title or title == document.title)
        and (not uri or uri == document.uri)
    ):
        # Same content (a failed document too: "Retry failed documents" is the way to run it again).
        document_source_note(document=document, marker=marker, metadata=fetched.metadata or None)
        return ItemResult(UNCHANGED, document_id=document.pk)
    result = document_ingest(source=source, external_id=item.external_id, content=fetched.content,
                             filename=fetched.filename, title=title, uri=uri, user=None, marker=marker,
                             metadata=fetched.metadata)
    outcome = NEW if result.created else CHANGED if result.changed else UNCHANGED
    return ItemResult(outcome, document_id=result.document.pk)


# --- The two ways to run a sync -------------------------------------------------------------


def fetch_tasks_per_source() -> int:
    """How many fetch tasks one source may have queued or running (its items in flight, in chunks)."""
    return max(1, math.ceil(settings.SYNC_ITEMS_IN_FLIGHT / settings.SYNC_CHUNK_ITEMS))


def source_sync(source: Source, *, trigger: str = "manual",
                progress: Callable[[SyncRun], None] | None = None) -> SyncRun:
    """Run a whole sync of `source` in this process and return the finished SyncRun.
    SyncAlreadyRunning / SourceNotSyncable as sync_start; `progress(run)` after each chunk."""
    run = sync_start(source=source, trigger=trigger)
    try:
        sync_list(run=run, progress=progress)
        while sync_chunk(run=run):
            if progress:
                run.refresh_from_db()
                progress(run)
        sync_finish_if_done(run=run)
    except BaseException as error:
        # Never leave the source's one running slot taken by a sync that stopped here.
        sync_fail(run=run, error=error)
        raise
    run.refresh_from_db()
    return run


def source_sync_request(source: Source, *, trigger: str = "manual") -> SyncRun:
    """Start a sync of `source` run by the `sync` queue's workers; returns the running SyncRun at
    once. SyncAlreadyRunning / SourceNotSyncable as sync_start."""
    from ingestion import tasks

    run = sync_start(source=source, trigger=trigger)
    transaction.on_commit(lambda: tasks.source_sync_list.apply_async(args=[run.pk], queue="sync"))
    return run
