"""What the Elasticsearch engine sends: the index's settings and mapping, the names of its
generations, chunks as documents, and the query clauses it builds from the interface's terms
(an access filter, the version guard's removals). Plain data in, plain data out: no client here.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from ingestion.search_index.base import AccessFilter, ChunkRecord, ChunkRemoval, HeldVersions, chunk_fields

# A partial update (feedback, access) raises a document's `_version` by one, so each document
# version owns a band of external versions wide enough for a million of them. Without the band the
# next document version could rank below a chunk's bumped `_version` and be refused as older.
VERSION_BAND = 1 << 20

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

# Fields added to the mapping after the first release: put into an older index when it is found.
ADDED_FIELDS = ("feedback_profile",)


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


def fields_missing(mapping: dict[str, Any]) -> dict[str, Any]:
    """The ADDED_FIELDS an index's mapping (as get_mapping returns it) lacks, as put_mapping takes them."""
    held, wanted = mapping.get("properties", {}), index_mappings(1)["properties"]
    return {name: wanted[name] for name in ADDED_FIELDS if name not in held}


def vector_dimension(mapping: dict[str, Any]) -> int | None:
    """The vector dimension an index's mapping holds."""
    dims = mapping.get("properties", {}).get("vector", {}).get("dims")
    return None if dims is None else int(dims)


# --- generations ------------------------------------------------------------------------------
# The alias points at one concrete index, a generation of it: `<alias>-g<N>`. A rebuild (a new
# mapping or embedding model) fills generation N + 1 and swaps the alias over in one request.
# Releases before generations named the one concrete index `<alias>-v1`; it reads as generation 1.
FIRST_GENERATION = 1


def generation_index(alias: str, generation: int) -> str:
    """The concrete index of `generation` behind `alias`."""
    return f"{alias}-g{int(generation)}"


def index_generation(alias: str, index: str) -> int | None:
    """The generation that concrete index `index` is of `alias` (None: not one of its generations)."""
    found = re.fullmatch(re.escape(alias) + r"-[gv](\d+)", index)
    return int(found[1]) if found else None


# --- chunks as documents ----------------------------------------------------------------------
def external_version(version: int) -> int:
    """The external `_version` a chunk of document version `version` is written with (>= 1, as
    delete_by_query and update_by_query refuse version 0)."""
    return int(version) * VERSION_BAND + 1


def profile_out(raw: bytes) -> str | None:
    return base64.b64encode(raw).decode("ascii") if raw else None


def profile_in(value: Any) -> bytes:
    try:
        return base64.b64decode(value) if value else b""
    except (ValueError, TypeError):
        return b""


def chunk_source(chunk: ChunkRecord) -> dict[str, Any]:
    """The `_source` a chunk is stored as."""
    return {**chunk_fields(chunk), "feedback_profile": profile_out(chunk.feedback_profile)}


def source_fields(source: dict[str, Any]) -> dict[str, Any]:
    """A stored `_source` as base.chunk_record and base.search_hit read it."""
    return {**source, "feedback_profile": profile_in(source.get("feedback_profile"))}


# --- queries ----------------------------------------------------------------------------------
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


def removals_query(removals: list[ChunkRemoval]) -> dict[str, Any]:
    """One query matching the chunks of every removal."""
    def removal(r: ChunkRemoval) -> dict[str, Any]:
        from_ordinal = {"bool": {"filter": [
            {"term": {"version": int(r.version)}}, {"range": {"ordinal": {"gte": int(r.from_ordinal)}}},
        ]}}
        older_or_from_ordinal = {"bool": {"should": [{"range": {"version": {"lt": int(r.version)}}}, from_ordinal],
                                          "minimum_should_match": 1}}
        return {"bool": {"filter": [{"term": {"document_id": int(r.document_id)}}, older_or_from_ordinal]}}

    return {"bool": {"should": [removal(r) for r in removals], "minimum_should_match": 1}}


def versions_held_aggregation(document_ids: list[int]) -> dict[str, Any]:
    """A terms aggregation: count and version range of each document's chunks (see
    base.HeldVersions); the search's `query` and `aggs`."""
    return {
        "query": {"terms": {"document_id": document_ids}},
        "aggs": {"documents": {
            "terms": {"field": "document_id", "size": len(document_ids)},
            "aggs": {"oldest": {"min": {"field": "version"}}, "newest": {"max": {"field": "version"}}},
        }},
    }


def versions_held_of(response: dict[str, Any]) -> dict[int, HeldVersions]:
    """Document id -> what is held, from the answer to `versions_held_aggregation`."""
    return {
        int(bucket["key"]): HeldVersions(count=int(bucket["doc_count"]), oldest=int(bucket["oldest"]["value"]),
                                         newest=int(bucket["newest"]["value"]))
        for bucket in response["aggregations"]["documents"]["buckets"]
    }
