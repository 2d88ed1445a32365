"""Fault tests 6, 4, 8 and 1 of issue 14, on a Freshet of the module's own (tests/reliability/
stack.py: a real worker, LanceDB): hostile files, a late task, a rebuild under load, and the
worker SIGKILLed mid-embed."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from ingestion.models import Chunk, Document, Source
from ingestion.search_index import AccessFilter
from tests.conftest import wait_for
from tests.reliability.hostile import docx_bomb, pdf_endless_text, pdf_many_pages
from tests.reliability.stack import Stack, notes

# Slow on a busy machine: each waits for real recoveries (claims, redeliveries, the sweep).
pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(900)]
STAFF = AccessFilter.staff()


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("reliability"), PARSE_MAX_PDF_PAGES="100")
    stack.start()
    yield stack
    stack.stop()


def in_step(stack: Stack, documents: list[Document]) -> None:
    """The index holds exactly the database's chunks of these documents, once each."""
    index = stack.index()
    held = index.chunks_listed()
    expected = Counter(Chunk.objects.filter(document__in=documents).values_list("id", flat=True))
    assert expected and set(expected) <= set(held)
    assert all(held[c].version == d.version for d in documents for c in d.chunks.values_list("id", flat=True))
    assert index.count() == len(held)  # no chunk twice
    result = stack.manage("reconcile", "--source", documents[0].source.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hostile_files_fail_within_their_limits_and_the_worker_indexes_the_next(stack, transactional_db):
    stack.ingest("hostile", {"bomb.docx": docx_bomb(), "endless.pdf": pdf_endless_text(),
                             "pages.pdf": pdf_many_pages(300)})
    stack.ingest("hostile", notes("hostile", 1))
    documents = {d.filename: d for d in stack.settled("hostile", 4)}

    assert "decompression bomb" in documents["bomb.docx"].error
    assert "PARSE_TIME_LIMIT_SECONDS" in documents["endless.pdf"].error
    assert "300 pages, more than the 100 allowed" in documents["pages.pdf"].error
    assert {d.status for name, d in documents.items() if name != "note-000.md"} == {Document.Status.FAILED}
    assert documents["note-000.md"].status == Document.Status.INDEXED, documents["note-000.md"].error
    assert stack.alive() and "WorkerLostError" not in stack.log()


def test_a_late_task_with_an_older_version_leaves_the_newer_chunks(stack, transactional_db):
    stack.ingest("late", {"a.md": b"# A\n\nThe first version speaks of glaciers."})
    [document] = stack.settled("late", 1)
    stack.ingest("late", {"a.md": b"# A\n\nThe second version speaks of deltas."})
    wait_for(lambda: Document.objects.filter(pk=document.pk, version=2, status=Document.Status.INDEXED).exists(),
             timeout=120, message="version 2 indexed")
    # The late task: version 1's `chunked` event delivered again now, as a lost message that
    # the broker brought back would be.
    late = stack.manage("shell", "-c", (
        "from events.models import Event; from events.tasks import event_deliver; "
        f"e = Event.objects.filter(type='freshet.document.chunked', subject='documents/{document.pk}', "
        "data__version=1).first(); "
        "event_deliver.apply_async(args=[e.pk, 'ingestion.handlers.document_embed'], queue='embed')"))
    assert late.returncode == 0, late.stderr
    wait_for(lambda: f"Dropping embedding of document {document.pk} v1" in stack.log(), timeout=60,
             message="the late task to run")
    [document] = stack.settled("late", 1)

    held = stack.index().get_chunks([f"{document.pk}-0"])
    assert held[f"{document.pk}-0"].version == 2 and "second version" in held[f"{document.pk}-0"].text
    in_step(stack, [document])


def test_index_rebuild_under_searches_and_uploads_never_fails_a_search_and_misses_no_document(
        stack, transactional_db):
    stack.ingest("rebuild", notes("rebuild", 40))
    stack.settled("rebuild", 40)
    index = stack.index()
    generation = index.generation()
    searches, failures, empties = [0], [], [0]
    stop = threading.Event()

    def search() -> None:
        own = stack.index()  # a reader of its own, as the web process is
        vector = [0.1] * 384
        while not stop.is_set():
            try:
                for hits in (own.bm25("glacier delta", k=5, access=STAFF), own.knn(vector, k=5, access=STAFF)):
                    searches[0] += 1
                    empties[0] += not hits
            except Exception as error:  # noqa: BLE001 (what the test counts)
                failures.append(repr(error))

    readers = [threading.Thread(target=search) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        rebuild = stack.manage("index_rebuild", "--grace", "3", background=True)
        # Uploads while it runs: new documents, and new versions of old ones.
        for wave in range(3):
            stack.ingest("rebuild", notes("rebuild", 10, start=40 + 10 * wave))
            time.sleep(1)
        changed = {name: content + b" changed" for name, content in notes("rebuild", 5).items()}
        stack.ingest("rebuild", changed)
        output, _ = rebuild.communicate(timeout=240)
        assert rebuild.returncode == 0, output
        documents = stack.settled("rebuild", 70)
        time.sleep(1)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=30)

    assert searches[0] > 20 and failures == [] and empties[0] == 0, (searches, failures[:3], empties)
    assert index.generation() == generation + 1
    assert all(d.status == Document.Status.INDEXED for d in documents)
    in_step(stack, documents)
    assert f"Generation {generation + 1} serves" in output


def test_a_worker_sigkilled_mid_embed_of_200_documents_loses_and_duplicates_none(stack, transactional_db):
    stack.ingest("sigkill", notes("sigkill", 200), background=True)
    embedded = Source.objects.filter(name="sigkill")

    def mid_embed():
        source = embedded.first()
        if source is None:
            return False
        done = source.documents.filter(status=Document.Status.INDEXED).count()
        from events.models import Event
        subjects = [f"documents/{pk}" for pk in source.documents.values_list("pk", flat=True)]
        return (Event.objects.filter(type="freshet.chunks.embedded", subject__in=subjects).count() >= 10
                and done < 150)

    wait_for(mid_embed, timeout=180, interval=0.05, message="the embed stage under way")
    stack.kill()
    left = Document.objects.filter(source__name="sigkill").exclude(status=Document.Status.INDEXED).count()
    assert left > 0  # the kill left work undone
    stack.start()

    documents = stack.settled("sigkill", 200, timeout=480)
    assert Counter(d.status for d in documents) == {Document.Status.INDEXED: 200}
    in_step(stack, documents)
    source = Source.objects.get(name="sigkill")
    held = stack.index().chunks_listed(source_id=source.pk)
    assert len(held) == Chunk.objects.filter(document__source=source).count() == 200
