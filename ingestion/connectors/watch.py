"""The folder watcher (`manage.py watch_folders`): a file saved, changed, moved or deleted under a
`folder` source becomes the same ingest or delete a sync would do, within a second, without a
sync. The watch is watchfiles (inotify on Linux); changes are grouped until they pause for
FOLDER_WATCH_DEBOUNCE_MS (at most a second), so an editor's save-by-rename or a copy of many
files is taken in once. A full sync of every folder source at start and every
FOLDER_RESYNC_SECONDS is the safety net for what a watcher can miss (changes while it was down,
an overflowing event queue, a network file system that sends no events).

The work for one file runs here (ingestion.connectors.sync.item_sync: read it, store it if its
content changed); the pipeline then runs on the workers as for any other change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from watchfiles import Change, watch

from ingestion.connectors.base import connector_for
from ingestion.connectors.folder import FolderConnector
from ingestion.connectors.sync import SyncAlreadyRunning, item_sync, source_sync_request
from ingestion.models import Document, Source

logger = logging.getLogger(__name__)

MAX_GROUP_MS = 1000  # however long changes keep coming, they are taken in at least once a second
RELOAD_SECONDS = 5  # how often the watcher looks for folder sources added, changed or removed


def folder_sources() -> list[Source]:
    return list(Source.objects.filter(kind=Source.Kind.FOLDER).order_by("pk"))


def _signature(sources: list[Source]) -> tuple:
    return tuple((s.pk, repr(sorted(s.config.items()))) for s in sources)


def path_changed(*, source: Source, path: Path) -> str:
    """Take in one change of `path` under `source`'s folder; what was done ("ingested",
    "unchanged", "deleted", "failed", "ignored"), for the log and the tests."""
    connector: FolderConnector = connector_for(Source.Kind.FOLDER)  # type: ignore[assignment]
    root = connector.root(source)
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        return "ignored"
    if not path.exists():
        # The path is gone: a file, or a whole folder moved away or removed (its files' events
        # may not all come, so every document below it goes). What the disk holds now decides,
        # not the event: an editor's save-by-rename reports the file deleted, then added.
        gone = Document.objects.filter(source=source).filter(external_id=relative) | \
            Document.objects.filter(source=source, external_id__startswith=f"{relative}/")
        count = 0
        for document in gone:
            document.delete()  # the post_delete signal takes it out of the index
            count += 1
        return "deleted" if count else "ignored"
    if path.is_dir():
        # A folder created or moved in: each file below it, as a sync would.
        results = [path_changed(source=source, path=child)
                   for child in sorted(path.rglob("*")) if child.is_file()]
        return "ingested" if "ingested" in results else "ignored"
    item = connector.item_at(source, path)
    if item is None:
        return "ignored"
    known = (Document.objects.filter(source=source, external_id=item.external_id)
             .values_list("marker", flat=True).first())
    if known == item.marker:
        return "unchanged"
    result = item_sync(source=source, item=item)
    if result.outcome == "failed":
        logger.warning("Folder source %s: %s not taken in: %s", source.pk, item.external_id, result.message)
        return "failed"
    return "ingested" if result.outcome in ("new", "changed") else "unchanged"


def changes_apply(changes: set[tuple[Change, str]], sources: list[Source]) -> list[tuple[str, str]]:
    """Apply one group of watchfiles changes to every folder source whose folder holds them."""
    done: list[tuple[str, str]] = []
    roots = [(source, FolderConnector.root(source)) for source in sources]
    # Deletions first: a file moved within the folder arrives as (deleted old, added new).
    for change, raw in sorted(changes, key=lambda c: (c[0] != Change.deleted, c[1])):
        path = Path(raw)
        for source, root in roots:
            if path == root or not path.is_relative_to(root):
                continue
            try:
                outcome = path_changed(source=source, path=path)
            except Exception:  # noqa: BLE001  (one file's trouble never stops the watcher)
                logger.exception("Folder source %s: taking in %s failed", source.pk, path)
                outcome = "failed"
            done.append((raw, outcome))
            logger.info("Folder source %s: %s %s -> %s", source.pk, change.name, path, outcome)
    return done


def folders_resync(sources: list[Source]) -> None:
    """The safety net: a full sync of each folder source (on the workers)."""
    for source in sources:
        try:
            source_sync_request(source, trigger="watch")
        except SyncAlreadyRunning:
            pass


def folders_watch(*, stop: Callable[[], bool] = lambda: False) -> None:
    """Watch every folder source until `stop()` is true; picks up sources added, changed or
    removed within RELOAD_SECONDS."""
    resync_every = settings.FOLDER_RESYNC_SECONDS
    next_resync = time.monotonic()
    while not stop():
        close_old_connections()
        sources = folder_sources()
        if resync_every and time.monotonic() >= next_resync:
            folders_resync(sources)
            next_resync = time.monotonic() + resync_every
        roots = sorted({str(FolderConnector.root(s)) for s in sources if FolderConnector.root(s).is_dir()})
        if not roots:
            time.sleep(1 if sources else RELOAD_SECONDS / 5)
            continue
        signature = _signature(sources)
        logger.info("Watching %d folder(s): %s", len(roots), ", ".join(roots))
        checked = time.monotonic()

        class _Stop:
            @staticmethod
            def is_set() -> bool:
                return stop()

        for changes in watch(*roots, watch_filter=None, debounce=MAX_GROUP_MS,
                             step=max(settings.FOLDER_WATCH_DEBOUNCE_MS, 1), rust_timeout=1000,
                             yield_on_timeout=True, stop_event=_Stop(), raise_interrupt=False):
            close_old_connections()
            if changes:
                changes_apply(changes, sources)
            if time.monotonic() - checked >= RELOAD_SECONDS:
                checked = time.monotonic()
                if _signature(folder_sources()) != signature:
                    break  # sources changed: watch the new set of folders
                if resync_every and time.monotonic() >= next_resync:
                    break
