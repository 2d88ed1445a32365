"""Fault test 7: `manage.py reconcile` finds a chunk deleted behind Freshet's back, an orphan chunk
and a stale one, `--fix` repairs them, and the exit status says whether differences remain. On
each engine (the index is written as the pipeline writes it: index_copy, upsert_documents)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from ingestion.embedding import embedder
from ingestion.index_copy import documents_copied
from ingestion.models import Chunk, Document
from ingestion.search_index import ChunkRecord, DocumentChunks
from tests.factories import SourceFactory


def indexed_documents(source, count: int, *, chunks: int = 2) -> list[Document]:
    documents = []
    for i in range(count):
        document = Document.objects.create(source=source, external_id=f"d{i}", title=f"Doc {i}", version=2,
                                           status=Document.Status.INDEXED, chunk_count=chunks)
        Chunk.objects.bulk_create([
            Chunk(id=Chunk.make_id(document.pk, o), document=document, ordinal=o, text=f"river {i} part {o}",
                  token_count=4, embedding_model=embedder().name, version=2) for o in range(chunks)])
        documents.append(document)
    return documents


def reconcile(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("reconcile", *args, stdout=out)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue()
    return 0, out.getvalue()


def test_reconcile_finds_and_fixes_a_deleted_chunk_an_orphan_and_a_stale_chunk(index, db):
    source, other = SourceFactory(name="rivers"), SourceFactory(name="lakes")
    documents = indexed_documents(source, 3)
    lakes = indexed_documents(other, 1)
    index.upsert_documents(documents_copied(documents + lakes, encoder=embedder(), held_from=None,
                                            reuse_vectors=False))
    assert reconcile() == (0, reconcile()[1]) and "rivers: in step" in reconcile()[1]

    # Behind Freshet's back: a chunk deleted, an orphan written (no such document), and a
    # document's chunks replaced by those of an older version.
    missing = Chunk.make_id(documents[0].pk, 1)
    index._chunks_remove([_ordinal_removal(documents[0].pk, 2, 1)])
    orphan = ChunkRecord(id="999999-0", document_id=999999, source_id=source.pk, ordinal=0, version=1,
                         title="ghost", text="a ghost chunk", uri="", vector=[0.1] * embedder().dimension,
                         public=True)
    index.upsert_documents([DocumentChunks(999999, 1, [orphan])])
    stale_doc = documents[1]
    index.delete_document(stale_doc.pk)
    old = documents_copied([stale_doc], encoder=embedder(), held_from=None, reuse_vectors=False)[0]
    index.upsert_documents([DocumentChunks(stale_doc.pk, 1, [_at_version(r, 1) for r in old.chunks])])

    status, out = reconcile()
    assert status == 1
    assert f"1 missing ({missing})" in out
    assert "2 stale" in out and "1 surplus (999999-0)" in out
    assert "lakes: in step" in out
    assert reconcile("--source", "lakes")[0] == 0

    status, out = reconcile("--fix", "--source", "rivers")
    assert status == 0, out
    assert reconcile() == (0, reconcile()[1])
    held = index.chunks_listed(source_id=source.pk)
    expected = {c.id for d in documents for c in d.chunks.all()}
    assert set(held) == expected and {c.version for c in held.values()} == {2}
    assert index.get_chunks([missing])[missing].text == "river 0 part 1"


def test_reconcile_refuses_an_unknown_source(db, index):
    with pytest.raises(Exception, match="no source 'nowhere'"):
        call_command("reconcile", "--source", "nowhere")


def _ordinal_removal(document_id: int, version: int, ordinal: int):
    from ingestion.search_index.base import ChunkRemoval

    return ChunkRemoval(document_id, version, ordinal)


def _at_version(record: ChunkRecord, version: int) -> ChunkRecord:
    from dataclasses import replace

    return replace(record, version=version)
