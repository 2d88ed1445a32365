"""The search-index interface: small on purpose, so two engines can implement it alike.

Both engines (LanceDB embedded, Elasticsearch 8) pass the same contract suite in tests/contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

PUBLIC_GROUP = "__public__"


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


class SearchIndex(ABC):
    """What Freshet needs from a search engine."""

    name: str = "abstract"

    @abstractmethod
    def ensure(self, *, dimension: int) -> None:
        """Create the index (or table) if it does not exist yet."""

    @abstractmethod
    def upsert_document(self, *, document_id: int, version: int, chunks: list[ChunkRecord]) -> None:
        """Write a document's chunks at `version` and remove its other chunks (surplus ordinals,
        older versions). A write older than what the index holds changes nothing."""

    def upsert_documents(self, documents: Iterable[DocumentChunks]) -> None:
        """`upsert_document` for each of several documents; an engine that can write them in one
        go (fewer commits, one pass over its id index) does so."""
        for document in documents:
            self.upsert_document(document_id=document.document_id, version=document.version,
                                 chunks=document.chunks)

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
    def get_chunks(self, ids: list[str]) -> dict[str, ChunkRecord]:
        """The stored chunks with these ids (missing ids are absent from the result)."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the engine cannot be reached."""

    @abstractmethod
    def optimize(self) -> None:
        """Compact and fold new rows into the indexes (a no-op for engines that need none)."""

    def refresh(self) -> bool:
        """Make what was written since the last refresh score like everything else in BM25;
        True if there was anything to do. Rows are searchable as soon as they are written; an
        engine whose full-text statistics lag behind its writes (LanceDB) catches up here.
        Called, coalesced, about a second after writes (ingestion.tasks.search_index_refresh)."""
        return False

    @abstractmethod
    def drop(self) -> None:
        """Remove everything (tests, rebuilds)."""
