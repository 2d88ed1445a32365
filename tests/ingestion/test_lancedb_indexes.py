"""LanceDB's own indexes: scalar indexes on the filter columns from the first write, and an
IVF_FLAT vector index once the table is large, searched exhaustively so results do not change."""

from __future__ import annotations

import numpy as np
import pytest

from ingestion.search_index import lancedb_engine
from ingestion.search_index.base import AccessFilter, ChunkRecord, DocumentChunks
from ingestion.search_index.lancedb_engine import LanceDBIndex

DIM = 16


def records(document_id: int, count: int, rng: np.random.Generator) -> list[ChunkRecord]:
    vectors = rng.normal(size=(count, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [ChunkRecord(id=f"{document_id}-{i}", document_id=document_id, source_id=document_id % 3, ordinal=i,
                        version=1, title="", text=f"passage {i}", uri="", vector=vectors[i].tolist(),
                        public=document_id % 2 == 0, groups=("g",) if document_id % 2 else ())
            for i in range(count)]


def test_filters_are_indexed_and_the_vector_index_changes_no_result(tmp_path, monkeypatch):
    monkeypatch.setattr(lancedb_engine, "VECTOR_INDEX_MIN_ROWS", 600)
    monkeypatch.setattr(lancedb_engine, "VECTOR_INDEX_ROWS_PER_PARTITION", 100)
    rng = np.random.default_rng(7)
    index = LanceDBIndex(tmp_path)
    for document_id in range(1, 8):
        index.upsert_documents([DocumentChunks(document_id, 1, records(document_id, 100, rng))])
    table = index._open()
    indexed = {index.columns[0]: index.index_type for index in table.list_indices()}
    assert {"body", "public", "groups", "source_id", "document_id", "id"} <= set(indexed)
    assert "vector" not in indexed

    queries = [q / np.linalg.norm(q) for q in rng.normal(size=(10, DIM))]
    outsider, member = AccessFilter(), AccessFilter(groups=("g",))
    flat = [[(h.chunk_id, h.score) for h in index.knn(q.tolist(), k=50, access=access)]
            for q in queries for access in (outsider, member)]
    index.optimize()
    assert any(i.columns == ["vector"] and i.index_type == "IvfFlat" for i in table.list_indices())
    with_index = [[(h.chunk_id, h.score) for h in index.knn(q.tolist(), k=50, access=access)]
                  for q in queries for access in (outsider, member)]
    assert [[chunk for chunk, _ in hits] for hits in with_index] == [[chunk for chunk, _ in hits] for hits in flat]
    assert [score for hits in with_index for _, score in hits] == pytest.approx(
        [score for hits in flat for _, score in hits], abs=1e-4)
    # The filters still hold through the vector index: outsiders see public documents only.
    assert all(int(chunk.split("-")[0]) % 2 == 0 for chunk, _ in with_index[0])

