"""End to end through a real Celery worker process, real PostgreSQL, Redis and LanceDB."""

import time

import pytest

from chat.retrieval import retrieve
from config.redis_client import redis_client
from events.models import Event
from ingestion.models import Chunk, Document
from ingestion.pipeline.stages import INDEX
from ingestion.search_index import AccessFilter, search_index
from ingestion.services import (
    document_chunking_set,
    document_delete,
    document_ingest,
    document_reindex,
    source_delete,
)
from ingestion.tasks import pipeline_sweep
from tests.conftest import wait_for
from tests.factories import SourceFactory
from tests.samples import PNG_BYTES, pdf_bytes

pytestmark = pytest.mark.worker

STAGES = [
    "freshet.document.changed",
    "freshet.document.parsed",
    "freshet.document.chunked",
    "freshet.chunks.embedded",
    "freshet.document.indexed",
]


def settled(document: Document, *, version: int | None = None) -> Document:
    def done():
        document.refresh_from_db()
        if version is not None and document.version != version:
            return False
        return document.status in (Document.Status.INDEXED, Document.Status.FAILED) and document
    return wait_for(done, timeout=90, message=f"document {document.pk} to be indexed or failed")


def event_types(document: Document) -> list[str]:
    events = Event.objects.filter(subject=f"documents/{document.pk}").order_by("time")
    return list(events.values_list("type", flat=True))


def long_text(marker: str, paragraphs: int) -> str:
    return "\n\n".join(
        f"Paragraph {i} about {marker}. " + " ".join(f"word{i}x{j}" for j in range(60)) for i in range(paragraphs)
    )


def test_it_indexes_a_file_into_searchable_chunks(worker):
    source = SourceFactory()
    result = document_ingest(source=source, external_id="notes/glacier.txt", filename="glacier.txt",
                             content=long_text("glaciology", 6).encode(), uri="file:///notes/glacier.txt")
    document = settled(result.document)

    assert document.status == Document.Status.INDEXED, document.error
    chunks = list(Chunk.objects.filter(document=document))
    assert len(chunks) >= 2 and document.chunk_count == len(chunks)
    assert all(c.token_count <= 254 for c in chunks)
    stored = search_index().get_chunks([c.id for c in chunks])
    assert sorted(stored) == sorted(f"{document.pk}-{i}" for i in range(len(chunks)))
    first = stored[f"{document.pk}-0"]
    assert first.text == chunks[0].text
    assert (first.document_id, first.source_id, first.version) == (document.pk, source.pk, 1)
    assert first.title == "glacier.txt" and first.uri == "file:///notes/glacier.txt"
    assert len(first.vector) == 384 and first.public is True
    assert event_types(document) == STAGES

    hits = retrieve("glaciology paragraph", access=AccessFilter(), k=5)
    assert hits and hits[0].document_id == document.pk


def test_new_content_replaces_old_chunks_and_same_content_is_not_reembedded(worker):
    source = SourceFactory()
    first = document_ingest(source=source, external_id="a", content=long_text("volcanoes", 6).encode())
    document = settled(first.document)
    old_ids = set(search_index().chunk_versions(document_id=document.pk))
    assert len(old_ids) >= 2

    result = document_ingest(source=source, external_id="a", content=b"Short note about tides only.")
    assert result.changed and result.document.pk == document.pk
    document = settled(result.document, version=2)
    assert document.status == Document.Status.INDEXED
    assert search_index().chunk_versions(document_id=document.pk) == {f"{document.pk}-0": 2}
    # The second version replaced an indexed one (its subscribers look for answers and votes).
    indexed = Event.objects.filter(subject=f"documents/{document.pk}", type="freshet.document.indexed")
    assert [e.data["replaced"] for e in indexed.order_by("time")] == [False, True]
    assert [h.document_id for h in retrieve("tides", access=AccessFilter(), k=3)][:1] == [document.pk]
    assert not [h for h in retrieve("volcanoes", access=AccessFilter(), k=20, mode="bm25")
                if h.document_id == document.pk]

    embedded_before = event_types(document).count("freshet.chunks.embedded")
    again = document_ingest(source=source, external_id="a", content=b"Short note about tides only.")
    assert not again.changed
    document.save()  # a save without a change, as the admin does: parse sees the same fingerprint
    wait_for(lambda: "freshet.document.unchanged" in event_types(document), message="unchanged event")
    assert event_types(document).count("freshet.chunks.embedded") == embedded_before
    document.refresh_from_db()
    assert document.status == Document.Status.INDEXED


def test_a_burst_of_documents_is_embedded_and_indexed_once_each(worker):
    """Documents arriving together are embedded and indexed in shared batches; each one's own
    task then finds its part done and does nothing."""
    source = SourceFactory()
    documents = [document_ingest(source=source, external_id=f"burst-{i}", content=f"Burst note {i}.".encode())
                 .document for i in range(30)]
    for document in documents:
        assert settled(document).status == Document.Status.INDEXED
    for document in documents:
        stages = event_types(document)
        assert stages.count("freshet.chunks.embedded") == 1 and stages.count("freshet.document.indexed") == 1, stages
        assert list(search_index().chunk_versions(document_id=document.pk).values()) == [1]
    subjects = [f"documents/{document.pk}" for document in documents]
    indexed = Event.objects.filter(type="freshet.document.indexed", subject__in=subjects)
    assert max(event.data["batch"] for event in indexed) > 1  # written to the index together


def test_the_documents_of_a_batch_whose_process_died_are_indexed_by_the_sweep(worker):
    document = settled(document_ingest(source=SourceFactory(), external_id="orphan",
                                       content=b"Orphaned by a dead batch.").document)
    # What a batch leaves behind when its process is killed mid-write: the document processing,
    # in flight in the index stage with its claim expired, its own task gone, its vectors too.
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PROCESSING)
    stale = time.time() - INDEX.claims.claim_seconds - 1
    redis_client().zadd(INDEX.claims.inflight_key, {f"{document.pk}:1": stale})

    pipeline_sweep()  # the periodic sweep

    assert settled(document).status == Document.Status.INDEXED
    assert event_types(document).count("freshet.document.indexed") == 2
    for waiting in (INDEX.claims.inflight_key, INDEX.claims.pending_key):
        assert redis_client().zscore(waiting, f"{document.pk}:1") is None


def test_reindex_runs_the_pipeline_again(worker):
    document = settled(document_ingest(source=SourceFactory(), external_id="r", content=b"Reindex me.").document)
    document_reindex(document=document)
    document = settled(document, version=2)
    assert document.status == Document.Status.INDEXED
    assert event_types(document).count("freshet.chunks.embedded") == 2


def test_a_document_of_its_own_chunking_is_cut_again_and_its_source_is_not(worker):
    source = SourceFactory(chunk_size=100, chunk_overlap=10)
    document = settled(document_ingest(source=source, external_id="own", content=long_text("moraines", 6).encode())
                       .document)
    neighbour = settled(document_ingest(source=source, external_id="neighbour",
                                        content=long_text("eskers", 6).encode()).document)
    small = document.chunk_count
    assert small >= 4

    assert document_chunking_set(document=document, size=400, overlap=20)
    assert not document_chunking_set(document=document, size=400, overlap=20)  # nothing new: no rerun
    document = settled(document, version=2)
    assert document.status == Document.Status.INDEXED, document.error
    assert document.chunk_count < small
    tokens = list(Chunk.objects.filter(document=document).values_list("token_count", flat=True))
    assert max(tokens) > 100 and all(t <= 400 for t in tokens)
    assert sorted(search_index().chunk_versions(document_id=document.pk).values()) == [2] * document.chunk_count
    neighbour.refresh_from_db()
    assert (neighbour.version, neighbour.chunk_count) == (1, small)


def test_deleting_a_document_or_a_source_removes_their_chunks(worker):
    source = SourceFactory()
    keep = settled(document_ingest(source=source, external_id="keep", content=b"Keep this fact.").document)
    drop = settled(document_ingest(source=source, external_id="drop", content=b"Drop this fact.").document)
    other = SourceFactory()
    other_doc = settled(document_ingest(source=other, external_id="x", content=b"Another source's fact.").document)

    drop_id, keep_id = drop.pk, keep.pk
    assert search_index().chunk_versions(document_id=drop_id)
    document_delete(document=drop)
    wait_for(lambda: not search_index().chunk_versions(document_id=drop_id), message="chunks of the deleted document")
    assert search_index().chunk_versions(document_id=keep_id)

    source_delete(source=source)
    wait_for(lambda: not search_index().chunk_versions(document_id=keep_id), message="chunks of the deleted source")
    assert search_index().chunk_versions(document_id=other_doc.pk)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", "PDF is corrupt"),
        ("junk.bin", bytes(range(256)) * 16, "binary content"),
        ("empty.txt", b"", "empty"),
        ("photo.png", PNG_BYTES, "PNG image"),
    ],
)
def test_bad_files_fail_with_a_reason_and_the_worker_goes_on(worker, name, content, reason):
    source = SourceFactory()
    bad = settled(document_ingest(source=source, external_id=name, filename=name, content=content).document)
    assert bad.status == Document.Status.FAILED
    assert reason in bad.error
    assert "freshet.document.failed" in event_types(bad)

    good = settled(document_ingest(source=source, external_id="after.pdf", filename="after.pdf",
                                   content=pdf_bytes(["Penguins huddle for warmth."])).document)
    assert good.status == Document.Status.INDEXED, good.error
    assert worker.poll() is None


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_legacy_encodings_are_searchable_by_their_accented_words(worker, encoding):
    text = "Le crémeux brûlé du pâtissier est célèbre à Besançon."
    document = settled(document_ingest(source=SourceFactory(), external_id=f"fr-{encoding}",
                                       content=text.encode(encoding)).document)
    assert document.status == Document.Status.INDEXED, document.error
    assert document.text == text
    hits = retrieve("brûlé Besançon", access=AccessFilter.staff(), k=3, mode="bm25")
    assert document.pk in [h.document_id for h in hits]
