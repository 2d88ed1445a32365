"""The scale-out engine: an Elasticsearch 8 cluster, reached through an alias over a versioned index.

The alias (`freshet-chunks`) points at a concrete index (`freshet-chunks-v1`), so a new mapping or
embedding model is a rebuild plus an atomic alias swap. Chunk ids are the `_id`s; each chunk is
written with an external version derived from its document's version, so a late write of older
content is refused by Elasticsearch itself, item by item.

Tested against the noida-db emulator (0.2.3) and, through ELASTICSEARCH_URL, real clusters, with
the same code. Where the emulator differs from Elasticsearch:
- `require_alias=true` on bulk writes: the emulator resolves the alias first and then refuses every
  item ("[freshet-chunks-v1] is not an alias"). So writes do not use it; the engine checks that
  the alias exists before writing instead, since Elasticsearch would auto-create a missing alias
  as an index with a dynamic mapping.
- Delete tombstones: the emulator forgets a deleted document's version at once, while
  Elasticsearch remembers it for `index.gc_deletes` (60 s) and refuses an external version below
  it. The `create` fallback in `_write_chunks` handles that case; only a real cluster reaches it.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers

from events.errors import TransientError
from ingestion.search_index.base import AccessFilter, ChunkRecord, DocumentChunks, SearchHit, SearchIndex

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

HIT_FIELDS = ["id", "document_id", "source_id", "ordinal", "title", "text", "uri", "feedback", "feedback_profile"]
# Busy or briefly unavailable: worth retrying later. Anything else (400 above all) is permanent.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# A partial update (feedback, access) raises a document's `_version` by one, so each document
# version owns a band of external versions wide enough for a million of them. Without the band the
# next document version could rank below a chunk's bumped `_version` and be refused as older.
VERSION_BAND = 1 << 20
CONFLICT_ATTEMPTS = 5
MAX_WINDOW = 10_000  # Elasticsearch's cap on k, num_candidates and a search's size
BULK_BATCH = 500
PAGE = 1000
# By-query calls walk every matching chunk (a whole source); give them longer than one request.
BY_QUERY_TIMEOUT = 300.0

ANALYSIS = {
    "filter": {
        "english_possessive": {"type": "stemmer", "language": "possessive_english"},
        "english_stop": {"type": "stop", "stopwords": "_english_"},
        "english_stemmer": {"type": "stemmer", "language": "english"},
    },
    "analyzer": {
        # Elasticsearch's `english` analyzer plus ASCII folding, as LanceDB's default FTS tokenizer
        # folds too; the standard analyzer scored worse on SciFact (DESIGN.md).
        "freshet_english": {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["english_possessive", "lowercase", "asciifolding", "english_stop", "english_stemmer"],
        },
    },
}


def index_mappings(dimension: int) -> dict[str, Any]:
    english = {"type": "text", "analyzer": "freshet_english"}
    return {
        "dynamic": "strict",
        "properties": {
            "id": {"type": "keyword"},
            "document_id": {"type": "long"},
            "source_id": {"type": "long"},
            "ordinal": {"type": "integer"},
            "version": {"type": "long"},
            "title": english,
            "text": english,
            "body": english,  # title + text, what BM25 scores
            "uri": {"type": "keyword", "index": False},
            "public": {"type": "boolean"},
            "groups": {"type": "keyword"},
            "feedback": {"type": "float"},
            "feedback_profile": {"type": "binary"},  # base64, stored, not searched
            "vector": {
                "type": "dense_vector",
                "dims": int(dimension),
                "index": True,
                "similarity": "cosine",
                # Plain HNSW: 8.14+ would otherwise quantise to int8 for larger dimensions.
                "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100},
            },
        },
    }


# Fields added to the mapping after the first release: put into an older index when it is found.
ADDED_FIELDS = ("feedback_profile",)


def _profile_out(raw: bytes) -> str | None:
    return base64.b64encode(raw).decode("ascii") if raw else None


def _profile_in(value: Any) -> bytes:
    try:
        return base64.b64decode(value) if value else b""
    except (ValueError, TypeError):
        return b""


def external_version(version: int) -> int:
    """The external `_version` a chunk of document version `version` is written with (>= 1, as
    delete_by_query and update_by_query refuse version 0)."""
    return int(version) * VERSION_BAND + 1


def access_filters(access: AccessFilter) -> list[dict[str, Any]] | None:
    """Filter clauses for what `access` may see; None when it may see nothing."""
    clauses: list[dict[str, Any]] = []
    if not access.everything:
        allowed: list[dict[str, Any]] = [{"term": {"public": True}}]
        if access.groups:
            allowed.append({"terms": {"groups": list(access.groups)}})
        clauses.append({"bool": {"should": allowed, "minimum_should_match": 1}})
    if access.source_ids is not None:
        if not access.source_ids:
            return None
        clauses.append({"terms": {"source_id": [int(i) for i in access.source_ids]}})
    return clauses


class BulkItemError(Exception):
    """Elasticsearch refused items of a write for a reason that retrying will not fix."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        shown = "; ".join(f"{item}: {reason}" for item, reason in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"Elasticsearch refused {len(failures)} item(s): {shown}{more}")


def _reason(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    return f"{reason} (caused by {_reason(cause)})" if cause else reason


def _index_missing(error: NotFoundError) -> bool:
    return error.error == "index_not_found_exception"


def _classified(method: Callable[P, T]) -> Callable[P, T]:
    """Turn the failures worth retrying into TransientError; let the rest (a 400) raise as they are."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except (TransportConnectionError, ConnectionTimeout) as error:
            raise TransientError(f"Elasticsearch unreachable: {error}") from error
        except ApiError as error:
            if error.meta.status in TRANSIENT_STATUSES:
                raise TransientError(f"Elasticsearch busy or unavailable: {error}") from error
            raise

    return wrapper


@dataclass(frozen=True)
class _Held:
    """What the index holds of one document."""

    count: int = 0
    oldest: int = 0
    newest: int = 0


@dataclass(frozen=True)
class _ItemResult:
    id: str
    status: int
    error: Any = None


class ElasticsearchIndex(SearchIndex):
    name = "elasticsearch"

    def __init__(self, url: str, alias: str, timeout: float) -> None:
        self.url = url
        self.alias = alias
        self.concrete = f"{alias}-v1"
        self.timeout = float(timeout)
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

    @_classified
    def ensure(self, *, dimension: int) -> None:
        """Create the concrete index and its alias if the alias does not exist yet; raise
        ValueError if it exists with another vector dimension (that needs a rebuild)."""
        if self._dimension == dimension:
            return
        with self._lock:
            es = self._es()
            if not es.indices.exists_alias(name=self.alias):
                try:
                    es.indices.create(
                        index=self.concrete, settings={"analysis": ANALYSIS},
                        mappings=index_mappings(dimension), aliases={self.alias: {}},
                    )
                except ApiError as error:
                    # Another process created it first; the alias comes with the index.
                    if error.error != "resource_already_exists_exception":
                        raise
                    es.indices.put_alias(index=self.concrete, name=self.alias)
            held = self._held_dimension()
            self._fields_add()
            if held != dimension:
                raise ValueError(
                    f"Index {self.alias} holds vectors of dimension {held}, not {dimension}: "
                    "rebuild it for the new embedding model."
                )
            self._dimension = held

    def _held_dimension(self) -> int | None:
        mappings = self._es().indices.get_mapping(index=self.alias)
        for index in mappings.values():
            vector = index["mappings"].get("properties", {}).get("vector", {})
            if "dims" in vector:
                return int(vector["dims"])
        return None

    def _fields_add(self) -> None:
        """Put the fields added since an older index was created into its mapping (adding a
        field is allowed on a live index; the mapping is strict, so writes need it first)."""
        mappings = self._es().indices.get_mapping(index=self.alias)
        wanted = index_mappings(1)["properties"]
        for name, index in mappings.items():
            held = index["mappings"].get("properties", {})
            missing = {field: wanted[field] for field in ADDED_FIELDS if field not in held}
            if missing:
                logger.info("Adding %s to the mapping of %s", ", ".join(missing), name)
                self._es().indices.put_mapping(index=name, properties=missing)
        self._fields_ready = True

    def _exists(self) -> bool:
        # Not cached: another process may have dropped the index, and writing to a missing alias
        # would auto-create a dynamically mapped index in its place.
        return bool(self._es().indices.exists_alias(name=self.alias))

    def _bulk(self, actions: list[dict[str, Any]]) -> list[_ItemResult]:
        results = []
        for _ok, item in helpers.streaming_bulk(
            self._es(), actions, index=self.alias, refresh="wait_for", chunk_size=BULK_BATCH,
            raise_on_error=False, max_retries=2, initial_backoff=0.5,
        ):
            info = next(iter(item.values()))
            results.append(_ItemResult(id=str(info.get("_id")), status=int(info.get("status", 500)),
                                       error=info.get("error")))
        return results

    @staticmethod
    def _check(results: Iterable[_ItemResult], *, skip: Iterable[int] = (),
               transient: Iterable[int] = ()) -> list[str]:
        """Raise for failed items; return the ids of those that failed with a status in `skip`."""
        skip, transient = set(skip), set(transient) | TRANSIENT_STATUSES
        skipped: list[str] = []
        busy: list[str] = []
        refused: list[tuple[str, str]] = []
        for result in results:
            if result.status < 300:
                continue
            if result.status in skip:
                skipped.append(result.id)
            elif result.status in transient:
                busy.append(f"{result.id}: {result.status} {_reason(result.error)}")
            else:
                refused.append((result.id, f"{result.status} {_reason(result.error)}"))
        if refused:
            raise BulkItemError(refused)
        if busy:
            raise TransientError(f"Elasticsearch could not write {len(busy)} item(s) now: {busy[0]}")
        return skipped

    def _by_query(self, action: str, query: dict[str, Any], **extra: Any) -> None:
        """Run delete_by_query or update_by_query over the alias; run it again while chunks changed
        under it (it skips those, counting version conflicts). A missing index is nothing to do."""
        es = self._es().options(request_timeout=max(self.timeout, BY_QUERY_TIMEOUT))
        call = es.delete_by_query if action == "delete" else es.update_by_query
        for _attempt in range(CONFLICT_ATTEMPTS):
            try:
                response = call(index=self.alias, query=query, conflicts="proceed", refresh=True, **extra)
            except NotFoundError as error:
                if _index_missing(error):
                    return
                raise
            failures = response.get("failures") or []
            if failures:
                self._check(_ItemResult(id=str(f.get("id")), status=int(f.get("status", 500)),
                                        error=f.get("cause")) for f in failures)
            if not response.get("version_conflicts"):
                return
        raise TransientError(f"Chunks kept changing during {action}_by_query on {self.alias}; try again")

    # --- writes -----------------------------------------------------------------------------
    def upsert_document(self, *, document_id: int, version: int, chunks: list[ChunkRecord]) -> None:
        self.upsert_documents([DocumentChunks(document_id, version, chunks)])

    @_classified
    def upsert_documents(self, documents: Iterable[DocumentChunks]) -> None:
        """One version check (a terms aggregation), one bulk request and one clean-up
        delete-by-query for all the documents."""
        wanted = {int(document.document_id): document for document in documents}
        first = next((chunk for document in wanted.values() for chunk in document.chunks), None)
        if first is not None:
            self.ensure(dimension=len(first.vector))
        if not wanted:
            return
        held = self._held(list(wanted))
        if held is None:
            if first is None:
                return
            # Dropped by another process since this one ensured it.
            self._dimension = None
            self.ensure(dimension=len(first.vector))
            held = {}
        writing: dict[int, tuple[DocumentChunks, _Held]] = {}
        for doc, document in wanted.items():
            had = held.get(doc, _Held())
            if had.count and had.newest > document.version:
                logger.info("Index holds a newer version of document %s than %s; skipping", doc, document.version)
            else:
                writing[doc] = (document, had)
        chunks = [chunk for document, _ in writing.values() for chunk in document.chunks]
        superseded = self._write_chunks(chunks) if chunks else set()
        stale = []
        for doc, (document, had) in writing.items():
            version, of_document = int(document.version), {"term": {"document_id": doc}}
            if doc in superseded:
                # A newer version was written while this one was (it passed the check above):
                # what this write left behind is stale too, and the newer write's cleanup may be
                # done.
                logger.info("Document %s moved past version %s during the write; removing it", doc, version)
                stale.append({"bool": {"filter": [of_document, {"range": {"version": {"lte": version}}}]}})
            elif had.count and (had.oldest < version or had.count > len(document.chunks)):
                surplus = {"bool": {"filter": [
                    {"term": {"version": version}}, {"range": {"ordinal": {"gte": len(document.chunks)}}},
                ]}}
                older_or_surplus = {"bool": {"should": [{"range": {"version": {"lt": version}}}, surplus],
                                             "minimum_should_match": 1}}
                stale.append({"bool": {"filter": [of_document, older_or_surplus]}})
        if stale:
            self._by_query("delete", {"bool": {"should": stale, "minimum_should_match": 1}})

    def _held(self, documents: list[int]) -> dict[int, _Held] | None:
        """Count and version range of each document's chunks (absent: none); None if the index
        does not exist."""
        try:
            response = self._es().search(
                index=self.alias, size=0, query={"terms": {"document_id": documents}},
                aggs={"documents": {
                    "terms": {"field": "document_id", "size": len(documents)},
                    "aggs": {"oldest": {"min": {"field": "version"}}, "newest": {"max": {"field": "version"}}},
                }},
            )
        except NotFoundError as error:
            if _index_missing(error):
                return None
            raise
        return {
            int(bucket["key"]): _Held(count=int(bucket["doc_count"]), oldest=int(bucket["oldest"]["value"]),
                                      newest=int(bucket["newest"]["value"]))
            for bucket in response["aggregations"]["documents"]["buckets"]
        }

    @staticmethod
    def _source(chunk: ChunkRecord) -> dict[str, Any]:
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
            "feedback_profile": _profile_out(chunk.feedback_profile),
            "vector": [float(x) for x in chunk.vector],
        }

    def _write_chunks(self, chunks: list[ChunkRecord]) -> set[int]:
        """Write the chunks unless the index holds a newer version of them; the documents of
        which it did for any chunk.

        The first pass relies on external versions alone. A conflict can also mean the same
        document version bumped by partial updates (or, on a real cluster, a recent delete's
        tombstone): those are resolved against what the index holds, with conditional writes.
        """
        by_id = {chunk.id: chunk for chunk in chunks}
        actions = [
            {"_op_type": "index", "_id": chunk.id, "_source": self._source(chunk),
             "version": external_version(chunk.version), "version_type": "external_gte"}
            for chunk in chunks
        ]
        superseded: set[int] = set()
        for _attempt in range(CONFLICT_ATTEMPTS):
            conflicts = self._check(self._bulk(actions), skip=(409,))
            if not conflicts:
                return superseded
            held = self._es().mget(index=self.alias, ids=conflicts, source_includes=["version"])
            actions = []
            for doc in held["docs"]:
                chunk = by_id[doc["_id"]]
                if "error" in doc:
                    raise BulkItemError([(chunk.id, _reason(doc["error"]))])
                if not doc.get("found"):
                    # A tombstone outranks our version; `create` succeeds over it (internal versions).
                    actions.append({"_op_type": "create", "_id": chunk.id, "_source": self._source(chunk)})
                elif int(doc["_source"]["version"]) > chunk.version:
                    superseded.add(int(chunk.document_id))
                else:
                    # Same (or older) document version: overwrite at the version it holds, which
                    # fails again if anything changes it in between.
                    actions.append({"_op_type": "index", "_id": chunk.id, "_source": self._source(chunk),
                                    "version": int(doc["_version"]), "version_type": "external_gte"})
            if not actions:
                return superseded
        documents = sorted({int(by_id[action["_id"]].document_id) for action in actions})
        raise TransientError(f"Chunks of documents {documents} kept changing during the write; try again")

    @_classified
    def delete_document(self, document_id: int) -> None:
        self._by_query("delete", {"term": {"document_id": int(document_id)}})

    @_classified
    def delete_source(self, source_id: int) -> None:
        self._by_query("delete", {"term": {"source_id": int(source_id)}})

    @_classified
    def set_source_access(self, *, source_id: int, public: bool, groups: Iterable[str]) -> None:
        script = {
            "lang": "painless",
            "source": "ctx._source.public = params.public; ctx._source.groups = params.groups",
            "params": {"public": bool(public), "groups": sorted(set(groups))},
        }
        self._by_query("update", {"term": {"source_id": int(source_id)}}, script=script)

    @_classified
    def set_feedback(self, scores: dict[str, float], profiles: dict[str, bytes] | None = None) -> None:
        if not scores or not self._exists():
            return
        if not self._fields_ready:
            with self._lock:
                self._fields_add()

        def doc(chunk_id: str, score: float) -> dict[str, Any]:
            if profiles is None:
                return {"feedback": float(score)}
            return {"feedback": float(score), "feedback_profile": _profile_out(profiles.get(chunk_id, b""))}

        actions = [{"_op_type": "update", "_id": chunk_id, "retry_on_conflict": 3, "doc": doc(chunk_id, score)}
                   for chunk_id, score in scores.items()]
        # 404: the chunk is gone (document_missing_exception); 409: still contended after retries.
        self._check(self._bulk(actions), skip=(404,), transient=(409,))

    # --- reads ------------------------------------------------------------------------------
    def _search(self, **body: Any) -> list[dict[str, Any]]:
        try:
            response = self._es().search(index=self.alias, source=HIT_FIELDS, track_total_hits=False, **body)
        except NotFoundError as error:
            if _index_missing(error):
                return []
            raise
        return response["hits"]["hits"]

    @staticmethod
    def _hits(rows: list[dict[str, Any]], score: Callable[[float], float]) -> list[SearchHit]:
        hits = []
        for row in rows:
            source = row["_source"]
            hits.append(SearchHit(
                chunk_id=source["id"], document_id=int(source["document_id"]),
                source_id=int(source["source_id"]), ordinal=int(source["ordinal"]),
                title=source["title"], text=source["text"], uri=source["uri"],
                score=score(float(row["_score"])), feedback=float(source.get("feedback") or 0.0),
                feedback_profile=_profile_in(source.get("feedback_profile")),
            ))
        return hits

    @_classified
    def bm25(self, text: str, *, k: int, access: AccessFilter) -> list[SearchHit]:
        filters = access_filters(access)
        if not text.strip() or k <= 0 or filters is None:
            return []
        k = min(k, MAX_WINDOW)
        query = {"bool": {"must": [{"match": {"body": text}}], "filter": filters}}
        return self._hits(self._search(query=query, size=k), lambda score: score)

    @_classified
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

    @_classified
    def chunk_versions(self, *, document_id: int | None = None) -> dict[str, int]:
        query = {"match_all": {}} if document_id is None else {"term": {"document_id": int(document_id)}}
        versions: dict[str, int] = {}
        after: list[Any] | None = None
        while True:
            page: dict[str, Any] = {"search_after": after} if after else {}
            try:
                response = self._es().search(
                    index=self.alias, query=query, sort=[{"id": "asc"}], size=PAGE,
                    source=["version"], track_total_hits=False, **page,
                )
            except NotFoundError as error:
                if _index_missing(error):
                    return {}
                raise
            rows = response["hits"]["hits"]
            versions.update((row["_id"], int(row["_source"]["version"])) for row in rows)
            if len(rows) < PAGE:
                return versions
            after = rows[-1]["sort"]

    @_classified
    def get_chunks(self, ids: list[str]) -> dict[str, ChunkRecord]:
        found: dict[str, ChunkRecord] = {}
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), PAGE):
            response = self._es().mget(index=self.alias, ids=ids[start:start + PAGE])
            for doc in response["docs"]:
                if "error" in doc:
                    if doc["error"].get("type") == "index_not_found_exception":
                        return {}
                    raise BulkItemError([(str(doc.get("_id")), _reason(doc["error"]))])
                if not doc.get("found"):
                    continue
                source = doc["_source"]
                found[doc["_id"]] = ChunkRecord(
                    id=source["id"], document_id=int(source["document_id"]),
                    source_id=int(source["source_id"]), ordinal=int(source["ordinal"]),
                    version=int(source["version"]), title=source["title"], text=source["text"],
                    uri=source["uri"], vector=[float(x) for x in source["vector"]],
                    public=bool(source["public"]), groups=tuple(source.get("groups") or ()),
                    feedback=float(source.get("feedback") or 0.0),
                    feedback_profile=_profile_in(source.get("feedback_profile")),
                )
        return found

    @_classified
    def count(self) -> int:
        try:
            return int(self._es().count(index=self.alias)["count"])
        except NotFoundError as error:
            if _index_missing(error):
                return 0
            raise

    @_classified
    def ping(self) -> None:
        self._es().info()

    def refresh(self) -> bool:
        """Elasticsearch keeps one set of statistics per shard whatever was written when."""
        return False

    @_classified
    def optimize(self) -> None:
        """Writes already refresh; folding segments is Elasticsearch's own business."""
        try:
            self._es().indices.refresh(index=self.alias)
        except NotFoundError as error:
            if not _index_missing(error):
                raise

    @_classified
    def drop(self) -> None:
        """Delete the indices behind the alias and every versioned index of it (`<alias>-v<n>`)."""
        with self._lock:
            es = self._es()
            names: set[str] = set()
            try:
                names.update(es.indices.get_alias(name=self.alias))
            except NotFoundError:
                pass
            versioned = re.compile(re.escape(self.alias) + r"-v\d+")
            found = es.indices.get(index=f"{self.alias}-v*")
            names.update(name for name in found if versioned.fullmatch(name))
            if names:
                es.indices.delete(index=sorted(names), ignore_unavailable=True)
            self._dimension = None
            self._fields_ready = False
