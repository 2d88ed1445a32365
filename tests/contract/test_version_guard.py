"""What both engines share from base.py: the version guard's decisions for a write, and the fields a
chunk is stored as. Plain functions, no engine: the contract suite checks the engines carry them out."""

from __future__ import annotations

from ingestion.search_index.base import (
    ChunkRecord,
    ChunkRemoval,
    DocumentChunks,
    HeldVersions,
    chunk_fields,
    chunk_record,
    documents_newer,
    removals_after_write,
    search_hit,
)


def chunk(document_id: int, ordinal: int, *, version: int) -> ChunkRecord:
    return ChunkRecord(id=f"{document_id}-{ordinal}", document_id=document_id, source_id=1, ordinal=ordinal,
                       version=version, title="", text=f"chunk {ordinal}", uri="", vector=[1.0, 0.0],
                       public=True)


def document(document_id: int, version: int, chunks: int) -> DocumentChunks:
    return DocumentChunks(document_id, version, [chunk(document_id, i, version=version) for i in range(chunks)])


def held(count: int, oldest: int, newest: int) -> HeldVersions:
    return HeldVersions(count=count, oldest=oldest, newest=newest)


def test_it_sums_up_what_is_held_of_each_document() -> None:
    rows = [(1, 2), (1, 3), (2, 1), (1, 3)]

    assert HeldVersions.of_chunks(rows) == {1: held(3, 2, 3), 2: held(1, 1, 1)}
    assert HeldVersions.of_chunks([]) == {}


def test_it_skips_a_document_only_when_a_newer_version_is_held() -> None:
    wanted = {1: document(1, 2, 1), 2: document(2, 2, 1), 3: document(3, 2, 1), 4: document(4, 2, 0)}
    index = {1: held(2, 1, 3), 2: held(1, 2, 2), 3: held(1, 1, 1), 4: held(1, 5, 5)}

    assert documents_newer(wanted, index) == {1, 4}
    assert documents_newer(wanted, {}) == set()


def test_it_removes_older_versions_and_surplus_ordinals_after_a_write() -> None:
    written = {
        1: document(1, 2, 2),  # newer over older: every chunk of version 1 goes, and ordinals >= 2
        2: document(2, 3, 1),  # same version, fewer chunks: ordinals >= 1 go
        3: document(3, 3, 2),  # same version, same chunks: nothing to remove
        4: document(4, 1, 2),  # nothing held before
        5: document(5, 2, 0),  # a version without chunks: everything up to it goes
    }
    before = {1: held(3, 1, 1), 2: held(2, 3, 3), 3: held(2, 3, 3), 5: held(2, 1, 1)}

    assert removals_after_write(written, before, superseded=()) == [
        ChunkRemoval(1, 2, 2), ChunkRemoval(2, 3, 1), ChunkRemoval(5, 2, 0),
    ]


def test_it_removes_everything_up_to_its_version_of_a_superseded_document() -> None:
    # A newer version landed during the write: what this write left goes, whatever was held.
    written = {1: document(1, 2, 2), 2: document(2, 2, 1)}

    removals = removals_after_write(written, {2: held(1, 1, 1)}, superseded={1})

    assert removals == [ChunkRemoval(1, 2, 0), ChunkRemoval(2, 2, 1)]


def test_it_stores_a_chunk_as_fields_and_reads_it_back() -> None:
    record = ChunkRecord(id="7-1", document_id=7, source_id=3, ordinal=1, version=4, title="Title",
                         text="Text", uri="https://example.org/7", vector=[0.5, -0.5], public=False,
                         groups=("crew",), feedback=0.25, feedback_profile=b"\x00profile")

    fields = chunk_fields(record)

    assert fields["body"] == "Title\nText"
    assert chunk_fields(chunk(1, 0, version=1))["body"] == "chunk 0"
    assert chunk_record(fields) == record
    hit = search_hit(fields, score=0.5)
    assert (hit.chunk_id, hit.document_id, hit.ordinal, hit.score, hit.feedback, hit.feedback_profile) == (
        "7-1", 7, 1, 0.5, 0.25, b"\x00profile")
    # Chunks written before a field existed read its default.
    older = {name: value for name, value in fields.items() if name not in ("feedback", "feedback_profile", "groups")}
    assert chunk_record(older) == ChunkRecord(**{**record.__dict__, "groups": (), "feedback": 0.0,
                                                 "feedback_profile": b""})
