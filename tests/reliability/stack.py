"""A Freshet of the test's own for the fault tests: a real Celery worker (with beat, for the
sweep) on its own Redis key prefix and var/ folder, the test's PostgreSQL database, and the
commands (`manage.py ingest`, `reconcile`, `index_rebuild`) run as subprocesses of that same
world. Short timeouts, so that recovery happens within a test: the sweep every 5 s, stuck
documents after 30 s, batch claims after 60 s, redelivery of a dead worker's messages after 90 s.
The encoder is plain torch (EMBEDDING_BACKEND): no graph export on the worker's first batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.conf import settings

from ingestion.models import Document, Source
from ingestion.search_index import SearchIndex
from tests.conftest import ROOT, _worker_env, wait_for

TIME_LIMITS = "50,55"  # soft, hard: below the claims (60 s) and the visibility timeout (90 s)


class Stack:
    def __init__(self, folder: Path, **env: str) -> None:
        self.folder = folder
        self.prefix = f"freshet-rel-{uuid.uuid4().hex[:8]}:"
        self.env = {
            **_worker_env(), "FRESHET_KEY_PREFIX": self.prefix, "FRESHET_VAR_DIR": str(folder / "var"),
            "PIPELINE_SWEEP_SECONDS": "5", "PIPELINE_STUCK_SECONDS": "30", "PIPELINE_BATCH_CLAIM_SECONDS": "60",
            "CELERY_VISIBILITY_TIMEOUT": "90", "SINK_COUNTDOWN_MAX_SECONDS": "30", "EVENT_RETRY_BACKOFF_MAX": "4",
            "PARSE_TIME_LIMIT_SECONDS": "3", "EMBEDDING_BACKEND": "torch",
            **{f"PIPELINE_TIME_LIMIT_{queue.upper()}": TIME_LIMITS for queue in settings.FRESHET_QUEUES},
        }
        if getattr(settings, "EMBEDDING_EXPORT_DIR", None):  # exported encoder graphs, shared with this run
            self.env["EMBEDDING_EXPORT_DIR"] = str(settings.EMBEDDING_EXPORT_DIR)
        self.env.update(env)
        self.worker: subprocess.Popen | None = None
        self.starts = 0

    # --- the worker ---------------------------------------------------------------------------
    def start(self) -> None:
        self.starts += 1
        log = self.folder / f"worker-{self.starts}.log"
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-B", "-s", str(self.folder / "beat"),
             "-Q", ",".join(settings.FRESHET_QUEUES), "-c", "2", "-l", "info",
             "-n", f"reliability-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(lambda: " ready." in log.read_text() or self.worker.poll() is not None, timeout=180,
                 message="the reliability worker to start")
        assert self.worker.poll() is None, log.read_text()[-3000:]

    def kill(self) -> None:
        """SIGKILL the worker, every process of it: nothing is acknowledged, nothing cleaned up."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=30)

    def stop(self) -> None:
        # Shown by pytest with a failing test's output: what the worker and the commands said.
        print(self.log()[-6000:])
        commands = self.folder / "commands.log"
        if commands.exists():
            print(commands.read_text()[-2000:])
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
        r = redis.Redis.from_url(settings.REDIS_URL)
        for key in r.scan_iter(f"{self.prefix}*", count=1000):
            r.delete(key)

    def alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def log(self) -> str:
        return "".join((self.folder / f"worker-{n}.log").read_text() for n in range(1, self.starts + 1))

    # --- commands -------------------------------------------------------------------------------
    def manage(self, *args: str, background: bool = False, timeout: float = 180):
        command = [sys.executable, "manage.py", *args]
        if background and args[0] == "ingest":  # its output goes to the log (see `log`)
            return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=(self.folder / "commands.log").open("a"),
                                    stderr=subprocess.STDOUT, text=True)
        if background:
            return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        return subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def ingest(self, name: str, files: dict[str, bytes], *, background: bool = False):
        """`manage.py ingest` of these files into source `name`; a file of a name given before is a
        new version of that document (the external id is the file's path)."""
        folder = self.folder / "files" / name
        folder.mkdir(parents=True, exist_ok=True)
        for filename, content in files.items():
            (folder / filename).write_bytes(content)
        paths = [str(folder / filename) for filename in files]
        done = self.manage("ingest", *paths, "--source", name, background=background)
        if not background:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def settled(self, name: str, count: int, *, timeout: float = 240) -> list[Document]:
        """The `count` documents of source `name`, once each is indexed or failed and the
        worker's queues are empty."""
        queues = redis.Redis.from_url(settings.REDIS_URL)

        def done():
            documents = Document.objects.filter(source__name=name)
            if documents.count() != count or documents.exclude(
                    status__in=[Document.Status.INDEXED, Document.Status.FAILED]).exists():
                return False
            return not any(queues.llen(f"{self.prefix}{q}") for q in settings.FRESHET_QUEUES)

        try:
            wait_for(done, timeout=timeout, interval=0.5, message=f"the {count} documents of {name} to settle")
        except pytest.fail.Exception:
            statuses = Counter(Document.objects.filter(source__name=name).values_list("status", flat=True))
            waiting = {q: queues.llen(f"{self.prefix}{q}") for q in settings.FRESHET_QUEUES}
            pytest.fail(f"The documents of {name} did not settle in {timeout:.0f} s: {dict(statuses)}, "
                        f"queues {waiting}")
        return list(Source.objects.get(name=name).documents.all())

    def index(self) -> SearchIndex:
        """The stack's search index, as its worker sees it."""
        if self.env.get("ELASTICSEARCH_URL"):
            from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex

            return ElasticsearchIndex(self.env["ELASTICSEARCH_URL"], self.env.get("ELASTICSEARCH_INDEX",
                                                                                  "freshet-chunks"), 30.0)
        from ingestion.search_index.lancedb_engine import LanceDBIndex

        return LanceDBIndex(self.folder / "var" / "lancedb")


def notes(name: str, count: int, *, start: int = 0) -> dict[str, bytes]:
    """`count` short notes (one chunk each), with words common to all and words of their own."""
    return {f"note-{i:03}.md": (f"# Note {i} of {name}\n\n" + " ".join(
        f"river{i}x{j} glacier delta {name}." for j in range(12))).encode() for i in range(start, start + count)}
