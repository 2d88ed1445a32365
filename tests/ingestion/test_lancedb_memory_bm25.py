"""BM25 in memory (ingestion/search_index/lancedb_bm25.py) ranks and scores as LanceDB's full-text
index does, under every access filter, and follows writes made through another handle."""

from __future__ import annotations

import numpy as np
import pytest

from ingestion.search_index.base import AccessFilter
from ingestion.search_index.lancedb_bm25 import tokens
from ingestion.search_index.lancedb_engine import LanceDBIndex
from tests.contract.test_search_index import chunk, ids, upsert
from tests.ingestion.test_lancedb_memory_knn import ACCESSES

WORDS = ("glacier glaciers river rivers salmon running runs ran the of and were t very alpine summer autumn "
         "protein proteins cell cells IL-6 p53 café naïve mice mouse expression expressed").split()
QUERIES = ["glaciers river", "Running salmon in the autumn", "IL-6 expression in mice cells",
           "café naïve", "the of and", "proteins protein proteins", "alpine alpine river", "nothing-matches-this"]


def text_of(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30))))


@pytest.fixture
def pair(tmp_path):
    memory = LanceDBIndex(tmp_path / "lancedb")
    rng = np.random.default_rng(17)
    for document in range(1, 41):
        groups = (("red",), ("blue",), ("red", "blue"), ())[document % 4]
        chunks = [chunk(document, ordinal, text_of(rng), title=f"Title {document}", source_id=document % 3 + 1,
                        public=document % 5 == 0, groups=groups)
                  for ordinal in range(3)]
        upsert(memory, document, 1, chunks)
    lance = LanceDBIndex(tmp_path / "lancedb", memory_knn_rows=0)
    lance.refresh()  # every row in LanceDB's index, on the same statistics (as the memory index has)
    return memory, lance


def same_ranking(found, expected) -> None:
    """The same scores in the same order (to float32's precision), and the same chunk at each
    place unless its score is tied (this vocabulary makes many ties, which come in either order)."""
    assert [h.score for h in found] == pytest.approx([h.score for h in expected], rel=1e-5)
    scores = {h.chunk_id: h.score for h in expected}
    cut = expected[-1].score if expected else 0.0
    for mine, theirs in zip(found, expected, strict=True):
        if mine.chunk_id != theirs.chunk_id:
            assert mine.score == pytest.approx(scores.get(mine.chunk_id, cut), rel=1e-5)
    fields = {h.chunk_id: (h.title, h.text, h.uri, h.ordinal, h.document_id, h.source_id) for h in expected}
    assert all(fields[h.chunk_id] == (h.title, h.text, h.uri, h.ordinal, h.document_id, h.source_id)
               for h in found if h.chunk_id in fields)


@pytest.mark.parametrize("access", ACCESSES)
def test_it_finds_what_lancedb_finds(pair, access: AccessFilter) -> None:
    memory, lance = pair
    for query in QUERIES:
        found, expected = memory.bm25(query, k=7, access=access), lance.bm25(query, k=7, access=access)

        same_ranking(found, expected)
    assert memory._memory_knn._held.terms is not None  # answered from memory, not by LanceDB


def test_it_tokenises_as_lancedb_does() -> None:
    assert tokens("The Running dogs were T-cells, very café naïve IL-6 " + "x" * 40) == \
           ["run", "dog", "cell", "veri", "cafe", "naiv", "il", "6"]


def test_it_sees_writes_made_by_another_handle(pair) -> None:
    memory, other = pair
    assert memory.bm25("zeppelin", k=3, access=AccessFilter.staff()) == []

    upsert(other, 99, 1, [chunk(99, 0, "a zeppelin over the glacier")])
    assert ids(memory.bm25("zeppelin", k=1, access=AccessFilter.staff())) == ["99-0"]
    upsert(other, 99, 2, [chunk(99, 0, "an airship over the glacier", version=2)])
    assert memory.bm25("zeppelin", k=1, access=AccessFilter.staff()) == []
    assert ids(memory.bm25("airship", k=1, access=AccessFilter.staff())) == ["99-0"]
    other.delete_document(99)
    assert memory.bm25("airship", k=5, access=AccessFilter.staff()) == []


def test_it_can_be_left_to_lancedb(tmp_path) -> None:
    index = LanceDBIndex(tmp_path / "lancedb", memory_bm25=False)
    upsert(index, 1, 1, [chunk(1, i, f"glacier {i}") for i in range(3)])

    assert len(index.bm25("glacier", k=2, access=AccessFilter.staff())) == 2
    assert index._memory_knn._held is None or index._memory_knn._held.terms is None


def test_with_a_search_lag_it_sees_a_write_once_the_lag_has_passed(tmp_path) -> None:
    import time

    lagged = LanceDBIndex(tmp_path / "lancedb", search_lag_seconds=0.2)
    writer = LanceDBIndex(tmp_path / "lancedb")
    upsert(writer, 1, 1, [chunk(1, 0, "a glacier")])
    assert ids(lagged.bm25("glacier", k=1, access=AccessFilter.staff())) == ["1-0"]

    upsert(writer, 2, 1, [chunk(2, 0, "a zeppelin")])
    written = time.monotonic()
    while not lagged.bm25("zeppelin", k=1, access=AccessFilter.staff()) and time.monotonic() - written < 10:
        time.sleep(0.05)
    assert ids(lagged.bm25("zeppelin", k=1, access=AccessFilter.staff())) == ["2-0"]
    assert ids(lagged.knn(chunk(2, 0, "").vector, k=1, access=AccessFilter.staff())) == ["2-0"]


def test_warming_up_takes_the_snapshot_the_first_search_would_take(pair, tmp_path):
    memory, _ = pair
    fresh = LanceDBIndex(tmp_path / "lancedb")  # a new process's index: nothing held yet
    assert fresh._memory_knn._held is None
    fresh.warm_up()
    held = fresh._memory_knn._held
    assert held is not None and held.terms is not None and len(held.hits["id"]) == 120
    assert fresh.bm25("glaciers river", k=5, access=AccessFilter.staff())
    assert fresh._memory_knn._held is held  # the search used the warmed snapshot
    LanceDBIndex(tmp_path / "empty").warm_up()  # nothing indexed: nothing to take, no error
