"""Fixtures of the security tests: a paused worker (so the index's copy of access lags behind the
database for as long as a test wants), and daphne serving the real ASGI application."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import ROOT, _worker_env, wait_for, worker_idle


@contextlib.contextmanager
def worker_paused(process: subprocess.Popen):
    """Stop the worker's process group (SIGSTOP) for the block, after it has finished what it had:
    what the block queues (index access updates, deletions, uploads) waits in the broker, so the
    index keeps its old copy of every source's access while the database changes."""
    worker_idle()
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


UPLOAD_LIMIT = 1024 * 1024  # MAX_UPLOAD_BYTES of the daphne below: small, so oversized bodies are cheap


@pytest.fixture(scope="module")
def daphne_server(django_db_setup, tmp_path_factory):
    """The ASGI application under daphne (DEBUG off, as deployed) on a free loopback port, on the
    test database and var/ folder, with its own TMPDIR (where Django would spool an upload) and
    MAX_UPLOAD_BYTES = UPLOAD_LIMIT."""
    tmpdir = tmp_path_factory.mktemp("daphne-tmp")
    env = _worker_env()
    env.update({"DJANGO_DEBUG": "0", "TMPDIR": str(tmpdir), "MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
                "MAX_BULK_UPLOAD_BYTES": str(2 * UPLOAD_LIMIT)})
    port = free_port()
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            pytest.fail(f"daphne exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/accounts/login/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(ready, timeout=120, interval=0.3, message="daphne to answer")
    yield SimpleNamespace(url=url, tmpdir=tmpdir, port=port, log=log_path, pid=process.pid)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def daphne_url(daphne_server) -> str:
    return daphne_server.url
