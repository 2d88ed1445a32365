"""The contract of what reconciliation and rebuilds need from an engine: the listing of what it
holds, the model a generation was built with, and a new generation filled while the current one
serves, then switched to for every handle at once."""

from __future__ import annotations

from ingestion.search_index.base import HeldChunk, SearchIndex
from tests.contract.test_search_index import ANONYMOUS, ids, write


def twin(engine: SearchIndex) -> SearchIndex:
    """Another handle on the same index, as another process has."""
    if engine.name == "lancedb":
        from ingestion.search_index.lancedb_engine import LanceDBIndex

        return LanceDBIndex(engine.path)
    from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex

    return ElasticsearchIndex(engine.url, engine.alias, 30.0)


def test_it_lists_each_chunk_with_its_document_source_and_version(engine: SearchIndex) -> None:
    assert engine.chunks_listed() == {}
    write(engine, 1, 3, ["alpha one", "alpha two"], source_id=7)
    write(engine, 2, 1, ["beta one"], source_id=8)

    assert engine.chunks_listed() == {"1-0": HeldChunk(1, 7, 3), "1-1": HeldChunk(1, 7, 3), "2-0": HeldChunk(2, 8, 1)}
    assert engine.chunks_listed(source_id=8) == {"2-0": HeldChunk(2, 8, 1)}
    assert engine.chunks_listed(source_id=9) == {}


def test_it_records_the_model_of_the_serving_generation(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["alpha one"])
    assert engine.index_model() is None

    engine.index_model_set("model-a")

    assert engine.index_model() == "model-a"
    assert twin(engine).index_model() == "model-a"


def test_a_new_generation_is_filled_while_the_old_serves_then_switched_to(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["glaciers feed the rivers"])
    other = twin(engine)
    assert ids(other.bm25("glaciers", k=5, access=ANONYMOUS)) == ["1-0"]
    first = engine.generation()

    building = engine.generation_begin()
    write(building, 2, 1, ["salmon swim upstream"])
    write(building, 1, 1, ["glaciers feed the rivers"])
    # Not serving yet: the old generation answers, alone.
    assert ids(engine.bm25("salmon", k=5, access=ANONYMOUS)) == []
    assert engine.count() == 1

    engine.generation_switch(building, model="model-b", grace_seconds=0)

    assert engine.generation() == first + 1
    assert engine.index_model() == "model-b"
    for handle in (engine, other):  # every handle follows, the one of "another process" too
        assert ids(handle.bm25("salmon", k=5, access=ANONYMOUS)) == ["2-0"]
        assert ids(handle.bm25("glaciers", k=5, access=ANONYMOUS)) == ["1-0"]
        assert handle.count() == 2
    # Writes after the switch land in the new generation, through any handle.
    write(other, 3, 1, ["otters play in the delta"])
    assert ids(engine.bm25("otters", k=5, access=ANONYMOUS)) == ["3-0"]

    # The next rebuild starts from nothing, and the one after the old generation is gone.
    again = engine.generation_begin()
    assert again.count() == 0
    write(again, 4, 1, ["herons wade"])
    engine.generation_switch(again, model="model-c", grace_seconds=0)
    assert engine.count() == 1 and engine.generation() == first + 2
    assert ids(other.bm25("salmon", k=5, access=ANONYMOUS)) == []
