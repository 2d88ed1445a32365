"""Folder sources: how long a re-sync of an unchanged folder takes, and how fresh the watcher is.

1. Re-sync: a folder of 5,000 small files is synced once (every file new), then again with
   nothing changed; the second sync's wall time is the figure (target <= 15 s). It must cost no
   pipeline work: the benchmark checks that no `freshet.document.changed` was published.
2. Watch: `manage.py watch_folders` runs as its own process beside a Celery worker; 50 files are
   saved one at a time into a watched folder, and each one's time from the save to the first
   search hit for a phrase only it holds is taken (target p95 <= 2 s).

Runs in a scratch folder with its own database, index and worker (always isolated: 5,000
documents are not for a real stack).

    .venv/bin/python benchmarks/sync_folder.py [--files 5000] [--saves 50]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _stack import ROOT, django_setup, percentile, worker


def resync(files: int) -> None:
    from events.models import Event
    from ingestion.connectors import config_clean
    from ingestion.connectors.sync import source_sync
    from ingestion.models import Source

    folder = Path(tempfile.mkdtemp(prefix="freshet-bench-folder-"))
    rng = random.Random(5)
    for index in range(files):
        sub = folder / f"team-{index % 50:02}"
        sub.mkdir(exist_ok=True)
        words = " ".join(rng.choices(["fjord", "glacier", "moraine", "cirque", "tarn", "esker"], k=60))
        (sub / f"note-{index:05}.md").write_text(f"# Note {index}\n\n{words}\n")
    source = Source.objects.create(name="benchmark-folder", kind="folder",
                                   config=config_clean("folder", {"path": str(folder)}))
    started = time.perf_counter()
    first = source_sync(source, trigger="benchmark")
    first_seconds = time.perf_counter() - started
    changed_before = Event.objects.filter(type="freshet.document.changed").count()
    started = time.perf_counter()
    second = source_sync(source, trigger="benchmark")
    second_seconds = time.perf_counter() - started
    changed_after = Event.objects.filter(type="freshet.document.changed").count()
    print(f"folder of {files:,} files")
    print(f"  first sync:  {first_seconds:6.1f} s   ({first.items_new:,} new, {first.items_failed} failed)")
    print(f"  re-sync, nothing changed: {second_seconds:6.2f} s   ({second.items_unchanged:,} unchanged, "
          f"{second.items_new + second.items_changed} fetched, "
          f"{changed_after - changed_before} pipeline runs)")


def _purge_queues() -> None:
    """Drop the tasks the first sync queued (5,000 pipeline runs nobody here wants to wait for)."""
    import redis
    from django.conf import settings

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for key in broker.scan_iter(f"{settings.REDIS_KEY_PREFIX}*"):
        broker.delete(key)


def watch(env: dict[str, str], saves: int, timeout: float) -> None:
    from chat.retrieval import retrieve
    from ingestion.connectors import config_clean
    from ingestion.models import Document, Source
    from ingestion.search_index import AccessFilter

    folder = Path(tempfile.mkdtemp(prefix="freshet-bench-watch-"))
    Source.objects.create(name="benchmark-watch", kind="folder", config=config_clean("folder", {"path": str(folder)}))
    log = open(Path(os.environ["FRESHET_VAR_DIR"]) / "watcher.log", "w")
    watcher = subprocess.Popen([sys.executable, "manage.py", "watch_folders"], cwd=ROOT,
                               env={**os.environ, **env, "FOLDER_RESYNC_SECONDS": "0"}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Watching 1 folder" not in Path(log.name).read_text():
            if watcher.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"The watcher did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.5)
        run = "".join(random.Random(9).choices(string.ascii_lowercase, k=6)) + str(int(time.time()))
        latencies: list[float] = []
        stored: list[float] = []  # the watcher's own part: save -> document stored (pipeline queued)
        for index in range(-1, saves):  # file -1 warms the worker up and is not counted
            phrase = f"zq{run}w{index}"
            name = f"saved-{index + 1:03}.md"
            started = time.perf_counter()
            (folder / name).write_text(f"# Saved {index}\n\nThe phrase {phrase} is here.\n")
            seen_stored = False
            while True:
                if not seen_stored and Document.objects.filter(external_id=name).exists():
                    seen_stored = True
                    if index >= 0:
                        stored.append(time.perf_counter() - started)
                hits = retrieve(phrase, access=AccessFilter.staff(), k=1, mode="bm25")
                if hits:
                    if index >= 0:
                        latencies.append(time.perf_counter() - started)
                    break
                if time.perf_counter() - started > timeout * (4 if index < 0 else 1):
                    raise SystemExit(f"File {index} was not searchable after {timeout}s")
                time.sleep(0.01)
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=30)
        log.close()
    print(f"folder watch: a saved file -> its text retrievable, over {len(latencies)} files saved one at a time")
    print(f"  p50 {percentile(latencies, 50) * 1000:.0f} ms   p95 {percentile(latencies, 95) * 1000:.0f} ms   "
          f"max {max(latencies) * 1000:.0f} ms")
    print(f"  of which save -> document stored by the watcher: p50 {percentile(stored, 50) * 1000:.0f} ms   "
          f"p95 {percentile(stored, 95) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000, help="Files in the re-synced folder.")
    parser.add_argument("--saves", type=int, default=50, help="Files saved one at a time into the watched folder.")
    parser.add_argument("--timeout", type=float, default=60.0, help="Give up on one saved file after this long.")
    parser.add_argument("--skip-resync", action="store_true")
    parser.add_argument("--skip-watch", action="store_true")
    args = parser.parse_args()

    env = django_setup(isolated=True)
    # The watcher and the worker inherit the scratch folder, database and key prefix.
    env.update({key: os.environ[key] for key in ("FRESHET_VAR_DIR", "FRESHET_KEY_PREFIX")})
    if not args.skip_resync:
        resync(args.files)
        _purge_queues()
    if not args.skip_watch:
        with worker(env):
            watch(env, args.saves, args.timeout)


if __name__ == "__main__":
    main()
