"""The one retrieval function, `retrieve`, and the search for a user that the REST endpoint
serves (`search_for_user`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

from chat.retrieval.answerability import (
    Evidence,
    content_terms,
    median,
    off_topic,
    rare_overlap,
    relevance,
    relevance_threshold,
    term_overlap,
    term_rarity,
)
from chat.retrieval.highlighting import highlight, query_terms
from chat.retrieval.query_embedding import query_vector
from chat.retrieval.ranking import Fusion, apply_feedback, default_fusion, feedback_moves, fuse
from config.exceptions import ApplicationError
from feedback.profiles import unit_vector
from ingestion.search_index import AccessFilter, SearchHit, search_index

Mode = Literal["hybrid", "bm25", "knn"]
MODES: tuple[str, ...] = ("hybrid", "bm25", "knn")

# BM25 runs in the index engine (native code) while this thread embeds the query: the two
# overlap instead of adding up. A small shared pool; each request uses one thread of it.
_bm25_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bm25")


@dataclass
class Retrieval:
    """What `retrieval_run` found: the hits, best first, and for each the evidence that it
    answers the question and its calibrated relevance (chat/retrieval/answerability.py)."""

    hits: list[SearchHit]
    evidence: list[Evidence] = field(default_factory=list)
    relevance: list[float] = field(default_factory=list)

    def relevant(self, threshold: float | None = None) -> list[bool]:
        cut = relevance_threshold() if threshold is None else threshold
        return [score >= cut for score in self.relevance]

    @property
    def best_relevance(self) -> float:
        return max(self.relevance, default=0.0)


def retrieve(query: str, *, access: AccessFilter, k: int = 10, mode: Mode = "hybrid",
             fusion: Fusion | None = None) -> list[SearchHit]:
    """The top `k` chunks for `query` that `access` may see, best first.

    Every mode passes `access` to the index itself (a prefilter), so a chunk the caller may not
    see is never a candidate, whatever its score.
    """
    return retrieval_run(query, access=access, k=k, mode=mode, fusion=fusion, evidence=False).hits


def retrieval_run(query: str, *, access: AccessFilter, k: int = 10, mode: Mode = "hybrid",
                  fusion: Fusion | None = None, evidence: bool = True) -> Retrieval:
    """`retrieve`, and with `evidence` each hit's answerability evidence and relevance. Evidence
    needs both lists, so in bm25 or knn mode the other one is fetched too (the ranking is the
    mode's own)."""
    query = query.strip()
    if not query or k < 1:
        return Retrieval(hits=[])
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    fusion = fusion or default_fusion()
    index = search_index()
    depth = max(k, fusion.candidates)
    vector = None
    bm25_hits: list[SearchHit] | None = None
    semantic: list[SearchHit] | None = None
    if mode == "bm25" and not evidence:
        hits = bm25_hits = index.bm25(query, k=depth, access=access)
    elif mode == "knn" and not evidence:
        vector = query_vector(query)
        hits = semantic = index.knn(vector, k=depth, access=access)
    else:
        lexical = _bm25_pool.submit(index.bm25, query, k=depth, access=access)
        try:
            vector = query_vector(query)
            semantic = index.knn(vector, k=depth, access=access)
        finally:
            bm25_hits = lexical.result()
        if mode == "bm25":
            hits = [replace(h, ranks={"bm25": rank}) for rank, h in enumerate(bm25_hits, start=1)]
        elif mode == "knn":
            hits = [replace(h, ranks={"knn": rank}) for rank, h in enumerate(semantic, start=1)]
        else:
            lists = {"bm25": bm25_hits, "knn": semantic}
            # Without a chunk the boost could move, only the k that are kept are built.
            hits = fuse(lists, fusion=fusion, limit=None if feedback_moves(lists, fusion) else k)
    question = None
    if fusion.context_weight and any(hit.feedback_profile for hit in hits):
        question = unit_vector(vector if vector is not None else query_vector(query))
    hits = apply_feedback(hits, weight=fusion.feedback_weight, context_weight=fusion.context_weight,
                          question=question, context_threshold=fusion.context_threshold,
                          context_prior=fusion.context_prior)[:k]
    if not evidence:
        return Retrieval(hits=hits)
    found = evidence_for(query, hits, bm25_hits=bm25_hits or [], knn_hits=semantic or [])
    if off_topic(max((h.score for h in semantic or []), default=0.0)):
        return Retrieval(hits=hits, evidence=found, relevance=[0.0] * len(found))
    return Retrieval(hits=hits, evidence=found, relevance=[relevance(e) for e in found])


def evidence_for(query: str, hits: list[SearchHit], *, bm25_hits: list[SearchHit],
                 knn_hits: list[SearchHit]) -> list[Evidence]:
    """Each hit's answerability evidence, from the two candidate lists it was fused from."""
    cosines = {h.chunk_id: h.score for h in knn_hits}
    floor = min(cosines.values(), default=0.0)
    middle = median(list(cosines.values())[:10])
    lexical: dict[str, tuple[int, float]] = {}
    for rank, h in enumerate(bm25_hits, start=1):
        lexical.setdefault(h.chunk_id, (rank, h.score))
    best_lexical = max((score for _, score in lexical.values()), default=0.0)
    terms = content_terms(query)
    candidates = {h.chunk_id: h for h in [*bm25_hits, *knn_hits]}
    rarity = term_rarity(terms, [f"{h.title} {h.text}" for h in candidates.values()])
    at = {(h.document_id, h.ordinal): h for h in candidates.values()}
    passages: dict[str, frozenset[str]] = {}

    def passage_terms(h: SearchHit) -> frozenset[str]:
        if h.chunk_id not in passages:
            passages[h.chunk_id] = content_terms(f"{h.title} {h.text}")
        return passages[h.chunk_id]

    found = []
    for hit in hits:
        cosine = cosines.get(hit.chunk_id, floor)
        passage = passage_terms(hit)
        adjacent = passage.union(*(passage_terms(at[(hit.document_id, hit.ordinal + step)]) for step in (-1, 1)
                                   if (hit.document_id, hit.ordinal + step) in at))
        rank, score = lexical.get(hit.chunk_id, (0, 0.0))
        found.append(Evidence(
            cosine=cosine, lead=cosine - middle,
            overlap=term_overlap(terms, passage),
            both=1.0 if hit.chunk_id in cosines and hit.chunk_id in lexical else 0.0,
            lexical_rank=1.0 / rank if rank else 0.0,
            lexical_share=score / best_lexical if rank and best_lexical > 0 else 0.0,
            rare_overlap=rare_overlap(terms, passage, rarity),
            adjacent_rare_overlap=rare_overlap(terms, adjacent, rarity),
        ))
    return found


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
    relevance: float = 0.0
    relevant: bool = False


class SourceNotVisible(ApplicationError):
    """The source does not exist, or the caller may not see it (the same answer for both)."""

    status = 404


def search_for_user(*, user, query: str, k: int = 10, mode: Mode = "hybrid",
                    source_id: int | None = None) -> list[SearchResult]:
    """`retrieve` under `user`'s access, optionally narrowed to one source they may see, with
    source names and highlighted passages. SourceNotVisible if `source_id` is not theirs to see."""
    from ingestion.models import Source
    from ingestion.selectors import access_for_user

    access = access_for_user(user)
    names: dict[int, str] | None = None
    if source_id is not None:
        # One query for the source's name and whether it exists: access_for_user has just read
        # the ids of the sources a non-staff user may see (staff: any source that exists).
        names = dict(Source.objects.filter(pk=source_id).values_list("pk", "name"))
        if not names or (access.source_ids is not None and source_id not in access.source_ids):
            raise SourceNotVisible(
                f"No source {source_id} among the sources you may see; list them at /api/sources/.")
        access = access.narrowed((source_id,))
    found = retrieval_run(query, access=access, k=k, mode=mode)
    terms = query_terms(query)
    if names is None:
        names = dict(Source.objects.filter(pk__in={hit.source_id for hit in found.hits}).values_list("pk", "name"))
    threshold = relevance_threshold()
    return [
        SearchResult(
            chunk_id=hit.chunk_id, document_id=hit.document_id, source_id=hit.source_id,
            source=names.get(hit.source_id, ""), title=hit.title, text=hit.text, uri=hit.uri,
            score=hit.score, highlight=highlight(hit.text, terms), relevance=round(score, 4),
            relevant=score >= threshold,
        )
        for hit, score in zip(found.hits, found.relevance, strict=True)
    ]
