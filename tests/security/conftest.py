"""Fixtures of the security tests: a paused worker (so the index's copy of access lags behind the
database for as long as a test wants), and daphne serving the real ASGI application."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from types import SimpleNamespace

import pytest

from tests.conftest import _worker_env, daphne_running, worker_idle


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
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with daphne_running(env, log_path) as (url, pid):
        port = int(url.rsplit(":", 1)[1])
        yield SimpleNamespace(url=url, tmpdir=tmpdir, port=port, log=log_path, pid=pid)


@pytest.fixture(scope="module")
def daphne_url(daphne_server) -> str:
    return daphne_server.url
