"""Outages during ingestion, provoked for real (tests/faults.py): a worker of this module's own,
whose broker and Redis are a redis-server the test stops and starts, and whose database
connections go through a forwarder the test cuts. Documents are ingested by `manage.py ingest`
in a subprocess of that same world. Whatever breaks, every document ends indexed, once, and
none is left pending or processing (the retries and the sweep, ingestion/pipeline/recovery.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.conf import settings

from events.models import Event
from ingestion.models import Document, Source
from ingestion.search_index import search_index
from tests.conftest import ROOT, _worker_env, wait_for
from tests.faults import RedisServer, TcpForwarder

pytestmark = pytest.mark.worker

STUCK_SECONDS = 30  # the sweep's timeout in this module's worker (the smallest allowed)
# A batch killed by the outage keeps its documents' claims until they expire (its process could
# not release them with Redis down): 300 s by default, longer than the tests wait. Here 60 s, so
# every queue's hard time limit goes under it (the settings refuse a claim that a running batch
# could outlive; the parse limit under the parse queue's soft limit).
CLAIM_SECONDS = 60
TIME_LIMITS = {f"PIPELINE_TIME_LIMIT_{queue.upper()}": "45,55" for queue in settings.FRESHET_QUEUES}


class Outages:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.redis = RedisServer(folder)
        database = settings.DATABASES["default"]
        self.db = TcpForwarder((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
        self.log = folder / "worker.log"
        base = _worker_env()
        self.env = {**base, "REDIS_URL": self.redis.url, "CELERY_BROKER_URL": self.redis.url,
                    "PIPELINE_SWEEP_SECONDS": "5", "PIPELINE_STUCK_SECONDS": str(STUCK_SECONDS),
                    "PIPELINE_BATCH_CLAIM_SECONDS": str(CLAIM_SECONDS), **TIME_LIMITS, "PARSE_TIME_LIMIT_SECONDS": "30",
                    "EVENT_RETRY_BACKOFF_MAX": "4"}
        # The worker reaches PostgreSQL through the forwarder; the ingest command directly.
        self.worker_env = {**self.env, "DATABASE_URL": base["DATABASE_URL"].replace(
            f":{database['PORT'] or 5432}/", f":{self.db.port}/")}
        self.worker: subprocess.Popen | None = None

    def start(self) -> None:
        self.redis.start()
        self.db.restore()
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-B", "-s", str(self.folder / "beat"),
             "-Q", ",".join(settings.FRESHET_QUEUES), "-c", "2", "-l", "info", "-n", f"outages-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.worker_env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: " ready." in self.log.read_text() or self.worker.poll() is not None, timeout=120,
                 message="the outage worker to start")
        assert self.worker.poll() is None, self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.worker is not None:
            with contextlib.suppress(ProcessLookupError):  # a test may have seen the worker exit
                os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
        self.db.cut()
        self.redis.stop(keep_data=False)

    def ingest(self, name: str, count: int) -> Source:
        """`manage.py ingest` of `count` notes into the source `name` (in the background)."""
        notes = self.folder / name
        notes.mkdir()
        for i in range(count):
            (notes / f"note-{i:03}.md").write_text(
                f"# Note {i} of {name}\n\n" + " ".join(f"fact{i}x{j} about {name} outages." for j in range(40)))
        subprocess.Popen([sys.executable, "manage.py", "ingest", str(notes), "--source", name], cwd=ROOT,
                         env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return wait_for(lambda: Document.objects.filter(source__name=name).count() == count
                        and Source.objects.get(name=name), timeout=120, message=f"{count} documents ingested")

    def settled(self, source: Source, *, timeout: float = 240) -> list[Document]:
        """Every document of `source` indexed or failed, and the worker's queues empty."""
        queues = redis.Redis.from_url(self.redis.url)

        def done():
            if source.documents.exclude(status__in=[Document.Status.INDEXED, Document.Status.FAILED]).exists():
                return False
            return not any(queues.llen(f"{settings.REDIS_KEY_PREFIX}{q}") for q in settings.FRESHET_QUEUES)

        try:
            wait_for(done, timeout=timeout, interval=0.5, message=f"the documents of {source.name} to settle")
        except pytest.fail.Exception:
            # Say where it stands: each unsettled document, the queues, the end of the worker's log.
            left = list(source.documents.exclude(status__in=[Document.Status.INDEXED, Document.Status.FAILED])
                        .values_list("pk", "status", "version", "updated_at"))
            depth = {q: queues.llen(f"{settings.REDIS_KEY_PREFIX}{q}") for q in settings.FRESHET_QUEUES}
            pytest.fail(f"Documents of {source.name} not settled after {timeout}s: {left}; queues {depth}; "
                        f"worker log:\n{self.log.read_text()[-6000:]}")
        return list(source.documents.all())

    def worker_log(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def outages(django_db_setup, tmp_path_factory):
    stack = Outages(tmp_path_factory.mktemp("outages"))
    stack.start()
    yield stack
    stack.stop()


def assert_indexed_once_each(documents: list[Document]) -> None:
    assert documents and all(d.status == Document.Status.INDEXED for d in documents), \
        Counter((d.status, d.error) for d in documents)
    for document in documents:
        versions = search_index().chunk_versions(document_id=document.pk)
        assert len(versions) == document.chunk_count == document.chunks.count() > 0
        assert set(versions.values()) == {document.version}
    subjects = [f"documents/{d.pk}" for d in documents]
    indexed = Counter(Event.objects.filter(type="freshet.document.indexed", subject__in=subjects)
                      .values_list("subject", flat=True))
    assert indexed == Counter(subjects), "each document indexed exactly once"


def first_parsed(source: Source) -> bool:
    subjects = [f"documents/{pk}" for pk in source.documents.values_list("pk", flat=True)]
    return Event.objects.filter(type="freshet.document.parsed", subject__in=subjects).exists()


def test_a_database_outage_during_parse_and_chunk_delays_documents_and_loses_none(outages, transactional_db):
    source = outages.ingest("db-outage", 12)
    wait_for(lambda: first_parsed(source), timeout=60, interval=0.02, message="the first document parsed")
    outages.db.cut()  # open connections drop, new ones are refused
    time.sleep(6)
    outages.db.restore()

    assert_indexed_once_each(outages.settled(source))
    log = outages.worker_log()
    assert "OperationalError" in log and "; try 2 of" in log  # the outage was met, and retried


def test_a_redis_outage_during_parse_and_chunk_delays_documents_and_loses_none(outages, transactional_db):
    source = outages.ingest("redis-outage", 12)
    wait_for(lambda: first_parsed(source), timeout=60, interval=0.02, message="the first document parsed")
    outages.redis.stop(keep_data=True)  # a restart: the queued tasks come back, those in flight fail
    time.sleep(5)
    outages.redis.start()

    assert_indexed_once_each(outages.settled(source))
    assert "ConnectionError" in outages.worker_log()


def test_redis_restarted_empty_during_an_ingest_of_100_documents_loses_none(outages, transactional_db):
    source = outages.ingest("redis-empty", 100)
    wait_for(lambda: source.documents.filter(status=Document.Status.INDEXED).count() >= 10, timeout=120,
             interval=0.05, message="the first documents indexed")
    outages.redis.stop(keep_data=False)  # queued tasks, pending sets and vectors vanish
    outages.redis.start()
    assert source.documents.exclude(status=Document.Status.INDEXED).exists()  # the crash left work undone

    assert_indexed_once_each(outages.settled(source, timeout=STUCK_SECONDS * 8))


def test_a_redis_restart_while_the_worker_holds_unacknowledged_tasks_keeps_it_consuming(outages, transactional_db):
    """The worker idles on a BRPOP while it holds an acknowledged-late task (one due later), and
    Redis restarts: it once crashed on its way to reconnecting ("Unrecoverable error:
    AttributeError: 'NoneType' object has no attribute 'hostname'", config/celery_app.py
    RedisTransport), and no queue was consumed again."""
    from config.celery_app import app

    def received(task_id: str) -> bool:
        assert outages.worker.poll() is None, f"the worker exited: {outages.worker_log()[-6000:]}"
        return f"[{task_id}] received" in outages.worker_log()

    with app.connection_for_write(url=outages.redis.url) as connection:
        held = app.send_task("ingestion.tasks.pipeline_sweep", countdown=600, queue="sync", connection=connection)
    wait_for(lambda: received(held.id), timeout=30, message="the worker to hold a task due later")
    time.sleep(1)  # its BRPOP outstanding again
    outages.redis.stop(keep_data=True)
    time.sleep(2)
    outages.redis.start()

    with app.connection_for_write(url=outages.redis.url) as connection:
        probe = app.send_task("ingestion.tasks.pipeline_sweep", queue="sync", connection=connection)
    wait_for(lambda: received(probe.id), timeout=90, interval=0.5, message="the worker to consume after the restart")
    assert "Unrecoverable error" not in outages.worker_log()
