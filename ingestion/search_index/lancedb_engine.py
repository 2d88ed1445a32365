"""The embedded engine: LanceDB files under var/, BM25 full-text index plus vector search."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import pyarrow as pa
from lancedb.index import IvfFlat

from ingestion.search_index.base import AccessFilter, ChunkRecord, DocumentChunks, SearchHit, SearchIndex

logger = logging.getLogger(__name__)
T = TypeVar("T")

TABLE = "chunks"
# Filter columns with an index each (see _ensure_indexes).
SCALAR_INDEXES = (("public", "BITMAP"), ("groups", "LABEL_LIST"), ("source_id", "BTREE"),
                  ("document_id", "BTREE"), ("id", "BTREE"))
VECTOR_INDEX_MIN_ROWS = 4096  # below this a flat scan is as fast as an index
VECTOR_INDEX_ROWS_PER_PARTITION = 2500
EXHAUSTIVE = 1 << 20  # probe every partition: exact results (clamped to the partitions there are)
HIT_COLUMNS = ["id", "document_id", "source_id", "ordinal", "title", "text", "uri", "feedback", "feedback_profile"]
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


class LanceDBIndex(SearchIndex):
    name = "lancedb"

    def __init__(self, path: Path | str, *, search_lag_seconds: float = 0.0) -> None:
        self.path = Path(path)
        self.search_lag = timedelta(seconds=max(0.0, float(search_lag_seconds)))
        self._lock = threading.Lock()
        self._table = None
        self._search_table = None
        self._indexes_ready = False

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

    def ensure(self, *, dimension: int) -> None:
        with self._lock:
            if self._table is None:
                table = self._db().create_table(TABLE, schema=self._schema(dimension), exist_ok=True)
                self._columns_add(table)
                self._table = table

    def _open(self):
        if self._table is None:
            with self._lock:
                if self._table is None:
                    try:
                        table = self._db().open_table(TABLE)
                    except ValueError:
                        return None  # nothing indexed yet
                    self._columns_add(table)
                    self._table = table
        return self._table

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
                    self._search_table = db.open_table(TABLE)
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
        except (RuntimeError, OSError, ValueError) as error:
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
        """Retry a write that lost an optimistic-concurrency race with another process."""
        for attempt in range(8):
            try:
                return action()
            except (OSError, RuntimeError, ValueError) as error:
                if "onflict" not in str(error) and "etry" not in str(error) or attempt == 7:
                    raise
                time.sleep(0.05 * (2 ** attempt))
        raise AssertionError("unreachable")

    # --- writes -----------------------------------------------------------------------------
    def upsert_document(self, *, document_id: int, version: int, chunks: list[ChunkRecord]) -> None:
        self.upsert_documents([DocumentChunks(document_id, version, chunks)])

    def upsert_documents(self, documents: Iterable[DocumentChunks]) -> None:
        """One version check, one merge, one clean-up for all the documents: each LanceDB write
        is a commit and a pass over the id index, so a batch costs about what one document does."""
        wanted = {int(document.document_id): document for document in documents}
        first = next((chunk for document in wanted.values() for chunk in document.chunks), None)
        if first is not None:
            self.ensure(dimension=len(first.vector))
        table = self._open()
        if table is None or not wanted:
            return
        held = self._versions_held(table, wanted)
        writing = {}
        for doc, document in wanted.items():
            if any(held_version > document.version for held_version in held.get(doc, ())):
                logger.info("Index holds a newer version of document %s than %s; skipping", doc, document.version)
            else:
                writing[doc] = document
        rows = [self._row(chunk) for document in writing.values() for chunk in document.chunks]
        if rows:
            self._retry(lambda: (
                table.merge_insert("id")
                .when_matched_update_all(where="target.version <= source.version")
                .when_not_matched_insert_all()
                .execute(rows)
            ))
            self._ensure_indexes(table)
        # Older versions and surplus ordinals of what was written go.
        stale = [
            f"(document_id = {doc} AND (version < {int(document.version)} OR "
            f"(version = {int(document.version)} AND ordinal >= {len(document.chunks)})))"
            for doc, document in writing.items()
            if any(v < document.version for v in held.get(doc, ())) or len(held.get(doc, ())) > len(document.chunks)
        ]
        if stale:
            self._retry(lambda: table.delete(" OR ".join(stale)))
        # A newer version may have been written between the check above and the merge: then
        # whatever this write inserted is stale and goes.
        superseded = [
            f"(document_id = {doc} AND version <= {int(writing[doc].version)})"
            for doc, versions in self._versions_held(table, writing).items()
            if any(v > writing[doc].version for v in versions)
        ]
        if superseded:
            self._retry(lambda: table.delete(" OR ".join(superseded)))

    @staticmethod
    def _versions_held(table, documents: Iterable[int]) -> dict[int, list[int]]:
        """Document id -> the version of each of its chunks in the table."""
        ids = ", ".join(str(int(doc)) for doc in documents)
        held: dict[int, list[int]] = {}
        if not ids:
            return held
        rows = (table.search().where(f"document_id IN ({ids})").select(["document_id", "version"])
                .limit(None).to_list())
        for row in rows:
            held.setdefault(int(row["document_id"]), []).append(int(row["version"]))
        return held

    @staticmethod
    def _row(chunk: ChunkRecord) -> dict[str, Any]:
        return {
            "id": chunk.id,
            "document_id": chunk.document_id,
            "source_id": chunk.source_id,
            "ordinal": chunk.ordinal,
            "version": chunk.version,
            "title": chunk.title,
            "text": chunk.text,
            "body": f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text,
            "uri": chunk.uri,
            "public": chunk.public,
            "groups": list(chunk.groups),
            "feedback": float(chunk.feedback),
            "feedback_profile": chunk.feedback_profile or None,
            "vector": [float(x) for x in chunk.vector],
        }

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
    def _hits(self, rows: list[dict], score: Callable[[dict], float]) -> list[SearchHit]:
        return [
            SearchHit(
                chunk_id=row["id"], document_id=row["document_id"], source_id=row["source_id"],
                ordinal=row["ordinal"], title=row["title"], text=row["text"], uri=row["uri"],
                score=score(row), feedback=float(row["feedback"] or 0.0),
                feedback_profile=row["feedback_profile"] or b"",
            )
            for row in rows
        ]

    def bm25(self, text: str, *, k: int, access: AccessFilter) -> list[SearchHit]:
        table = self._open()
        if table is None or not text.strip():
            return []
        self._ensure_indexes(table)
        query = self._searched().search(text, query_type="fts", fts_columns="body")
        where = access_where(access)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(HIT_COLUMNS + ["_score"]).limit(k).to_list()
        return self._hits(rows, lambda row: float(row["_score"]))

    def knn(self, vector: list[float], *, k: int, access: AccessFilter) -> list[SearchHit]:
        table = self._searched()
        if table is None:
            return []
        query = table.search(list(vector), vector_column_name="vector").distance_type("cosine").nprobes(EXHAUSTIVE)
        where = access_where(access)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(HIT_COLUMNS + ["_distance"]).limit(k).to_list()
        return self._hits(rows, lambda row: 1.0 - float(row["_distance"]))

    def chunk_versions(self, *, document_id: int | None = None) -> dict[str, int]:
        table = self._open()
        if table is None:
            return {}
        query = table.search()
        if document_id is not None:
            query = query.where(f"document_id = {int(document_id)}")
        rows = query.select(["id", "version"]).limit(None).to_list()
        return {row["id"]: row["version"] for row in rows}

    def get_chunks(self, ids: list[str]) -> dict[str, ChunkRecord]:
        table = self._open()
        if table is None or not ids:
            return {}
        where = f"id IN ({', '.join(_quote(i) for i in ids)})"
        rows = table.search().where(where).limit(None).to_list()
        return {
            row["id"]: ChunkRecord(
                id=row["id"], document_id=row["document_id"], source_id=row["source_id"],
                ordinal=row["ordinal"], version=row["version"], title=row["title"],
                text=row["text"], uri=row["uri"], vector=list(row["vector"]),
                public=row["public"], groups=tuple(row["groups"] or ()),
                feedback=float(row["feedback"] or 0.0), feedback_profile=row["feedback_profile"] or b"",
            )
            for row in rows
        }

    def count(self) -> int:
        table = self._open()
        return 0 if table is None else table.count_rows()

    def ping(self) -> None:
        self._db().list_tables()

    def optimize(self) -> None:
        table = self._open()
        if table is not None:
            self._ensure_vector_index(table)
            self._retry(lambda: table.optimize(cleanup_older_than=timedelta(minutes=10)))

    def refresh(self) -> bool:
        """Rows written after the full-text index was last built are scored by a flat scan with
        statistics of their own, not comparable with the indexed rows' scores (a chunk whose
        feedback score was just rewritten would jump or sink in BM25 for no reason of its own).
        Folding them into the index puts every row on the same statistics."""
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

    def drop(self) -> None:
        with self._lock:
            db = self._db()
            if TABLE in db.list_tables().tables:
                db.drop_table(TABLE)
            self._table = self._search_table = None
            self._indexes_ready = False
