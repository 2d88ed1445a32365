"""The one retrieval function, `retrieve`, and the search for a user that the REST endpoint
serves (`search_for_user`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

from chat.retrieval.highlighting import highlight, query_terms
from chat.retrieval.query_embedding import query_vector
from chat.retrieval.ranking import Fusion, apply_feedback, default_fusion, fuse
from config.exceptions import ApplicationError
from feedback.profiles import unit_vector
from ingestion.search_index import AccessFilter, SearchHit, search_index

Mode = Literal["hybrid", "bm25", "knn"]
MODES: tuple[str, ...] = ("hybrid", "bm25", "knn")

# BM25 runs in the index engine (native code) while this thread embeds the query: the two
# overlap instead of adding up. A small shared pool; each request uses one thread of it.
_bm25_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bm25")


def retrieve(query: str, *, access: AccessFilter, k: int = 10, mode: Mode = "hybrid",
             fusion: Fusion | None = None) -> list[SearchHit]:
    """The top `k` chunks for `query` that `access` may see, best first.

    Every mode passes `access` to the index itself (a prefilter), so a chunk the caller may not
    see is never a candidate, whatever its score.
    """
    query = query.strip()
    if not query or k < 1:
        return []
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    fusion = fusion or default_fusion()
    index = search_index()
    depth = max(k, fusion.candidates)
    vector = None
    if mode == "bm25":
        hits = index.bm25(query, k=depth, access=access)
    elif mode == "knn":
        vector = query_vector(query)
        hits = index.knn(vector, k=depth, access=access)
    else:
        lexical = _bm25_pool.submit(index.bm25, query, k=depth, access=access)
        try:
            vector = query_vector(query)
            semantic = index.knn(vector, k=depth, access=access)
        finally:
            bm25_hits = lexical.result()
        hits = fuse({"bm25": bm25_hits, "knn": semantic}, fusion=fusion)
    question = None
    if fusion.context_weight and any(hit.feedback_profile for hit in hits):
        question = unit_vector(vector if vector is not None else query_vector(query))
    return apply_feedback(hits, weight=fusion.feedback_weight, context_weight=fusion.context_weight,
                          question=question, context_threshold=fusion.context_threshold,
                          context_prior=fusion.context_prior)[:k]


@dataclass(frozen=True)
class SearchResult:
    chunk_id: str
    document_id: int
    source_id: int
    source: str
    title: str
    text: str
    uri: str
    score: float
    highlight: str


class SourceNotVisible(ApplicationError):
    """The source does not exist, or the caller may not see it (the same answer for both)."""

    status = 404


def search_for_user(*, user, query: str, k: int = 10, mode: Mode = "hybrid",
                    source_id: int | None = None) -> list[SearchResult]:
    """`retrieve` under `user`'s access, optionally narrowed to one source they may see, with
    source names and highlighted passages. SourceNotVisible if `source_id` is not theirs to see."""
    from ingestion.models import Source
    from ingestion.selectors import access_for_user, sources_visible_to

    access = access_for_user(user)
    if source_id is not None:
        if not sources_visible_to(user).filter(pk=source_id).exists():
            raise SourceNotVisible(
                f"No source {source_id} among the sources you may see; list them at /api/sources/.")
        access = replace(access, source_ids=(source_id,))
    hits = retrieve(query, access=access, k=k, mode=mode)
    terms = query_terms(query)
    names = dict(Source.objects.filter(pk__in={hit.source_id for hit in hits}).values_list("pk", "name"))
    return [
        SearchResult(
            chunk_id=hit.chunk_id, document_id=hit.document_id, source_id=hit.source_id,
            source=names.get(hit.source_id, ""), title=hit.title, text=hit.text, uri=hit.uri,
            score=hit.score, highlight=highlight(hit.text, terms),
        )
        for hit in hits
    ]
