"""The embedded engine: LanceDB files under var/, BM25 full-text index plus vector search.

Errors (see SearchIndex): a write that keeps losing LanceDB's optimistic-concurrency race with
another process (a commit conflict) is retried here a few times, then raised as TransientError;
every other error is LanceDB's own and permanent.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import pyarrow as pa
from lancedb.index import IvfFlat

from events.errors import TransientError
from ingestion.search_index.base import (
    HIT_FIELDS,
    AccessFilter,
    ChunkRecord,
    ChunkRemoval,
    DocumentChunks,
    HeldVersions,
    SearchHit,
    SearchIndex,
    chunk_fields,
    chunk_record,
    documents_newer,
    search_hit,
)
from ingestion.search_index.lancedb_generations import TABLE, LanceDBGenerations
from ingestion.search_index.lancedb_vectors import MemoryKnn

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Filter columns with an index each (see _ensure_indexes).
SCALAR_INDEXES = (("public", "BITMAP"), ("groups", "LABEL_LIST"), ("source_id", "BTREE"),
                  ("document_id", "BTREE"), ("id", "BTREE"))
VECTOR_INDEX_MIN_ROWS = 4096  # below this a flat scan is as fast as an index
VECTOR_INDEX_ROWS_PER_PARTITION = 2500
EXHAUSTIVE = 1 << 20  # probe every partition: exact results (clamped to the partitions there are)
HIT_COLUMNS = list(HIT_FIELDS)
CONFLICT_ATTEMPTS = 8
MEMORY_KNN_ROWS = 100_000  # 150 MB of 384-dimension vectors
# Columns added after the first release: a table written before gets them, null, when opened.
ADDED_COLUMNS = (pa.field("feedback_profile", pa.binary()),)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def access_where(access: AccessFilter) -> str | None:
    clauses = []
    if not access.everything:
        allowed = "public = true"
        if access.groups:
            allowed += f" OR array_has_any(groups, [{', '.join(_quote(g) for g in access.groups)}])"
        clauses.append(f"({allowed})")
    if access.source_ids is not None:
        ids = ", ".join(str(int(i)) for i in access.source_ids) or "-1"
        clauses.append(f"source_id IN ({ids})")
    return " AND ".join(clauses) or None


class LanceDBIndex(LanceDBGenerations, SearchIndex):
    name = "lancedb"

    def __init__(self, path: Path | str, *, search_lag_seconds: float = 0.0, table: str | None = None,
                 memory_knn_rows: int = MEMORY_KNN_ROWS, memory_bm25: bool = True) -> None:
        """`table`: this one table (a generation being built); None: whichever the pointer names.
        `memory_knn_rows`: kNN in memory for tables up to this many rows (lancedb_vectors.py; 0: never);
        `memory_bm25`: BM25 in memory too for those tables (lancedb_bm25.py), else LanceDB's."""
        self.path = Path(path)
        self.search_lag = timedelta(seconds=max(0.0, float(search_lag_seconds)))
        self._lock = threading.Lock()
        self._fixed = table
        self._name = table or TABLE
        self._pointer_seen: tuple[int, int, int] | None = None
        self._pointer: dict[str, Any] = {}
        self._table = None
        self._search_table = None
        self._indexes_ready = False
        self._memory_knn = MemoryKnn(max_rows=memory_knn_rows, bm25=memory_bm25)

    # --- plumbing ---------------------------------------------------------------------------
    def _db(self):
        self.path.mkdir(parents=True, exist_ok=True)
        # Interval 0: every read sees the latest version written by any process (the worker
        # writes, the web process searches).
        return lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))

    def _schema(self, dimension: int) -> pa.Schema:
        return pa.schema([
            ("id", pa.string()),
            ("document_id", pa.int64()),
            ("source_id", pa.int64()),
            ("ordinal", pa.int32()),
            ("version", pa.int64()),
            ("title", pa.string()),
            ("text", pa.string()),
            ("body", pa.string()),  # title + text, what BM25 scores
            ("uri", pa.string()),
            ("public", pa.bool_()),
            ("groups", pa.list_(pa.string())),
            ("feedback", pa.float32()),
            ("feedback_profile", pa.binary()),  # null for chunks without votes
            ("vector", pa.list_(pa.float32(), dimension)),
        ])

    def _ensure(self, *, dimension: int) -> None:
        with self._lock:
            if self._table is None:
                table = self._db().create_table(self._name, schema=self._schema(dimension), exist_ok=True)
                self._columns_add(table)
                self._table = table

    def _open(self):
        self._follow()
        if self._table is None:
            with self._lock:
                if self._table is None:
                    try:
                        table = self._db().open_table(self._name)
                    except ValueError:
                        return None  # nothing indexed yet
                    self._columns_add(table)
                    self._table = table
        return self._table

    def warm_up(self) -> None:
        """Take the in-memory snapshot (vectors and the BM25 inverted index: ~1 s for 10,000
        chunks) now, not on the first search."""
        table = self._searched()
        if table is not None:
            self._memory_knn.snapshot(table, name=self._name)

    def _searched(self):
        """The table as `bm25` and `knn` read it. Without a search lag, the same handle as
        everything else: each search first looks for a newer table version (another process's
        write), which costs a few milliseconds. With one, a second handle that looks at most once
        per lag: searches may miss writes younger than the lag. Writes, their checks, `get_chunks`
        and `chunk_versions` always read the latest version."""
        table = self._open()
        if table is None or not self.search_lag:
            return table
        if self._search_table is None:
            with self._lock:
                if self._search_table is None:
                    db = lancedb.connect(str(self.path), read_consistency_interval=self.search_lag)
                    self._search_table = db.open_table(self._name)
        return self._search_table

    def _columns_add(self, table) -> None:
        """Give a table written by an earlier release the columns added since (null in every
        row), so an upgrade needs no rebuild."""
        for column in ADDED_COLUMNS:
            if column.name in table.schema.names:
                continue
            logger.info("Adding column %s to the search index", column.name)
            self._create_once(table, lambda column=column: table.add_columns(column),
                              made=lambda column=column: column.name in table.schema.names)

    def _ensure_indexes(self, table) -> None:
        """The full-text index, and scalar indexes on what every query filters by (access, source,
        document, id): without them each filtered search scans every row's filter columns."""
        if self._indexes_ready:
            return
        held = {tuple(index.columns) for index in table.list_indices()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if ("body",) not in held:
                self._create_once(table, lambda: table.create_fts_index("body", use_tantivy=False, replace=False),
                                  made=lambda: self._indexed(table, "body"))
            for column, kind in SCALAR_INDEXES:
                if (column,) not in held:
                    self._create_once(
                        table, lambda column=column, kind=kind: table.create_scalar_index(
                            column, index_type=kind, replace=False),
                        made=lambda column=column: self._indexed(table, column))
        self._indexes_ready = True

    @staticmethod
    def _indexed(table, column: str) -> bool:
        return any(index.columns == [column] for index in table.list_indices())

    def _create_once(self, table, create: Callable[[], Any], *, made: Callable[[], bool]) -> None:
        """Add an index or a column unless another process does it first: two workers opening the
        table or writing their first chunks race here, and the loser's commit conflict (or
        "already exists") is no error as long as `made()` holds afterwards."""
        try:
            self._retry(create)
        except (RuntimeError, OSError, ValueError, TransientError) as error:
            table.checkout_latest()
            if not made():
                raise
            logger.info("Made by another process meanwhile: %s", error)

    def _ensure_vector_index(self, table) -> None:
        """An IVF_FLAT index once the table is large enough for it to pay. Searched with every
        partition probed, it returns exactly what a flat scan does (the SciFact evaluation is
        unchanged) in a third of the time; rows written since it was built are scanned flat until
        the next optimize folds them in."""
        if any(index.columns == ["vector"] for index in table.list_indices()):
            return
        rows = table.count_rows()
        if rows < VECTOR_INDEX_MIN_ROWS:
            return
        partitions = max(1, min(256, rows // VECTOR_INDEX_ROWS_PER_PARTITION))
        logger.info("Building the vector index over %d rows (%d partitions)", rows, partitions)
        config = IvfFlat(distance_type="cosine", num_partitions=partitions)
        self._retry(lambda: table.create_index("vector", config=config, replace=False))

    def _retry(self, action: Callable[[], T]) -> T:
        """Retry a write that lost an optimistic-concurrency race with another process; one that
        keeps losing is TransientError (the table is busy), anything else raises as it is."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return action()
            except (OSError, RuntimeError, ValueError) as error:
                if "onflict" not in str(error) and "etry" not in str(error):
                    raise
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise TransientError(f"LanceDB table busy: {error}") from error
                time.sleep(0.05 * (2 ** attempt))
        raise AssertionError("unreachable")

    # --- writes -----------------------------------------------------------------------------
    # One version check, one merge, one clean-up per batch (SearchIndex.upsert_documents): each
    # LanceDB write is a commit and a pass over the id index, so a batch costs about one document.
    def _versions_held(self, document_ids: list[int]) -> dict[int, HeldVersions] | None:
        table = self._open()
        if table is None:
            return None
        ids = ", ".join(str(int(doc)) for doc in document_ids)
        rows = (table.search().where(f"document_id IN ({ids})").select(["document_id", "version"])
                .limit(None).to_list())
        return HeldVersions.of_chunks((row["document_id"], row["version"]) for row in rows)

    def _documents_write(self, documents: Mapping[int, DocumentChunks]) -> set[int]:
        table = self._open()
        rows = [self._row(chunk) for document in documents.values() for chunk in document.chunks]
        self._retry(lambda: (
            table.merge_insert("id")
            .when_matched_update_all(where="target.version <= source.version")
            .when_not_matched_insert_all()
            .execute(rows)
        ))
        self._ensure_indexes(table)
        # A newer version may have been written between the version check and the merge.
        return documents_newer(documents, self._versions_held(list(documents)) or {})

    def _chunks_remove(self, removals: list[ChunkRemoval]) -> None:
        table = self._open()
        where = " OR ".join(
            f"(document_id = {int(r.document_id)} AND (version < {int(r.version)} OR "
            f"(version = {int(r.version)} AND ordinal >= {int(r.from_ordinal)})))"
            for r in removals
        )
        self._retry(lambda: table.delete(where))

    @staticmethod
    def _row(chunk: ChunkRecord) -> dict[str, Any]:
        return {**chunk_fields(chunk), "feedback_profile": chunk.feedback_profile or None}

    def delete_document(self, document_id: int) -> None:
        table = self._open()
        if table is not None:
            self._retry(lambda: table.delete(f"document_id = {int(document_id)}"))

    def delete_source(self, source_id: int) -> None:
        table = self._open()
        if table is not None:
            self._retry(lambda: table.delete(f"source_id = {int(source_id)}"))

    def set_source_access(self, *, source_id: int, public: bool, groups: Iterable[str]) -> None:
        table = self._open()
        if table is not None:
            names = sorted(set(groups))
            # An empty list literal has no type for LanceDB to cast, so SQL spells that case.
            groups_sql = (
                "[" + ", ".join(_quote(name) for name in names) + "]" if names
                else "arrow_cast(make_array(), 'List(Utf8)')"
            )
            updates = {"public": "true" if public else "false", "groups": groups_sql}
            self._retry(lambda: table.update(where=f"source_id = {int(source_id)}", values_sql=updates))

    def set_feedback(self, scores: dict[str, float], profiles: dict[str, bytes] | None = None) -> None:
        table = self._open()
        if table is None or not scores:
            return
        # One merge writes every score in one table version, however many chunks changed; the
        # columns left out of `rows` keep their values.
        columns = {
            "id": pa.array(list(scores), pa.string()),
            "feedback": pa.array([float(v) for v in scores.values()], pa.float32()),
        }
        if profiles is not None:
            columns["feedback_profile"] = pa.array([profiles.get(i) or None for i in scores], pa.binary())
        rows = pa.table(columns)
        self._retry(lambda: table.merge_insert("id").when_matched_update_all().execute(rows))

    # --- reads ------------------------------------------------------------------------------
    @staticmethod
    def _hits(rows: list[dict], score: Callable[[dict], float]) -> list[SearchHit]:
        return [search_hit(row, score=score(row)) for row in rows]

    def bm25(self, text: str, *, k: int, access: AccessFilter) -> list[SearchHit]:
        if not text.strip():
            return []
        searched = self._searched()  # opens the table (one look at the generation pointer)
        if searched is None:
            return []
        snapshot = self._memory_knn.snapshot(searched, name=self._name, fresh_for=self.search_lag.total_seconds())
        if snapshot is not None and snapshot.terms is not None:
            return self._memory_knn.bm25(snapshot, text, k=k, access=access)
        table = self._open()  # LanceDB's own search (a table over the memory limit): its indexes first
        if table is None:
            return []
        self._ensure_indexes(table)
        query = searched.search(text, query_type="fts", fts_columns="body")
        where = access_where(access)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(HIT_COLUMNS + ["_score"]).limit(k).to_list()
        return self._hits(rows, lambda row: float(row["_score"]))

    def knn(self, vector: list[float], *, k: int, access: AccessFilter) -> list[SearchHit]:
        table = self._searched()
        if table is None:
            return []
        snapshot = self._memory_knn.snapshot(table, name=self._name, fresh_for=self.search_lag.total_seconds())
        if snapshot is not None:
            return self._memory_knn.search(snapshot, vector, k=k, access=access)
        query = table.search(list(vector), vector_column_name="vector").distance_type("cosine").nprobes(EXHAUSTIVE)
        where = access_where(access)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(HIT_COLUMNS + ["_distance"]).limit(k).to_list()
        return self._hits(rows, lambda row: 1.0 - float(row["_distance"]))

    def chunk_versions(self, *, document_id: int | None = None) -> dict[str, int]:
        rows = self._listed(["id", "version"],
                            where=None if document_id is None else f"document_id = {int(document_id)}")
        return {row["id"]: row["version"] for row in rows}

    def get_chunks(self, ids: list[str]) -> dict[str, ChunkRecord]:
        table = self._open()
        if table is None or not ids:
            return {}
        where = f"id IN ({', '.join(_quote(i) for i in ids)})"
        rows = table.search().where(where).limit(None).to_list()
        return {row["id"]: chunk_record(row) for row in rows}

    def count(self) -> int:
        table = self._open()
        return 0 if table is None else table.count_rows()

    def ping(self) -> None:
        self._db().list_tables()

    def optimize(self) -> None:
        """Build the vector index once the table is large enough, then compact: merge the small
        fragments every write leaves, fold new rows into the indexes, and remove table versions
        older than ten minutes (a search running that long is not expected)."""
        table = self._open()
        if table is not None:
            self._ensure_vector_index(table)
            self._retry(lambda: table.optimize(cleanup_older_than=timedelta(minutes=10)))

    def refresh(self) -> bool:
        """Rows are searchable as soon as they are written, but rows written after the full-text
        index was last built are scored by a flat scan with statistics of their own, not
        comparable with the indexed rows' scores (a chunk whose feedback score was just rewritten
        would jump or sink in BM25 for no reason of its own). Folding them into the index (an
        `optimize`, only when there are such rows) puts every row on the same statistics."""
        table = self._open()
        if table is None:
            return False
        fts = next((index.name for index in table.list_indices() if index.index_type == "FTS"), None)
        if fts is None:
            return False
        stats = table.index_stats(fts)
        if stats is None or not stats.num_unindexed_rows:
            return False
        self.optimize()
        return True
