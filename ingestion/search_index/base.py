"""The search-index interface: small on purpose, so two engines can implement it alike.

Both engines (LanceDB embedded, Elasticsearch 8) pass the same contract suite in tests/contract.
What they would otherwise each write again lives here too: the fields a chunk is stored as
(`chunk_fields`, `chunk_record`, `search_hit`) and the version guard's decisions for a write
(`documents_newer`, `removals_after_write`, run by `SearchIndex.upsert_documents`); an engine only
translates them into its own queries.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

logger = logging.getLogger(__name__)

PUBLIC_GROUP = "__public__"
# What a search returns of each chunk (SearchHit); the vector stays behind.
HIT_FIELDS = ("id", "document_id", "source_id", "ordinal", "title", "text", "uri", "feedback", "feedback_profile")


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk as the index stores it. `id` is deterministic: document id + ordinal."""

    id: str
    document_id: int
    source_id: int
    ordinal: int
    version: int
    title: str
    text: str
    uri: str
    vector: list[float]
    public: bool
    groups: tuple[str, ...] = ()
    feedback: float = 0.0
    feedback_profile: bytes = b""  # opaque to the index: feedback/profiles.py


@dataclass(frozen=True)
class DocumentChunks:
    """A document's chunks at one version, as one item of a batched write."""

    document_id: int
    version: int
    chunks: list[ChunkRecord]


@dataclass(frozen=True)
class AccessFilter:
    """Who is asking: staff see everything; others see public sources plus their groups'."""

    everything: bool = False
    groups: tuple[str, ...] = ()
    source_ids: tuple[int, ...] | None = None  # optional narrowing to some sources

    @classmethod
    def staff(cls) -> AccessFilter:
        return cls(everything=True)

    def narrowed(self, source_ids: Iterable[int]) -> AccessFilter:
        """The same access within `source_ids` only: never wider than it was (a user's filter is
        already the set of sources they may see; narrowing intersects it)."""
        wanted = {int(source_id) for source_id in source_ids}
        if self.source_ids is not None:
            wanted &= set(self.source_ids)
        return replace(self, source_ids=tuple(sorted(wanted)))


@dataclass
class SearchHit:
    chunk_id: str
    document_id: int
    source_id: int
    ordinal: int
    title: str
    text: str
    uri: str
    score: float
    feedback: float = 0.0
    feedback_profile: bytes = b""
    ranks: dict[str, int] = field(default_factory=dict)


# --- the stored fields ------------------------------------------------------------------------
def chunk_fields(chunk: ChunkRecord) -> dict[str, Any]:
    """A chunk as both engines store it, field by field: the record's fields plus `body` (title and
    text, what BM25 scores). `feedback_profile` is the record's bytes (empty: none); an engine
    encodes it as its store needs."""
    return {
        "id": chunk.id,
        "document_id": int(chunk.document_id),
        "source_id": int(chunk.source_id),
        "ordinal": int(chunk.ordinal),
        "version": int(chunk.version),
        "title": chunk.title,
        "text": chunk.text,
        "body": f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text,
        "uri": chunk.uri,
        "public": bool(chunk.public),
        "groups": list(chunk.groups),
        "feedback": float(chunk.feedback),
        "feedback_profile": chunk.feedback_profile,
        "vector": [float(x) for x in chunk.vector],
    }


def chunk_record(fields: Mapping[str, Any]) -> ChunkRecord:
    """The record of a stored chunk's fields (`feedback_profile` already decoded to bytes by the
    engine). Fields that chunks written by an earlier release lack read as their defaults."""
    return ChunkRecord(
        id=fields["id"], document_id=int(fields["document_id"]), source_id=int(fields["source_id"]),
        ordinal=int(fields["ordinal"]), version=int(fields["version"]), title=fields["title"],
        text=fields["text"], uri=fields["uri"], vector=[float(x) for x in fields["vector"]],
        public=bool(fields["public"]), groups=tuple(fields.get("groups") or ()),
        feedback=float(fields.get("feedback") or 0.0), feedback_profile=fields.get("feedback_profile") or b"",
    )


def search_hit(fields: Mapping[str, Any], *, score: float) -> SearchHit:
    """A search hit of a stored chunk's HIT_FIELDS, as `chunk_record` reads them."""
    return SearchHit(
        chunk_id=fields["id"], document_id=int(fields["document_id"]), source_id=int(fields["source_id"]),
        ordinal=int(fields["ordinal"]), title=fields["title"], text=fields["text"], uri=fields["uri"],
        score=score, feedback=float(fields.get("feedback") or 0.0),
        feedback_profile=fields.get("feedback_profile") or b"",
    )


# --- reconciliation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldChunk:
    """What the index holds of one chunk, as reconciliation compares it with the database."""

    document_id: int
    source_id: int
    version: int


# --- the version guard ------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldVersions:
    """What the index holds of one document: how many chunks, and their lowest and highest version."""

    count: int
    oldest: int
    newest: int

    @classmethod
    def of_chunks(cls, rows: Iterable[tuple[int, int]]) -> dict[int, HeldVersions]:
        """Document id -> what is held, from (document id, version) of each chunk."""
        versions: dict[int, list[int]] = {}
        for document_id, version in rows:
            versions.setdefault(int(document_id), []).append(int(version))
        return {doc: cls(count=len(held), oldest=min(held), newest=max(held)) for doc, held in versions.items()}


@dataclass(frozen=True)
class ChunkRemoval:
    """Chunks of one document that go: every chunk of a version below `version`, and those of
    `version` itself from ordinal `from_ordinal` on (0: all of that version too)."""

    document_id: int
    version: int
    from_ordinal: int


def documents_newer(documents: Mapping[int, DocumentChunks], held: Mapping[int, HeldVersions]) -> set[int]:
    """The documents of which the index holds a newer version than the one given (a late task's
    write of older content must change nothing)."""
    return {doc for doc, document in documents.items()
            if doc in held and held[doc].count and held[doc].newest > document.version}


def removals_after_write(written: Mapping[int, DocumentChunks], held: Mapping[int, HeldVersions],
                         superseded: Collection[int]) -> list[ChunkRemoval]:
    """What goes once `written` is written over what the index `held` before it. Of a document in
    `superseded` (a newer version was written while this one was, after the check that let this one
    through): everything up to its version, since the newer write's clean-up may be done already.
    Of the others: their older versions and the ordinals past the new last one."""
    removals = []
    for doc, document in written.items():
        had = held.get(doc)
        version = int(document.version)
        if doc in superseded:
            logger.info("Document %s moved past version %s during the write; removing it", doc, version)
            removals.append(ChunkRemoval(doc, version, 0))
        elif had and had.count and (had.oldest < version or had.count > len(document.chunks)):
            removals.append(ChunkRemoval(doc, version, len(document.chunks)))
    return removals


# --- the interface ----------------------------------------------------------------------------
class SearchIndex(ABC):
    """What Freshet needs from a search engine.

    Errors: every method raises `events.errors.TransientError` for a failure worth retrying later
    (the engine unreachable, a timeout, a 429 or an unavailable 5xx answer, a lock or write
    conflict that outlasted the engine's own retries) and lets every other error raise as it is:
    those are permanent, and retrying them would fail the same way (a refused item, a malformed
    query, a vector of another dimension: ValueError).
    """

    name: str = "abstract"

    def warm_up(self) -> None:
        """Load what the first search would otherwise wait for (a web process calls it while it
        starts). Nothing by default."""
        return None

    def upsert_documents(self, documents: Iterable[DocumentChunks]) -> None:
        """Write each document's chunks at its version and remove its other chunks (surplus
        ordinals, older versions): the one way chunks are written. A document of which the index
        holds a newer version is left as it is. Creates the index on the first write (the vector
        dimension is the chunks'); a document given twice is written as the last one given.

        The version guard is decided here, the same for every engine; the engine's hooks read
        what it holds, write and remove, as few requests as it can for the whole batch."""
        wanted = {int(document.document_id): document for document in documents}
        dimension = next((len(chunk.vector) for document in wanted.values() for chunk in document.chunks), None)
        if dimension is not None:
            self._ensure(dimension=dimension)
        held = self._versions_held(list(wanted)) if wanted else None
        if held is None:  # no index: made again if another process dropped it since `_ensure`
            if dimension is None:
                return
            self._ensure(dimension=dimension)
            held = {}
        newer = documents_newer(wanted, held)
        for doc in sorted(newer):
            logger.info("Index holds a newer version of document %s than %s; skipping", doc, wanted[doc].version)
        writing = {doc: document for doc, document in wanted.items() if doc not in newer}
        superseded = self._documents_write(writing) if any(d.chunks for d in writing.values()) else set()
        removals = removals_after_write(writing, held, superseded)
        if removals:
            self._chunks_remove(removals)

    @abstractmethod
    def _ensure(self, *, dimension: int) -> None:
        """Create the index (or table) for vectors of `dimension` if it does not exist yet."""

    @abstractmethod
    def _versions_held(self, document_ids: list[int]) -> dict[int, HeldVersions] | None:
        """What the index holds of each of these documents (absent: nothing); None when there is
        no index (an engine that remembers having made it forgets that here)."""

    @abstractmethod
    def _documents_write(self, documents: Mapping[int, DocumentChunks]) -> set[int]:
        """Write the documents' chunks (some have any), never over a chunk of a newer version;
        return the documents of which the index turned out to hold a newer version meanwhile."""

    @abstractmethod
    def _chunks_remove(self, removals: list[ChunkRemoval]) -> None:
        """Delete the chunks of each removal."""

    @abstractmethod
    def delete_document(self, document_id: int) -> None: ...

    @abstractmethod
    def delete_source(self, source_id: int) -> None: ...

    @abstractmethod
    def set_source_access(self, *, source_id: int, public: bool, groups: Iterable[str]) -> None:
        """Rewrite the access fields of every chunk of a source."""

    @abstractmethod
    def bm25(self, text: str, *, k: int, access: AccessFilter) -> list[SearchHit]: ...

    @abstractmethod
    def knn(self, vector: list[float], *, k: int, access: AccessFilter) -> list[SearchHit]: ...

    @abstractmethod
    def set_feedback(self, scores: dict[str, float], profiles: dict[str, bytes] | None = None) -> None:
        """Rewrite the feedback score of the given chunks and, when `profiles` is given, their
        question profile (stored as given, returned on hits; emptied where `profiles` has none;
        `None` leaves the stored profiles as they are). Ids that are gone are skipped."""

    @abstractmethod
    def chunk_versions(self, *, document_id: int | None = None) -> dict[str, int]:
        """Chunk id -> document version for what the index holds (for reconciliation)."""

    @abstractmethod
    def chunks_listed(self, *, source_id: int | None = None) -> dict[str, HeldChunk]:
        """Chunk id -> its document, source and version, for every chunk the index holds (or a
        source's): what `manage.py reconcile` compares with the database's chunks."""

    @abstractmethod
    def get_chunks(self, ids: list[str]) -> dict[str, ChunkRecord]:
        """The stored chunks with these ids (missing ids are absent from the result)."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the engine cannot be reached."""

    @abstractmethod
    def refresh(self) -> bool:
        """Make recent writes visible to searches and scored on the same BM25 statistics as
        everything else; cheap, called (coalesced) about a second after writes
        (ingestion.tasks.search_index_refresh). True if there were writes to catch up on."""

    @abstractmethod
    def optimize(self) -> None:
        """Periodic housekeeping (compaction, index upkeep, old versions removed), which also does
        what `refresh` does; expensive, run on a schedule (ingestion.tasks.search_index_optimize)."""

    @abstractmethod
    def drop(self) -> None:
        """Remove everything (tests, rebuilds)."""

    # --- generations: rebuilds (ingestion/rebuild.py, `manage.py index_rebuild`) ----------------
    # The index serves one generation at a time. A rebuild fills the next one, through the
    # SearchIndex that `generation_begin` returns, while the current one keeps serving; then
    # `generation_switch` makes it the one every process reads and writes, atomically, and drops the
    # old one. Each generation records the embedding model its vectors were made with.
    @abstractmethod
    def index_model(self) -> str | None:
        """The embedding model the serving generation was built with (None: not recorded, or no index)."""

    @abstractmethod
    def index_model_set(self, model: str) -> None:
        """Record the embedding model of the serving generation (its first write, or a rebuild)."""

    @abstractmethod
    def generation(self) -> int | None:
        """The number of the serving generation (None: no index yet)."""

    @abstractmethod
    def generation_begin(self) -> SearchIndex:
        """An empty next generation, not serving, left from nothing an earlier rebuild aborted:
        write it with the returned index's `upsert_documents` (created on its first write)."""

    @abstractmethod
    def generation_switch(self, building: SearchIndex, *, model: str, grace_seconds: float = 2.0) -> None:
        """Make `building` the serving generation at once for every process, recorded as built
        with `model`; drop the old one `grace_seconds` later (searches and writes that were on
        their way to it finish first)."""
