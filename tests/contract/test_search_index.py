"""The search-index contract: every engine behaves alike on what Freshet relies on.

Each test runs once per engine (the `engine` fixture in conftest.py), on a fresh empty index.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from ingestion.search_index.base import AccessFilter, ChunkRecord, DocumentChunks, SearchHit, SearchIndex

DIM = 8
ANONYMOUS = AccessFilter()
STAFF = AccessFilter.staff()


def vector(seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=DIM).tolist()


def axis(i: int, *, tilt: float = 0.0) -> list[float]:
    """A unit-ish vector along axis `i`, tilted towards the next axis by `tilt`."""
    v = np.zeros(DIM)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = tilt
    return v.tolist()


def cosine(a: list[float], b: list[float]) -> float:
    a_, b_ = np.asarray(a), np.asarray(b)
    return float(a_ @ b_ / (np.linalg.norm(a_) * np.linalg.norm(b_)))


def chunk(document_id: int, ordinal: int, text: str, *, version: int = 1, source_id: int = 1,
          title: str = "", public: bool = True, groups: tuple[str, ...] = (),
          vec: list[float] | None = None, feedback: float = 0.0) -> ChunkRecord:
    return ChunkRecord(
        id=f"{document_id}-{ordinal}", document_id=document_id, source_id=source_id, ordinal=ordinal,
        version=version, title=title, text=text, uri=f"https://example.org/docs/{document_id}",
        vector=vec if vec is not None else vector(document_id * 100 + ordinal), public=public,
        groups=groups, feedback=feedback,
    )


def upsert(engine: SearchIndex, document_id: int, version: int, chunks: list[ChunkRecord]) -> None:
    engine.upsert_documents([DocumentChunks(document_id, version, chunks)])


def write(engine: SearchIndex, document_id: int, version: int, texts: list[str],
          **fields: object) -> list[ChunkRecord]:
    chunks = [chunk(document_id, i, text, version=version, **fields) for i, text in enumerate(texts)]
    upsert(engine, document_id, version, chunks)
    return chunks


def ids(hits: list[SearchHit]) -> list[str]:
    return [hit.chunk_id for hit in hits]


def test_it_finds_an_upserted_chunk_by_bm25_with_its_fields(engine: SearchIndex) -> None:
    texts = ["Glaciers feed the alpine rivers in early summer.", "Salmon return upstream every autumn."]
    write(engine, 1, 3, texts, source_id=7, title="Alpine rivers")

    hits = engine.bm25("glaciers", k=5, access=ANONYMOUS)

    assert ids(hits) == ["1-0"]
    hit = hits[0]
    assert (hit.document_id, hit.source_id, hit.ordinal) == (1, 7, 0)
    assert hit.title == "Alpine rivers"
    assert hit.text == "Glaciers feed the alpine rivers in early summer."
    assert hit.uri == "https://example.org/docs/1"
    assert hit.score > 0
    assert hit.feedback == 0.0
    # The title is searched too (BM25 scores title + text).
    assert set(ids(engine.bm25("alpine", k=5, access=ANONYMOUS))) == {"1-0", "1-1"}


def test_it_creates_the_index_on_the_first_write(engine: SearchIndex) -> None:
    upsert(engine, 1, 1, [chunk(1, 0, "Lazily created index")])

    assert engine.count() == 1
    assert ids(engine.bm25("lazily", k=5, access=ANONYMOUS)) == ["1-0"]


def test_it_answers_reads_and_ignores_writes_before_anything_is_indexed(engine: SearchIndex) -> None:
    assert engine.count() == 0
    assert engine.bm25("anything", k=5, access=STAFF) == []
    assert engine.knn(vector(1), k=5, access=STAFF) == []
    assert engine.chunk_versions() == {}
    assert engine.get_chunks(["1-0"]) == {}
    engine.delete_document(1)
    engine.delete_source(1)
    engine.set_feedback({"1-0": 1.0})
    engine.set_source_access(source_id=1, public=False, groups=["g"])
    upsert(engine, 1, 1, [])
    engine.optimize()
    assert engine.refresh() is False
    engine.ping()
    assert engine.count() == 0


def test_it_returns_nearest_first_by_knn_with_cosine_scores(engine: SearchIndex) -> None:
    vectors = {0: axis(0), 1: axis(0, tilt=0.5), 2: axis(3), 3: [-x for x in axis(0, tilt=0.2)]}
    upsert(engine, 1, 1, [chunk(1, i, f"chunk {i}", vec=v) for i, v in vectors.items()])
    query = axis(0, tilt=0.1)

    hits = engine.knn(query, k=4, access=ANONYMOUS)

    expected = sorted(vectors, key=lambda i: -cosine(query, vectors[i]))
    assert ids(hits) == [f"1-{i}" for i in expected]
    for hit in hits:
        assert hit.score == pytest.approx(cosine(query, vectors[hit.ordinal]), abs=1e-3)
    assert hits[-1].score < 0  # cosine, not a (1 + cos) / 2 similarity
    assert ids(engine.knn(query, k=2, access=ANONYMOUS)) == [f"1-{i}" for i in expected[:2]]


def test_it_keeps_vectors_and_fields_in_get_chunks(engine: SearchIndex) -> None:
    written = write(engine, 4, 2, ["first", "second"], source_id=3, title="T", public=False,
                    groups=("editors",))

    stored = engine.get_chunks(["4-0", "4-1", "4-9"])

    assert set(stored) == {"4-0", "4-1"}
    for original in written:
        record = stored[original.id]
        assert len(record.vector) == DIM
        assert record.vector == pytest.approx(original.vector, abs=1e-6)
        assert (record.document_id, record.source_id, record.version) == (4, 3, 2)
        assert record.ordinal == original.ordinal
        assert (record.title, record.text, record.uri) == ("T", original.text, original.uri)
        assert record.public is False
        assert record.groups == ("editors",)
        assert record.feedback == 0.0
    assert engine.get_chunks([]) == {}


def test_it_removes_surplus_and_older_chunks_on_a_newer_version(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["old zero", "old one", "old two otters"])
    write(engine, 2, 1, ["another document"])

    write(engine, 1, 2, ["new zero", "new one"])

    assert engine.chunk_versions(document_id=1) == {"1-0": 2, "1-1": 2}
    assert engine.chunk_versions(document_id=2) == {"2-0": 1}
    assert engine.get_chunks(["1-0"])["1-0"].text == "new zero"
    assert engine.bm25("otters", k=5, access=STAFF) == []
    assert engine.count() == 3


def test_it_ignores_an_older_version_written_after_a_newer_one(engine: SearchIndex) -> None:
    write(engine, 1, 3, ["current zero", "current one"])

    write(engine, 1, 2, ["stale zero", "stale one", "stale two"])

    assert engine.chunk_versions(document_id=1) == {"1-0": 3, "1-1": 3}
    assert engine.get_chunks(["1-0"])["1-0"].text == "current zero"
    assert engine.bm25("stale", k=5, access=STAFF) == []


def test_it_accepts_newer_and_same_versions_after_partial_updates(engine: SearchIndex) -> None:
    # Partial updates (feedback, access) must not make a later write of the document look older.
    write(engine, 1, 1, ["first words"])
    for score in (0.1, 0.2, 0.3):
        engine.set_feedback({"1-0": score})
    engine.set_source_access(source_id=1, public=False, groups=["g"])

    write(engine, 1, 2, ["second words"])
    assert engine.get_chunks(["1-0"])["1-0"].text == "second words"

    engine.set_feedback({"1-0": 0.5})
    write(engine, 1, 2, ["second words, written again"])
    assert engine.get_chunks(["1-0"])["1-0"].text == "second words, written again"

    write(engine, 1, 1, ["first words again"])
    assert engine.get_chunks(["1-0"])["1-0"].text == "second words, written again"


def test_it_writes_several_documents_in_one_call_each_by_its_own_version(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["one old zero", "one old one", "one old two"])
    write(engine, 2, 5, ["two current"])
    write(engine, 3, 1, ["three untouched"])

    engine.upsert_documents([
        DocumentChunks(1, 2, [chunk(1, 0, "one new zero", version=2)]),  # newer: surplus goes
        DocumentChunks(2, 4, [chunk(2, 0, "two stale", version=4), chunk(2, 1, "two stale one", version=4)]),
        DocumentChunks(4, 1, [chunk(4, 0, "four fresh lynx"), chunk(4, 1, "four fresh one")]),
    ])

    assert engine.chunk_versions() == {"1-0": 2, "2-0": 5, "3-0": 1, "4-0": 1, "4-1": 1}
    assert engine.get_chunks(["1-0"])["1-0"].text == "one new zero"
    assert engine.get_chunks(["2-0"])["2-0"].text == "two current"
    assert ids(engine.bm25("lynx", k=5, access=STAFF)) == ["4-0"]
    engine.upsert_documents([])
    assert engine.count() == 5


def test_it_removes_every_chunk_when_a_version_has_none(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["a", "b"])
    write(engine, 2, 1, ["c"])

    upsert(engine, 1, 2, [])

    assert engine.chunk_versions() == {"2-0": 1}


def test_it_deletes_exactly_a_document_or_a_source(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["one a", "one b"], source_id=1)
    write(engine, 2, 1, ["two a"], source_id=1)
    write(engine, 3, 1, ["three a", "three b"], source_id=2)

    engine.delete_document(1)
    assert set(engine.chunk_versions()) == {"2-0", "3-0", "3-1"}

    engine.delete_source(1)
    assert set(engine.chunk_versions()) == {"3-0", "3-1"}
    assert engine.count() == 2
    assert ids(engine.bm25("two", k=5, access=STAFF)) == []


def test_it_never_shows_a_restricted_chunk_to_outsiders(engine: SearchIndex) -> None:
    secret = axis(2)
    write(engine, 1, 1, ["the quarterly merger plan"], source_id=1, public=False, groups=("board",),
          vec=secret)
    write(engine, 2, 1, ["the public merger announcement"], source_id=2, public=True, vec=axis(5))
    query = "the quarterly merger plan"

    for outsider in (ANONYMOUS, AccessFilter(groups=("staff-room",))):
        assert ids(engine.bm25(query, k=10, access=outsider)) == ["2-0"]
        assert ids(engine.knn(secret, k=10, access=outsider)) == ["2-0"]

    for insider in (AccessFilter(groups=("staff-room", "board")), STAFF):
        assert ids(engine.bm25(query, k=10, access=insider))[0] == "1-0"
        assert ids(engine.knn(secret, k=10, access=insider)) == ["1-0", "2-0"]


def test_it_narrows_to_the_given_sources(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["river notes"], source_id=1, vec=axis(0))
    write(engine, 2, 1, ["river maps"], source_id=2, vec=axis(0, tilt=0.1))
    write(engine, 3, 1, ["river tales"], source_id=3, public=False, groups=("g",), vec=axis(0, tilt=0.2))

    staff_in_two = AccessFilter(everything=True, source_ids=(2, 3))
    assert set(ids(engine.bm25("river", k=10, access=staff_in_two))) == {"2-0", "3-0"}
    assert ids(engine.knn(axis(0), k=10, access=AccessFilter(source_ids=(2, 3)))) == ["2-0"]
    assert ids(engine.knn(axis(0), k=10, access=AccessFilter(groups=("g",), source_ids=(3,)))) == ["3-0"]
    nothing = AccessFilter(everything=True, source_ids=())
    assert engine.bm25("river", k=10, access=nothing) == []
    assert engine.knn(axis(0), k=10, access=nothing) == []


def test_it_flips_visibility_with_set_source_access(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["harbour schedule", "harbour fees"], source_id=4, vec=axis(1))
    write(engine, 2, 1, ["harbour history"], source_id=5, vec=axis(6))
    members = AccessFilter(groups=("crew",))

    engine.set_source_access(source_id=4, public=False, groups=["crew", "crew", "officers"])

    assert ids(engine.bm25("harbour", k=10, access=ANONYMOUS)) == ["2-0"]
    assert ids(engine.knn(axis(1), k=10, access=ANONYMOUS)) == ["2-0"]
    assert set(ids(engine.bm25("harbour", k=10, access=members))) == {"1-0", "1-1", "2-0"}
    record = engine.get_chunks(["1-0"])["1-0"]
    assert record.public is False
    assert sorted(record.groups) == ["crew", "officers"]

    engine.set_source_access(source_id=4, public=True, groups=["crew"])

    assert set(ids(engine.bm25("harbour", k=10, access=ANONYMOUS))) == {"1-0", "1-1", "2-0"}
    assert engine.get_chunks(["1-1"])["1-1"].groups == ("crew",)


def test_it_clears_the_groups_of_a_source(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["harbour schedule"], source_id=4, public=False, groups=("crew",))

    engine.set_source_access(source_id=4, public=True, groups=[])

    assert ids(engine.bm25("harbour", k=10, access=ANONYMOUS)) == ["1-0"]
    assert engine.get_chunks(["1-0"])["1-0"].groups == ()


def test_it_stores_feedback_and_returns_it_in_hits(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["lantern repair guide", "lantern parts list"], vec=axis(4))

    engine.set_feedback({"1-0": 0.75, "99-0": 1.0})

    stored = engine.get_chunks(["1-0", "1-1", "99-0"])
    assert set(stored) == {"1-0", "1-1"}
    assert stored["1-0"].feedback == pytest.approx(0.75)
    assert stored["1-1"].feedback == 0.0
    by_bm25 = {hit.chunk_id: hit.feedback for hit in engine.bm25("lantern", k=5, access=ANONYMOUS)}
    assert by_bm25 == {"1-0": pytest.approx(0.75), "1-1": 0.0}
    by_knn = {hit.chunk_id: hit.feedback for hit in engine.knn(axis(4), k=5, access=ANONYMOUS)}
    assert by_knn == {"1-0": pytest.approx(0.75), "1-1": 0.0}
    engine.set_feedback({})
    assert engine.count() == 2


def test_it_stores_question_profiles_beside_feedback_and_clears_them(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["lantern repair guide", "lantern parts list"], vec=axis(4))
    profile = bytes(range(256)) * 3  # opaque to the index: any bytes come back as written

    engine.set_feedback({"1-0": 0.5, "1-1": -0.25}, {"1-0": profile})

    stored = engine.get_chunks(["1-0", "1-1"])
    assert (stored["1-0"].feedback_profile, stored["1-1"].feedback_profile) == (profile, b"")
    by_bm25 = {hit.chunk_id: hit.feedback_profile for hit in engine.bm25("lantern", k=5, access=ANONYMOUS)}
    by_knn = {hit.chunk_id: hit.feedback_profile for hit in engine.knn(axis(4), k=5, access=ANONYMOUS)}
    assert by_bm25 == by_knn == {"1-0": profile, "1-1": b""}

    engine.set_feedback({"1-0": 0.25})  # profiles not given: the stored one stays
    assert engine.get_chunks(["1-0"])["1-0"].feedback_profile == profile
    engine.set_feedback({"1-0": 0.0}, {})  # given, without one for the chunk: it goes
    assert engine.get_chunks(["1-0"])["1-0"].feedback_profile == b""
    # A new version of the document is written without feedback, as the pipeline writes it.
    engine.set_feedback({"1-1": 0.25}, {"1-1": profile})
    write(engine, 1, 2, ["lantern repair guide, second edition", "lantern parts list"], vec=axis(4))
    assert engine.get_chunks(["1-1"])["1-1"].feedback_profile == b""


def test_bm25_scores_do_not_depend_on_when_a_row_was_written(engine: SearchIndex) -> None:
    """Rows written one document at a time, and rows rewritten for their feedback score, score
    like the rest once the index is refreshed: rewriting a chunk's feedback leaves every BM25
    score where it was (LanceDB scored unindexed rows on statistics of their own)."""
    texts = {
        1: "heat pumps move heat from the outside air into the house; a heat pump uses electricity",
        2: "in winter a heat pump can also heat water for the house",
        3: "sourdough bread rises slowly because wild yeast ferments the dough overnight",
        4: "the heat pump tender for the new office is worth two million crowns",
    }
    for document_id, text in texts.items():
        write(engine, document_id, 1, [text])
    engine.refresh()
    assert engine.refresh() is False  # nothing new since
    query = "how does a heat pump heat the house"
    before = {hit.chunk_id: hit.score for hit in engine.bm25(query, k=10, access=STAFF)}
    assert set(list(before)[:2]) == {"1-0", "2-0"} and "3-0" not in before

    engine.set_feedback({"1-0": -0.5, "2-0": 0.5})
    engine.refresh()
    after = {hit.chunk_id: hit.score for hit in engine.bm25(query, k=10, access=STAFF)}
    assert after == pytest.approx(before, rel=1e-4)


def test_it_lists_chunk_versions_and_counts(engine: SearchIndex) -> None:
    write(engine, 1, 2, ["a", "b", "c"])
    write(engine, 2, 5, ["d", "e"])

    assert engine.chunk_versions() == {"1-0": 2, "1-1": 2, "1-2": 2, "2-0": 5, "2-1": 5}
    assert engine.chunk_versions(document_id=2) == {"2-0": 5, "2-1": 5}
    assert engine.chunk_versions(document_id=3) == {}
    assert engine.count() == 5


def test_it_lists_more_chunk_versions_than_one_page(engine: SearchIndex) -> None:
    texts = [f"chunk {i}" for i in range(1234)]
    write(engine, 1, 1, texts)

    versions = engine.chunk_versions()

    assert len(versions) == 1234
    assert set(versions.values()) == {1}
    assert engine.count() == 1234


def test_it_stems_english(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["The river runs through the valley", "A quiet lake"])

    assert ids(engine.bm25("running", k=5, access=ANONYMOUS)) == ["1-0"]
    assert ids(engine.bm25("valleys", k=5, access=ANONYMOUS)) == ["1-0"]


def test_it_sees_each_write_at_once(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["kestrel sighting"], vec=axis(7))
    assert ids(engine.bm25("kestrel", k=5, access=ANONYMOUS)) == ["1-0"]
    assert ids(engine.knn(axis(7), k=1, access=ANONYMOUS)) == ["1-0"]

    write(engine, 1, 2, ["osprey sighting"], vec=axis(7))
    assert engine.bm25("kestrel", k=5, access=ANONYMOUS) == []
    assert ids(engine.bm25("osprey", k=5, access=ANONYMOUS)) == ["1-0"]

    engine.set_feedback({"1-0": 0.4})
    assert engine.bm25("osprey", k=5, access=ANONYMOUS)[0].feedback == pytest.approx(0.4)

    engine.delete_document(1)
    assert engine.bm25("osprey", k=5, access=ANONYMOUS) == []
    assert engine.knn(axis(7), k=1, access=ANONYMOUS) == []


def test_it_refuses_vectors_of_another_dimension(engine: SearchIndex) -> None:
    write(engine, 1, 1, ["eight dimensions"])

    with pytest.raises(Exception):  # noqa: B017 - engines raise their own kinds
        upsert(engine, 2, 1, [chunk(2, 0, "four dimensions", vec=[1.0, 0.0, 0.0, 0.0])])
    assert set(engine.chunk_versions()) == {"1-0"}


def test_it_reports_an_unreachable_elasticsearch_as_transient() -> None:
    from events.errors import TransientError
    from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex

    index = ElasticsearchIndex(url="http://127.0.0.1:9", alias="freshet-unreachable", timeout=2.0)

    with pytest.raises(TransientError):
        index.ping()
    with pytest.raises(TransientError):
        index.bm25("anything", k=5, access=STAFF)


def test_it_reports_a_refused_item_as_permanent_naming_it(elasticsearch_url: str) -> None:
    from events.errors import TransientError
    from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex
    from ingestion.search_index.elasticsearch_errors import BulkItemError

    alias = f"freshet-test-{uuid.uuid4().hex[:8]}"
    index = ElasticsearchIndex(url=elasticsearch_url, alias=alias, timeout=10.0)
    try:
        # Cosine similarity is undefined for a zero vector: Elasticsearch answers 400 for that item.
        with pytest.raises(BulkItemError, match="1-1") as raised:
            upsert(index, 1, 1, [chunk(1, 0, "fine"), chunk(1, 1, "zero", vec=[0.0] * DIM)])
        assert not isinstance(raised.value, TransientError)
        assert "zero magnitude" in str(raised.value)
    finally:
        index.drop()


def test_lancedb_reports_a_table_kept_busy_as_transient(tmp_path, monkeypatch) -> None:
    """A commit that keeps losing the race with other writers is worth retrying later; any other
    LanceDB error is permanent and raises as it is."""
    from events.errors import TransientError
    from ingestion.search_index import lancedb_engine
    from ingestion.search_index.lancedb_engine import LanceDBIndex

    index = LanceDBIndex(tmp_path / "lancedb")
    write(index, 1, 1, ["tide tables"])
    table = index._open()
    monkeypatch.setattr(lancedb_engine.time, "sleep", lambda seconds: None)
    tries = []

    def conflicting(where: str) -> None:
        tries.append(where)
        raise RuntimeError("lance error: Retryable commit conflict for version 7")

    monkeypatch.setattr(table, "delete", conflicting)
    with pytest.raises(TransientError, match="busy"):
        index.delete_document(1)
    assert len(tries) == lancedb_engine.CONFLICT_ATTEMPTS

    def broken(where: str) -> None:
        raise ValueError("Invalid user input: no such column")

    monkeypatch.setattr(table, "delete", broken)
    with pytest.raises(ValueError) as raised:
        index.delete_document(1)
    assert not isinstance(raised.value, TransientError)


def test_lancedb_adds_the_columns_of_later_releases_to_an_older_table(tmp_path) -> None:
    """A table written before `feedback_profile` existed is upgraded in place when opened:
    its rows keep their fields and read an empty profile, and profiles can be written."""
    import lancedb
    import pyarrow as pa

    from ingestion.search_index.lancedb_engine import TABLE, LanceDBIndex

    current = LanceDBIndex(tmp_path / "lancedb")
    old_schema = pa.schema([f for f in current._schema(DIM) if f.name != "feedback_profile"])
    row = {name: value for name, value in current._row(chunk(1, 0, "tide tables", feedback=0.5)).items()
           if name != "feedback_profile"}
    lancedb.connect(str(tmp_path / "lancedb")).create_table(TABLE, data=[row], schema=old_schema)

    index = LanceDBIndex(tmp_path / "lancedb")
    hits = index.bm25("tide", k=5, access=STAFF)
    assert [(h.chunk_id, h.feedback, h.feedback_profile) for h in hits] == [("1-0", 0.5, b"")]
    index.set_feedback({"1-0": 0.25}, {"1-0": b"profile"})
    assert index.get_chunks(["1-0"])["1-0"].feedback_profile == b"profile"
    upsert(index, 2, 1, [chunk(2, 0, "tide clocks")])
    assert sorted(ids(index.bm25("tide", k=5, access=STAFF))) == ["1-0", "2-0"]


def test_elasticsearch_adds_the_fields_of_later_releases_to_an_older_mapping(elasticsearch_url: str) -> None:
    """An index made by a release before generations (`<alias>-v1`) and before `feedback_profile`
    keeps serving: its mapping gains the field, and it reads as generation 1."""
    from elasticsearch import Elasticsearch

    from ingestion.search_index import elasticsearch_mapping as es_mapping
    from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex

    alias = f"freshet-contract-{uuid.uuid4().hex[:8]}"
    mappings = es_mapping.index_mappings(DIM)
    del mappings["properties"]["feedback_profile"]
    client = Elasticsearch(elasticsearch_url)
    client.indices.create(index=f"{alias}-v1", settings={"analysis": es_mapping.ANALYSIS}, mappings=mappings,
                          aliases={alias: {}})
    index = ElasticsearchIndex(url=elasticsearch_url, alias=alias, timeout=30.0)
    try:
        old = {k: v for k, v in es_mapping.chunk_source(chunk(1, 0, "tide tables")).items()
               if k != "feedback_profile"}
        client.index(index=alias, id="1-0", document=old, version=es_mapping.external_version(1),
                     version_type="external", refresh=True)

        index.set_feedback({"1-0": 0.25}, {"1-0": b"profile"})  # a feedback worker, first thing

        assert index.get_chunks(["1-0"])["1-0"].feedback_profile == b"profile"
        upsert(index, 2, 1, [chunk(2, 0, "tide clocks")])
        assert sorted(ids(index.bm25("tide", k=5, access=STAFF))) == ["1-0", "2-0"]
        assert set(client.indices.get_alias(name=alias)) == {f"{alias}-v1"}
        assert index.generation() == 1
    finally:
        index.drop()
    assert not client.indices.exists(index=f"{alias}-v1")


def test_elasticsearch_creates_generation_one_behind_the_alias(elasticsearch_url: str) -> None:
    from elasticsearch import Elasticsearch

    from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex
    from ingestion.search_index.elasticsearch_mapping import generation_index, index_generation

    alias = f"freshet-contract-{uuid.uuid4().hex[:8]}"
    client = Elasticsearch(elasticsearch_url)
    index = ElasticsearchIndex(url=elasticsearch_url, alias=alias, timeout=30.0)
    try:
        assert index.generation() is None
        write(index, 1, 1, ["first generation"])

        assert set(client.indices.get_alias(name=alias)) == {f"{alias}-g1"}
        assert index.generation() == 1
        # Another generation (a rebuild under way) is found by its name and dropped with the rest.
        client.indices.create(index=generation_index(alias, 2))
        assert index.generation() == 1  # the alias decides which generation serves
    finally:
        index.drop()
    assert not any(client.indices.exists(index=f"{alias}-g{n}") for n in (1, 2))
    assert not client.indices.exists_alias(name=alias)
    assert [index_generation(alias, name) for name in (f"{alias}-g12", f"{alias}-v1", f"{alias}-x-g1", alias)] \
        == [12, 1, None, None]


def test_lancedb_searches_with_a_lag_see_other_writers_within_it(tmp_path) -> None:
    """SEARCH_INDEX_SEARCH_LAG_SECONDS: searches look for another process's writes at most once per
    lag, so a write may stay unseen that long, and no longer; `get_chunks` sees it at once."""
    import time

    from ingestion.search_index.lancedb_engine import LanceDBIndex
    from tests.conftest import wait_for

    lag = 2.0
    writer = LanceDBIndex(tmp_path / "lancedb")  # another process's handle on the same files
    reader = LanceDBIndex(tmp_path / "lancedb", search_lag_seconds=lag)
    write(writer, 1, 1, ["kestrel sighting"], vec=axis(7))
    assert ids(reader.bm25("kestrel", k=5, access=ANONYMOUS)) == ["1-0"]  # the reader just looked

    started = time.monotonic()
    write(writer, 2, 1, ["kestrel nest"], vec=axis(7))
    assert set(reader.get_chunks(["2-0"])) == {"2-0"}
    stale = ids(reader.bm25("kestrel", k=5, access=ANONYMOUS))
    if time.monotonic() - started < lag:  # a stalled machine may have passed the lag already
        assert stale == ["1-0"]
    wait_for(lambda: sorted(ids(reader.bm25("kestrel", k=5, access=ANONYMOUS))) == ["1-0", "2-0"]
             and len(reader.knn(axis(7), k=5, access=ANONYMOUS)) == 2,
             timeout=lag + 3, interval=0.1, message="the reader to see the other writer's chunk")
