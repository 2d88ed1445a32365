"""The folder watcher (`manage.py watch_folders`) as a real process on a real folder, with a
real Celery worker and search index: the index follows a file created, changed, renamed and
deleted, and no sync is ever called."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from chat.retrieval import retrieve
from ingestion.models import Document, SyncRun
from ingestion.search_index import AccessFilter, search_index
from tests.conftest import ROOT, _worker_env, wait_for
from tests.ingestion.connectors.conftest import folder_source

pytestmark = pytest.mark.worker


@pytest.fixture
def watcher(worker, tmp_path):
    """Start the watcher once the test's folder source exists (call the returned function)."""
    started: list[subprocess.Popen] = []
    log_path = tmp_path / "watcher.log"

    def start() -> None:
        env = {**_worker_env(), "FOLDER_RESYNC_SECONDS": "0", "FOLDER_WATCH_DEBOUNCE_MS": "100", "LOG_LEVEL": "INFO"}
        log = open(log_path, "w")
        process = subprocess.Popen([sys.executable, "manage.py", "watch_folders"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)

        def watching():
            if process.poll() is not None:
                pytest.fail(f"The watcher exited with {process.returncode}: {log_path.read_text()[-3000:]}")
            return "Watching 1 folder" in log_path.read_text()
        wait_for(watching, timeout=120, message="the watcher to watch the folder")
        time.sleep(0.5)  # the watch itself starts just after that line

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def indexed(source, external_id: str, *, version: int = 1) -> Document:
    def done():
        document = source.documents.filter(external_id=external_id, version__gte=version).first()
        return document if document is not None and document.status == Document.Status.INDEXED else None
    return wait_for(done, timeout=240, message=f"{external_id} v{version} indexed")


def test_the_index_follows_files_created_changed_renamed_and_deleted(watcher, folder):
    source = folder_source(folder)
    watcher()

    (folder / "notes").mkdir()
    (folder / "notes/kayak.md").write_text("Kayak launches are from the north jetty only.")
    document = indexed(source, "notes/kayak.md")
    assert retrieve("kayak launches jetty", access=AccessFilter(), k=3)[0].document_id == document.pk

    (folder / "notes/kayak.md").write_text("Kayak launches moved to the south slipway in spring.")
    document = indexed(source, "notes/kayak.md", version=2)
    stored = search_index().get_chunks([c.id for c in document.chunks.all()])
    assert any("south slipway" in chunk.text for chunk in stored.values())

    (folder / "notes/kayak.md").rename(folder / "notes/paddling.md")
    renamed = indexed(source, "notes/paddling.md")
    wait_for(lambda: not source.documents.filter(external_id="notes/kayak.md").exists(), timeout=30,
             message="the old name to go")
    old_chunks = [f"{document.pk}-{i}" for i in range(document.chunk_count)]
    wait_for(lambda: not search_index().get_chunks(old_chunks), timeout=60, message="the old name's chunks to go")

    (folder / "notes/paddling.md").unlink()
    wait_for(lambda: not source.documents.exists(), timeout=30, message="the deleted file's document to go")
    renamed_chunks = [f"{renamed.pk}-{i}" for i in range(renamed.chunk_count)]
    wait_for(lambda: not search_index().get_chunks(renamed_chunks), timeout=60, message="its chunks to go")

    assert not SyncRun.objects.filter(source=source).exists()
