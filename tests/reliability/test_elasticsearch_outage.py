"""Fault test 2: the Elasticsearch-API server (the noida-db emulator, a process of this test's
own) stopped for 30 s during an ingest of 100 documents, then started again on the same port and
data folder: every document ends indexed, none failed (the index stage's drains back off and
the sweep takes up what they left; nothing fails for an outage)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from ingestion.models import Chunk, Document
from tests.conftest import wait_for
from tests.contract.conftest import _answers, _free_port, _noida_db
from tests.reliability.stack import Stack, notes

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(900)]
OUTAGE_SECONDS = 30


class Emulator:
    def __init__(self, folder) -> None:
        self.port, self.folder = _free_port(), folder
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_noida_db(), "start", "--only", "elasticsearch", "--elasticsearch-port", str(self.port),
             "--data-dir", str(self.folder / "data")],
            stdout=(self.folder / "noida.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: _answers(self.url), timeout=60, message="the Elasticsearch emulator to answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)


@pytest.fixture
def outage(django_db_setup, tmp_path):
    emulator = Emulator(tmp_path)
    emulator.start()
    stack = Stack(tmp_path, ELASTICSEARCH_URL=emulator.url, EVENT_RETRY_MAX="3")
    stack.start()
    yield emulator, stack
    stack.stop()
    emulator.stop()


def test_elasticsearch_down_30_s_during_an_ingest_of_100_documents_fails_none(outage, transactional_db):
    emulator, stack = outage
    stack.ingest("es-outage", notes("es-outage", 100), background=True)
    wait_for(lambda: Document.objects.filter(source__name="es-outage", status=Document.Status.INDEXED).count() >= 5,
             timeout=240, interval=0.2, message="the first documents indexed")
    emulator.stop()
    time.sleep(OUTAGE_SECONDS)
    assert Document.objects.filter(source__name="es-outage").exclude(status=Document.Status.INDEXED).exists()
    emulator.start()

    documents = stack.settled("es-outage", 100, timeout=480)
    assert Counter(d.status for d in documents) == {Document.Status.INDEXED: 100}, \
        Counter((d.status, d.error) for d in documents)
    held = stack.index().chunks_listed()
    assert set(held) == set(Chunk.objects.filter(document__in=documents).values_list("id", flat=True))
    assert "ConnectionError" in stack.log() or "TransientError" in stack.log()  # the outage was met
    assert stack.manage("reconcile", "--source", "es-outage").returncode == 0
