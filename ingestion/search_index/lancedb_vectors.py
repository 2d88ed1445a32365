"""Exact kNN (and BM25, lancedb_bm25.py) in memory over a LanceDB table, for tables small enough
to hold.

LanceDB spends 6-8 ms of planning, I/O and Arrow conversion on one kNN query over 10,000 rows,
where the arithmetic (a 10,000 x 384 matrix-vector product) is well under a millisecond. So the
searching process keeps the table's vectors, the access columns and the hit fields as numpy and
Arrow arrays, taken again whenever the table's version changes (a write, a feedback score, a
generation switch), and answers kNN with one product, the access filter as a boolean mask. The
results are those of LanceDB's exhaustive search: cosine similarity, the same prefilter. The same
snapshot holds the inverted index of the rows' bodies, so BM25 is answered from memory too, under
the same mask and the same freshness (a search sees what the table version it checked holds).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ingestion.search_index.base import HIT_FIELDS, AccessFilter, SearchHit
from ingestion.search_index.lancedb_bm25 import TermIndex, Vocabulary, term_index

# Access filters' masks a snapshot keeps (users searching within one version): a byte a row each,
# 25 MB at most beside the 150 MB of vectors of a table at SEARCH_INDEX_MEMORY_KNN_ROWS (100,000).
MASKS_KEPT = 256


@dataclass
class Snapshot:
    key: tuple[str, int]  # (table name, version)
    vectors: np.ndarray  # rows x dimension, each row divided by its norm
    public: np.ndarray
    source_ids: np.ndarray
    group_rows: dict[str, np.ndarray]  # group name -> its rows' mask
    hits: dict[str, list]  # HIT_FIELDS of every row as Python values, in the same order
    terms: TermIndex | None = None  # the bodies' inverted index (None: BM25 is left to LanceDB)
    # The masks of the access filters met lately, read-only (both lists of a hybrid search, and
    # every search of the same user, ask for the same one while this version serves).
    masks: dict[AccessFilter, np.ndarray | None] = field(default_factory=dict, repr=False)

    def hits_of(self, rows: list[int], scores: list[float]) -> list[SearchHit]:
        """The search hits of these rows with these scores, as `search_hit` makes them from the
        same fields (built directly: a dict per row cost half a millisecond per 100 hits)."""
        c = self.hits
        ids, documents, sources, ordinals = c["id"], c["document_id"], c["source_id"], c["ordinal"]
        titles, texts, uris, feedback, profiles = c["title"], c["text"], c["uri"], c["feedback"], c["feedback_profile"]
        return [SearchHit(chunk_id=ids[r], document_id=documents[r], source_id=sources[r], ordinal=ordinals[r],
                          title=titles[r], text=texts[r], uri=uris[r], score=score, feedback=feedback[r],
                          feedback_profile=profiles[r])
                for r, score in zip(rows, scores, strict=True)]

    def allowed(self, access: AccessFilter) -> np.ndarray | None:
        """The rows `access` may see (None: every row), a read-only array. Kept per filter for
        this snapshot's life: working it out (np.isin over every row's source) was an eighth of a
        search request's Python time, twice a hybrid request."""
        try:
            return self.masks[access]
        except KeyError:
            pass
        mask = self._mask(access)
        if mask is not None:
            mask.flags.writeable = False
        if len(self.masks) >= MASKS_KEPT:
            self.masks.clear()
        self.masks[access] = mask
        return mask

    def _mask(self, access: AccessFilter) -> np.ndarray | None:
        mask = None
        if not access.everything:
            mask = self.public.copy()
            for group in access.groups:
                rows = self.group_rows.get(group)
                if rows is not None:
                    mask |= rows
        if access.source_ids is not None:
            narrowed = np.isin(self.source_ids, np.asarray(access.source_ids, dtype=np.int64))
            mask = narrowed if mask is None else mask & narrowed
        return mask


def snapshot_take(table, *, name: str, version: int, vocabulary: Vocabulary | None = None) -> Snapshot:
    """The table's rows as arrays; with `vocabulary`, the inverted index of their bodies too."""
    columns = (*HIT_FIELDS, "vector", "public", "groups", *(("body",) if vocabulary is not None else ()))
    data = table.to_arrow().select([*dict.fromkeys(columns)])
    vectors = data.column("vector").combine_chunks()
    dimension = vectors.type.list_size
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dimension)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    group_rows: dict[str, np.ndarray] = {}
    for row, groups in enumerate(data.column("groups").to_pylist()):
        for group in groups or ():
            group_rows.setdefault(group, np.zeros(len(data), dtype=bool))[row] = True
    hits = {name: data.column(name).to_pylist() for name in HIT_FIELDS}
    terms = None
    if vocabulary is not None:
        terms = term_index(hits["id"], data.column("body").to_pylist(), vocabulary)
    return Snapshot(
        key=(name, version), vectors=matrix,
        public=data.column("public").to_numpy(zero_copy_only=False).astype(bool),
        source_ids=data.column("source_id").to_numpy(zero_copy_only=False).astype(np.int64),
        # As Python values once per version, not per query: converting 100 Arrow rows per query
        # cost more than the product itself.
        group_rows=group_rows, hits=hits_columns(hits), terms=terms,
    )


def hits_columns(columns: dict[str, list]) -> dict[str, list]:
    """HIT_FIELDS as `search_hit` types them: ints, feedback 0.0 and profiles b"" where null."""
    typed = dict(columns)
    for name in ("document_id", "source_id", "ordinal"):
        typed[name] = [int(v) for v in columns[name]]
    typed["feedback"] = [float(v or 0.0) for v in columns["feedback"]]
    typed["feedback_profile"] = [v or b"" for v in columns["feedback_profile"]]
    return typed


class MemoryKnn:
    """The snapshot of one table, taken again when its version changes; None for a table with
    more than `max_rows` rows (LanceDB answers those). With `bm25`, the snapshot holds the
    inverted index too and `bm25` answers full-text queries from it."""

    def __init__(self, *, max_rows: int, bm25: bool = True) -> None:
        self.max_rows = max_rows
        self._held: Snapshot | None = None
        self._checked_at = 0.0  # time.monotonic() of the last look at the table's version
        self._lock = threading.Lock()
        # Kept across versions: each snapshot tokenises only the bodies it has not seen.
        self._vocabulary: Vocabulary | None = Vocabulary() if bm25 else None

    def snapshot(self, table, *, name: str, fresh_for: float = 0.0) -> Snapshot | None:
        """The snapshot of `table`'s current version. With `fresh_for` (the search lag, seconds),
        a snapshot whose version was checked less than that long ago is taken as current without
        asking LanceDB again (a quarter of a millisecond a call): `table` is then a handle that
        looks for new versions at most that often anyway, so a search still sees a write within
        the lag."""
        if self.max_rows <= 0:
            return None
        held = self._held
        if fresh_for > 0 and held is not None and held.key[0] == name and \
                time.monotonic() - self._checked_at < fresh_for:
            return held
        key = (name, int(table.version))
        if held is not None and held.key == key:
            self._checked_at = time.monotonic()
            return held
        with self._lock:
            held = self._held
            if held is not None and held.key == key:
                return held
            if table.count_rows() > self.max_rows:
                self._held = None
                return None
            self._held = snapshot_take(table, name=name, version=key[1], vocabulary=self._vocabulary)
            self._checked_at = time.monotonic()
            return self._held

    @staticmethod
    def search(snapshot: Snapshot, vector: list[float], *, k: int, access: AccessFilter) -> list[SearchHit]:
        query = np.asarray(vector, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        mask = snapshot.allowed(access)
        visible = len(snapshot.vectors) if mask is None else int(mask.sum())
        if not visible or k < 1:
            return []
        # einsum, not `@`: BLAS's threads for one matrix-vector product cost more CPU than they
        # save on a busy machine (measured: 7 ms against 1.5 ms single-threaded for 10,000 rows).
        scores = np.einsum("ij,j->i", snapshot.vectors, query)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        k = min(k, visible)
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return snapshot.hits_of(top.tolist(), scores[top].tolist())

    @staticmethod
    def bm25(snapshot: Snapshot, text: str, *, k: int, access: AccessFilter) -> list[SearchHit]:
        """The top `k` rows `access` may see by BM25 score for `text` (rows no query term
        matches are not hits), as LanceDB's prefiltered full-text search ranks them."""
        assert snapshot.terms is not None, "a snapshot taken without BM25"
        scores = snapshot.terms.scores(text) if k >= 1 else None
        if scores is None:
            return []
        mask = snapshot.allowed(access)
        if mask is not None:
            scores[~mask] = 0.0
        matched = int(np.count_nonzero(scores))
        if not matched:
            return []
        k = min(k, matched)
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return snapshot.hits_of(top.tolist(), scores[top].tolist())
