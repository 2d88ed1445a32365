"""Fault test 5: a bulk write with one bad item among many. The item is really bad (a vector of
another dimension than the index's, which each engine refuses), the batch is the pipeline's own
batching (ingestion/pipeline/batching.py) and the failure the pipeline's own (document_fail): the
rest are written, the bad one's document fails with the engine's reason."""

from __future__ import annotations

import uuid

from ingestion.models import Document
from ingestion.pipeline.batching import BatchStage, ClaimSet, batch_drain
from ingestion.pipeline.stages import document_fail
from ingestion.search_index import ChunkRecord, DocumentChunks
from tests.factories import SourceFactory

DIM = 8


def chunks_of(document: Document, *, dimension: int = DIM) -> DocumentChunks:
    records = [ChunkRecord(id=f"{document.pk}-{o}", document_id=document.pk, source_id=document.source_id,
                           ordinal=o, version=document.version, title="", text=f"delta {document.pk} part {o}",
                           uri="", vector=[0.1 * (o + 1)] * dimension, public=True) for o in range(2)]
    return DocumentChunks(document.pk, document.version, records)


def test_a_bulk_write_with_one_bad_item_writes_the_rest_and_fails_the_bad_one(index, db):
    source = SourceFactory()
    documents = [Document.objects.create(source=source, external_id=f"d{i}", status=Document.Status.PROCESSING)
                 for i in range(8)]
    index.upsert_documents([chunks_of(documents[0])])  # the index exists, of dimension DIM
    bad = documents[5]
    loaded = {str(d.pk): chunks_of(d, dimension=DIM - 3 if d == bad else DIM) for d in documents}
    stage = BatchStage(
        claims=ClaimSet(f"test-bulk-{uuid.uuid4().hex[:6]}"), load=lambda member: loaded[member],
        size=lambda item: len(item.chunks), budget=lambda: 1000,
        work=lambda batch: index.upsert_documents([item for _, item in batch]),
        done=lambda member: False,
        fail=lambda member, error: document_fail(int(member), 1, stage="indexing", error=error),
    )
    stage.claims.add(loaded)

    assert batch_drain(stage) == len(documents)

    held = index.chunks_listed()
    assert {c.document_id for c in held.values()} == {d.pk for d in documents if d != bad}
    assert len(held) == 2 * (len(documents) - 1)
    bad.refresh_from_db()
    assert bad.status == Document.Status.FAILED
    assert "while indexing" in bad.error and ("dimension" in bad.error or "5" in bad.error), bad.error
    assert Document.objects.filter(status=Document.Status.FAILED).count() == 1
    assert stage.claims.pending_count() == 0
