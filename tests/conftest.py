"""Shared fixtures: the real PostgreSQL (pytest-django's test database), Redis (db 15), and a
real Celery worker process consuming every queue against that same database and var/ folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.1,
             message: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy, or fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def client_for(user) -> APIClient:
    """An API client authenticated with `user`'s token (anonymous for None)."""
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # Throttle counters live in the cache, keyed by user id: every test starts from zero.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Every test its own channel layer object: channels_redis keeps state per event loop (the
    receive lock, connection pools), and each test's async_to_sync runs on a loop of its own; a
    layer carried over from an earlier test's loop once failed a socket test with "Lock ... is
    bound to a different event loop"."""
    from channels.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture(scope="session", autouse=True)
def _celery_configured():
    """Load the Celery app's configuration once, before any test overrides settings."""
    from config.celery_app import app

    assert app.conf.broker_url
    yield


def _worker_env() -> dict[str, str]:
    database = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": (
            f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "REDIS_URL": settings.REDIS_URL,
        "FRESHET_VAR_DIR": str(settings.VAR_DIR),
        "ELASTICSEARCH_URL": settings.ELASTICSEARCH_URL,
        "PYTHONUNBUFFERED": "1",
    })
    return env


@contextlib.contextmanager
def daphne_running(env: dict[str, str], log_path: Path):
    """The ASGI application under daphne (as `make run` serves it) on a free loopback port, with
    `env`, its output in `log_path`, for the length of the block; yields (url, pid). Fails the
    test with the log's tail if daphne exits before it answers."""
    from tests.faults import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

        def ready():
            if process.poll() is not None:
                pytest.fail(f"daphne exited with {process.returncode}: {log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{url}/accounts/login/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, timeout=120, interval=0.3, message="daphne to serve the login page")
            yield url, process.pid
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


_session_worker: list[subprocess.Popen] = []  # the session's worker process, once started


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real `celery worker` process on every Freshet queue, stopped at the end of the session."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", ",".join(settings.FRESHET_QUEUES),
         "-c", "2", "-l", "info", "-n", f"test-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=_worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    from config.celery_app import app

    def ready():
        if process.poll() is not None:
            pytest.fail(f"Celery worker exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        return app.control.ping(timeout=0.5)

    wait_for(ready, timeout=120, message="the Celery worker to answer ping")
    _session_worker.append(process)
    yield process
    _session_worker.clear()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def worker_idle(timeout: float = 180) -> None:
    """Wait until the worker has nothing queued, reserved or running: a test's database is
    flushed when it ends, and must not be truncated under a task still using it (a deadlock)."""
    import redis

    from config.celery_app import app

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    def idle() -> bool:
        if any(broker.llen(f"{settings.REDIS_KEY_PREFIX}{queue}") for queue in settings.FRESHET_QUEUES):
            return False
        inspect = app.control.inspect(timeout=1.0, limit=1)  # one worker: no need to wait out the timeout
        busy = [inspect.active() or {}, inspect.reserved() or {}, inspect.scheduled() or {}]
        return not any(tasks for state in busy for tasks in state.values())

    wait_for(idle, timeout=timeout, interval=0.5, message="the worker to finish its tasks")


@pytest.fixture(autouse=True)
def _worker_settled_before_the_flush(request):
    """A transactional test that commits a document queues work for the session's worker even if
    it did not ask for one (the signal publishes after commit). Once that worker runs, every such
    test waits for it to finish before its database is flushed: a TRUNCATE under a running task
    deadlocks, and the flush fails the test ("Database ... couldn't be flushed", seen in CI on
    test_idor). The database fixture is set up before this one (the django_db marker's autouse
    fixture comes first; a requested transactional_db is taken here), so this teardown runs
    before the flush."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (
        marker is not None and bool(marker.kwargs.get("transaction") or (marker.args and marker.args[0])))
    if transactional:
        request.getfixturevalue("transactional_db")
    yield
    if transactional and _session_worker and _session_worker[0].poll() is None:
        worker_idle()


@pytest.fixture
def worker(celery_worker, transactional_db):
    """For end-to-end tests: the worker runs, and test data is committed so it can see it. At
    the end, a wait until the worker is done with the test's work, before the flush."""
    if celery_worker.poll() is not None:
        pytest.fail("The Celery worker died during an earlier test.")
    yield celery_worker
    worker_idle()
