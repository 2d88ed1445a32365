"""The scale-out engine: an Elasticsearch 8 cluster, reached through an alias over a generation.

The alias (`freshet-chunks`) points at one concrete index, a generation of it (`freshet-chunks-g1`;
see elasticsearch_mapping), so a new mapping or embedding model is a rebuild into the next
generation plus an atomic alias swap. Chunk ids are the `_id`s; each chunk is written with an
external version derived from its document's version, so a late write of older content is refused
by Elasticsearch itself, item by item. Errors: elasticsearch_errors.

Tested against the noida-db emulator (0.2.3) and, through ELASTICSEARCH_URL, real clusters, with
the same code. Where the emulator differs from Elasticsearch:
- `require_alias=true` on bulk writes: the emulator resolves the alias first and then refuses every
  item ("[freshet-chunks-g1] is not an alias"). So writes do not use it; the engine checks that
  the alias exists before writing instead, since Elasticsearch would auto-create a missing alias
  as an index with a dynamic mapping.
- Delete tombstones: the emulator forgets a deleted document's version at once, while
  Elasticsearch remembers it for `index.gc_deletes` (60 s) and refuses an external version below
  it. The `create` fallback in `_documents_write` handles that case; only a real cluster reaches it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers

import ingestion.search_index.base as base
from events.errors import TransientError
from ingestion.search_index.base import AccessFilter, ChunkRecord, ChunkRemoval, DocumentChunks, SearchHit, SearchIndex
from ingestion.search_index.elasticsearch_errors import (
    BulkItemError,
    ItemResult,
    classified,
    error_reason,
    index_missing,
    items_check,
)
from ingestion.search_index.elasticsearch_generations import ElasticsearchGenerations
from ingestion.search_index.elasticsearch_mapping import (
    ANALYSIS,
    FIRST_GENERATION,
    access_filters,
    chunk_source,
    external_version,
    fields_missing,
    generation_index,
    index_generation,
    index_mappings,
    profile_out,
    removals_query,
    source_fields,
    vector_dimension,
    versions_held_aggregation,
    versions_held_of,
)

logger = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 5
MAX_WINDOW = 10_000  # Elasticsearch's cap on k, num_candidates and a search's size
BULK_BATCH = 500
PAGE = 1000
# By-query calls walk every matching chunk (a whole source); give them longer than one request.
BY_QUERY_TIMEOUT = 300.0


class ElasticsearchIndex(ElasticsearchGenerations, SearchIndex):
    name = "elasticsearch"

    def __init__(self, url: str, alias: str, timeout: float, *, first_index: str | None = None) -> None:
        """`first_index`: the concrete index the alias is created over (default: its generation 1;
        a rebuild's next generation sits under a building alias of its own)."""
        self.url = url
        self.alias = alias
        self.timeout = float(timeout)
        self._first_index = first_index
        self._lock = threading.RLock()
        self._client: Elasticsearch | None = None
        self._dimension: int | None = None  # set once this process has seen the index exist
        self._fields_ready = False  # the mapping holds ADDED_FIELDS (checked once per process)

    # --- plumbing ---------------------------------------------------------------------------
    def _es(self) -> Elasticsearch:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    # Retrying a timed-out request is safe: every write is idempotent.
                    self._client = Elasticsearch(
                        self.url, request_timeout=self.timeout, retry_on_timeout=True, max_retries=2,
                    )
        return self._client

    @classified
    def _ensure(self, *, dimension: int) -> None:
        """Create the first generation and the alias over it if the alias does not exist yet;
        raise ValueError if it exists with another vector dimension (that needs a rebuild)."""
        if self._dimension == dimension:
            return
        with self._lock:
            es = self._es()
            if not es.indices.exists_alias(name=self.alias):
                first = self._first_index or generation_index(self.alias, FIRST_GENERATION)
                try:
                    es.indices.create(
                        index=first, settings={"analysis": ANALYSIS},
                        mappings=index_mappings(dimension), aliases={self.alias: {}},
                    )
                except ApiError as error:
                    # Another process created it first; the alias comes with the index.
                    if error.error != "resource_already_exists_exception":
                        raise
                    es.indices.put_alias(index=first, name=self.alias)
            held = self._fields_add()
            if held != dimension:
                raise ValueError(
                    f"Index {self.alias} holds vectors of dimension {held}, not {dimension}: "
                    "rebuild it for the new embedding model."
                )
            self._dimension = held

    @classified
    def generation(self) -> int | None:
        """The generation the alias points at, found by resolving it (None: no index yet, or the
        alias is over an index that is none of its generations)."""
        try:
            indices = self._es().indices.get_alias(name=self.alias)
        except NotFoundError:
            return None
        generations = [index_generation(self.alias, name) for name in indices]
        return max((g for g in generations if g is not None), default=None)

    def _fields_add(self) -> int | None:
        """Put the fields added since an older index was created into its mapping (adding a
        field is allowed on a live index; the mapping is strict, so writes need it first);
        return the vector dimension the mapping holds."""
        mappings = self._es().indices.get_mapping(index=self.alias)
        for name, index in mappings.items():
            missing = fields_missing(index["mappings"])
            if missing:
                logger.info("Adding %s to the mapping of %s", ", ".join(missing), name)
                self._es().indices.put_mapping(index=name, properties=missing)
        self._fields_ready = True
        return next((dims for index in mappings.values() if (dims := vector_dimension(index["mappings"]))), None)

    def _exists(self) -> bool:
        # Not cached: another process may have dropped the index, and writing to a missing alias
        # would auto-create a dynamically mapped index in its place.
        return bool(self._es().indices.exists_alias(name=self.alias))

    def _bulk(self, actions: list[dict[str, Any]]) -> list[ItemResult]:
        results = []
        for _ok, item in helpers.streaming_bulk(
            self._es(), actions, index=self.alias, refresh="wait_for", chunk_size=BULK_BATCH,
            raise_on_error=False, max_retries=2, initial_backoff=0.5,
        ):
            info = next(iter(item.values()))
            results.append(ItemResult(id=str(info.get("_id")), status=int(info.get("status", 500)),
                                      error=info.get("error")))
        return results

    def _by_query(self, action: str, query: dict[str, Any], **extra: Any) -> None:
        """Run delete_by_query or update_by_query over the alias; run it again while chunks changed
        under it (it skips those, counting version conflicts). A missing index is nothing to do."""
        es = self._es().options(request_timeout=max(self.timeout, BY_QUERY_TIMEOUT))
        call = es.delete_by_query if action == "delete" else es.update_by_query
        for _attempt in range(CONFLICT_ATTEMPTS):
            try:
                response = call(index=self.alias, query=query, conflicts="proceed", refresh=True, **extra)
            except NotFoundError as error:
                if index_missing(error):
                    return
                raise
            failures = response.get("failures") or []
            if failures:
                items_check(ItemResult(id=str(f.get("id")), status=int(f.get("status", 500)), error=f.get("cause"))
                            for f in failures)
            if not response.get("version_conflicts"):
                return
        raise TransientError(f"Chunks kept changing during {action}_by_query on {self.alias}; try again")

    # --- writes -----------------------------------------------------------------------------
    # One version check (a terms aggregation), one bulk request and one clean-up delete-by-query
    # per batch (SearchIndex.upsert_documents).
    @classified
    def _versions_held(self, document_ids: list[int]) -> dict[int, base.HeldVersions] | None:
        try:
            response = self._es().search(index=self.alias, size=0, **versions_held_aggregation(document_ids))
        except NotFoundError as error:
            if not index_missing(error):
                raise
            self._dimension = None  # never made, or dropped by another process since
            return None
        return versions_held_of(response)

    @classified
    def _documents_write(self, documents: Mapping[int, DocumentChunks]) -> set[int]:
        """The first pass relies on external versions alone. A conflict can also mean the same
        document version bumped by partial updates (or, on a real cluster, a recent delete's
        tombstone): those are resolved against what the index holds, with conditional writes."""
        by_id = {chunk.id: chunk for document in documents.values() for chunk in document.chunks}
        actions = [
            {"_op_type": "index", "_id": chunk.id, "_source": chunk_source(chunk),
             "version": external_version(chunk.version), "version_type": "external_gte"}
            for chunk in by_id.values()
        ]
        superseded: set[int] = set()
        for _attempt in range(CONFLICT_ATTEMPTS):
            conflicts = items_check(self._bulk(actions), skip=(409,))
            if not conflicts:
                return superseded
            held = self._es().mget(index=self.alias, ids=conflicts, source_includes=["version"])
            actions = []
            for doc in held["docs"]:
                chunk = by_id[doc["_id"]]
                if "error" in doc:
                    raise BulkItemError([(chunk.id, error_reason(doc["error"]))])
                if not doc.get("found"):
                    # A tombstone outranks our version; `create` succeeds over it (internal versions).
                    actions.append({"_op_type": "create", "_id": chunk.id, "_source": chunk_source(chunk)})
                elif int(doc["_source"]["version"]) > chunk.version:
                    superseded.add(int(chunk.document_id))
                else:
                    # Same (or older) document version: overwrite at the version it holds, which
                    # fails again if anything changes it in between.
                    actions.append({"_op_type": "index", "_id": chunk.id, "_source": chunk_source(chunk),
                                    "version": int(doc["_version"]), "version_type": "external_gte"})
            if not actions:
                return superseded
        stuck = sorted({int(by_id[action["_id"]].document_id) for action in actions})
        raise TransientError(f"Chunks of documents {stuck} kept changing during the write; try again")

    @classified
    def _chunks_remove(self, removals: list[ChunkRemoval]) -> None:
        self._by_query("delete", removals_query(removals))

    @classified
    def delete_document(self, document_id: int) -> None:
        self._by_query("delete", {"term": {"document_id": int(document_id)}})

    @classified
    def delete_source(self, source_id: int) -> None:
        self._by_query("delete", {"term": {"source_id": int(source_id)}})

    @classified
    def set_source_access(self, *, source_id: int, public: bool, groups: Iterable[str]) -> None:
        script = {
            "lang": "painless",
            "source": "ctx._source.public = params.public; ctx._source.groups = params.groups",
            "params": {"public": bool(public), "groups": sorted(set(groups))},
        }
        self._by_query("update", {"term": {"source_id": int(source_id)}}, script=script)

    @classified
    def set_feedback(self, scores: dict[str, float], profiles: dict[str, bytes] | None = None) -> None:
        if not scores or not self._exists():
            return
        if not self._fields_ready:
            with self._lock:
                self._fields_add()

        def doc(chunk_id: str, score: float) -> dict[str, Any]:
            if profiles is None:
                return {"feedback": float(score)}
            return {"feedback": float(score), "feedback_profile": profile_out(profiles.get(chunk_id, b""))}

        actions = [{"_op_type": "update", "_id": chunk_id, "retry_on_conflict": 3, "doc": doc(chunk_id, score)}
                   for chunk_id, score in scores.items()]
        # 404: the chunk is gone (document_missing_exception); 409: still contended after retries.
        items_check(self._bulk(actions), skip=(404,), transient=(409,))

    # --- reads ------------------------------------------------------------------------------
    def _search(self, **body: Any) -> list[dict[str, Any]]:
        try:
            response = self._es().search(index=self.alias, source=base.HIT_FIELDS, track_total_hits=False, **body)
        except NotFoundError as error:
            if index_missing(error):
                return []
            raise
        return response["hits"]["hits"]

    @staticmethod
    def _hits(rows: list[dict[str, Any]], score: Callable[[float], float]) -> list[SearchHit]:
        return [base.search_hit(source_fields(row["_source"]), score=score(float(row["_score"]))) for row in rows]

    @classified
    def bm25(self, text: str, *, k: int, access: AccessFilter) -> list[SearchHit]:
        filters = access_filters(access)
        if not text.strip() or k <= 0 or filters is None:
            return []
        k = min(k, MAX_WINDOW)
        query = {"bool": {"must": [{"match": {"body": text}}], "filter": filters}}
        return self._hits(self._search(query=query, size=k), lambda score: score)

    @classified
    def knn(self, vector: list[float], *, k: int, access: AccessFilter) -> list[SearchHit]:
        filters = access_filters(access)
        if k <= 0 or filters is None:
            return []
        k = min(k, MAX_WINDOW)
        knn: dict[str, Any] = {
            "field": "vector", "query_vector": [float(x) for x in vector],
            "k": k, "num_candidates": min(MAX_WINDOW, max(100, 4 * k)),
        }
        if filters:
            knn["filter"] = filters
        # Elasticsearch scores cosine as (1 + cos) / 2; report cos, as LanceDB's 1 - distance is.
        return self._hits(self._search(knn=knn, size=k), lambda score: 2.0 * score - 1.0)

    def _listed(self, query: dict[str, Any], fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every hit of `query` (its `_id` and `_source` of `fields`), in pages of PAGE by id
        (search_after); none when there is no index."""
        after: list[Any] | None = None
        while True:
            page: dict[str, Any] = {"search_after": after} if after else {}
            try:
                response = self._es().search(
                    index=self.alias, query=query, sort=[{"id": "asc"}], size=PAGE,
                    source=fields, track_total_hits=False, **page,
                )
            except NotFoundError as error:
                if index_missing(error):
                    return
                raise
            rows = response["hits"]["hits"]
            yield from rows
            if len(rows) < PAGE:
                return
            after = rows[-1]["sort"]

    @classified
    def chunk_versions(self, *, document_id: int | None = None) -> dict[str, int]:
        query = {"match_all": {}} if document_id is None else {"term": {"document_id": int(document_id)}}
        return {row["_id"]: int(row["_source"]["version"]) for row in self._listed(query, ["version"])}

    @classified
    def get_chunks(self, ids: list[str]) -> dict[str, ChunkRecord]:
        found: dict[str, ChunkRecord] = {}
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), PAGE):
            response = self._es().mget(index=self.alias, ids=ids[start:start + PAGE])
            for doc in response["docs"]:
                if "error" in doc:
                    if doc["error"].get("type") == "index_not_found_exception":
                        return {}
                    raise BulkItemError([(str(doc.get("_id")), error_reason(doc["error"]))])
                if not doc.get("found"):
                    continue
                found[doc["_id"]] = base.chunk_record(source_fields(doc["_source"]))
        return found

    @classified
    def count(self) -> int:
        try:
            return int(self._es().count(index=self.alias)["count"])
        except NotFoundError as error:
            if index_missing(error):
                return 0
            raise

    @classified
    def ping(self) -> None:
        self._es().info()

    @classified
    def refresh(self) -> bool:
        """An Elasticsearch refresh: it makes searchable what was written without waiting for one,
        which none of this engine's writes do (bulk writes wait for their refresh, by-query calls
        refresh). BM25 statistics are per shard, whatever was written when, so nothing else lags:
        False, there is never anything to catch up on."""
        try:
            self._es().indices.refresh(index=self.alias)
        except NotFoundError as error:
            if not index_missing(error):
                raise
        return False

    def optimize(self) -> None:
        """A `refresh`: merging segments and purging deleted chunks is Elasticsearch's own merge
        policy's business (a forced merge is for indices no longer written to)."""
        self.refresh()

    @classified
    def drop(self) -> None:
        """Delete the indices behind the alias and every generation of it, the alias with them."""
        with self._lock:
            es = self._es()
            names: set[str] = set()
            try:
                names.update(es.indices.get_alias(name=self.alias))
            except NotFoundError:
                pass
            found = es.indices.get(index=f"{self.alias}-*")
            names.update(name for name in found if index_generation(self.alias, name) is not None)
            if names:
                es.indices.delete(index=sorted(names), ignore_unavailable=True)
            self._dimension = None
            self._fields_ready = False
