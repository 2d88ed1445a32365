"""Fixtures for the search-index contract suite: one `engine` fixture, one test per engine.

Elasticsearch is the cluster at ELASTICSEARCH_URL when it is set (certifying a real cluster), else
the noida-db emulator, started once per session on a free loopback port. Every test gets a fresh
index (a unique alias) and drops it afterwards. No Django database is needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.search_index.base import SearchIndex

ENGINES = ["lancedb", "elasticsearch"]
EMULATOR_START_TIMEOUT = 60.0
ALIAS_PREFIX = f"freshet-test-{uuid.uuid4().hex[:8]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _noida_db() -> str:
    here = Path(sys.executable).parent
    found = shutil.which("noida-db", path=str(here)) or shutil.which("noida-db")
    if found is None:
        pytest.fail("noida-db is not installed (pip install noida-db), and ELASTICSEARCH_URL is not set: "
                    "there is no Elasticsearch to run the contract suite against.")
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def elasticsearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL serving the Elasticsearch 8 API: ELASTICSEARCH_URL, or an emulator for the session."""
    configured = os.environ.get("ELASTICSEARCH_URL", "").strip()
    if configured:
        yield configured
        return
    workdir = tmp_path_factory.mktemp("noida-db")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "noida-db.log"
    command = [_noida_db(), "start", "--only", "elasticsearch", "--elasticsearch-port", str(port),
               "--data-dir", str(workdir / "data")]
    with open(log_path, "wb") as log:
        # Its own session, so the wrapper script and the server it spawns stop together.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + EMULATOR_START_TIMEOUT
        while not _answers(url):
            if process.poll() is not None:
                log = log_path.read_text(errors="replace")
                pytest.fail(f"noida-db exited with {process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                log = log_path.read_text(errors="replace")
                pytest.fail(f"noida-db did not answer at {url} within {EMULATOR_START_TIMEOUT:.0f} s:\n{log}")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SearchIndex]:
    """A fresh, empty index of each engine."""
    if request.param == "lancedb":
        from ingestion.search_index.lancedb_engine import LanceDBIndex

        index: SearchIndex = LanceDBIndex(tmp_path / "lancedb")
    else:
        # Imported here: the Elasticsearch engine needs Django configured (events.tasks).
        from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex

        url = request.getfixturevalue("elasticsearch_url")
        index = ElasticsearchIndex(url=url, alias=f"{ALIAS_PREFIX}-{uuid.uuid4().hex[:8]}", timeout=30.0)
    yield index
    index.drop()
