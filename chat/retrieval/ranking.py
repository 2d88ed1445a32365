"""Ranking: how hybrid mode fuses the BM25 and kNN lists (`fuse`), and the bounded boost that
feedback gives a chunk (`apply_feedback`). Which fusion runs, and with what parameters, comes
from settings (SEARCH_FUSION and friends), so the figures in the README can be reproduced and
changed without code edits."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from feedback.profiles import QuestionProfile
from ingestion.search_index import SearchHit

FUSION_METHODS: tuple[str, ...] = ("rrf", "convex")


@dataclass(frozen=True)
class Fusion:
    """How hybrid mode merges the BM25 and kNN lists (each `candidates` long, or `k` if more).

    - ``rrf``: reciprocal-rank fusion, score = sum_i weight_i / (rrf_k + rank_i).
    - ``convex``: a convex combination of scores, each list min-max normalised over its own
      candidates (best 1, worst 0; a chunk missing from a list gets 0 from it),
      score = sum_i weight_i * normalised_i.

    `feedback_weight` and `context_weight` weigh the feedback boost (`apply_feedback`): a chunk's
    fused score is multiplied by 2 ** (feedback_weight * feedback + context_weight * context),
    where `feedback` is the chunk's own score and `context` what voters who asked something like
    this question said about it (feedback/profiles.py, with `context_threshold` and
    `context_prior`); both weights 0 leave the ranking alone.
    """

    # Defaults: the fusion chosen on SciFact's train split (809 queries): convex 0.55/0.45 gave
    # nDCG@10 0.733 there, plain RRF (k=60, equal weights) 0.709, the best RRF (k=5, BM25
    # weight 1.25) 0.730. The weights only matter relative to each other.
    method: str = "convex"
    rrf_k: int = 60
    bm25_weight: float = 0.55
    knn_weight: float = 0.45
    candidates: int = 100
    feedback_weight: float = 0.0
    context_weight: float = 0.0
    context_threshold: float = 0.7
    context_prior: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"Unknown fusion {self.method!r}; use one of {', '.join(FUSION_METHODS)}.")
        if self.rrf_k < 0 or self.candidates < 1 or self.bm25_weight < 0 or self.knn_weight < 0:
            raise ValueError("rrf_k and the weights must not be negative, candidates must be at least 1.")
        if self.feedback_weight < 0 or self.context_weight < 0 or self.context_prior <= 0:
            raise ValueError("The feedback weights must not be negative, the context prior must be above 0.")
        if not -1 <= self.context_threshold < 1:
            raise ValueError("The context threshold is a cosine: at least -1, below 1.")


def default_fusion() -> Fusion:
    """The fusion configured in settings (read at call time, so tests can override it)."""
    return Fusion(
        method=settings.SEARCH_FUSION,
        rrf_k=settings.SEARCH_RRF_K,
        bm25_weight=settings.SEARCH_BM25_WEIGHT,
        knn_weight=settings.SEARCH_KNN_WEIGHT,
        candidates=settings.SEARCH_CANDIDATES,
        feedback_weight=settings.SEARCH_FEEDBACK_WEIGHT,
        context_weight=settings.SEARCH_FEEDBACK_CONTEXT_WEIGHT,
        context_threshold=settings.SEARCH_FEEDBACK_CONTEXT_THRESHOLD,
        context_prior=settings.SEARCH_FEEDBACK_CONTEXT_PRIOR,
    )


def _weights(fusion: Fusion) -> dict[str, float]:
    return {"bm25": fusion.bm25_weight, "knn": fusion.knn_weight}


def _normalised(hits: list[SearchHit]) -> dict[str, float]:
    """Min-max over one list's candidates: its best chunk 1, its worst 0 (all 1 when tied)."""
    if not hits:
        return {}
    scores = [hit.score for hit in hits]
    low, high = min(scores), max(scores)
    if high <= low:
        return {hit.chunk_id: 1.0 for hit in hits}
    return {hit.chunk_id: (hit.score - low) / (high - low) for hit in hits}


def fuse(lists: dict[str, list[SearchHit]], *, fusion: Fusion | None = None,
         limit: int | None = None) -> list[SearchHit]:
    """Merge ranked lists keyed by name ("bm25", "knn") into one, best first; with `limit`, only
    its first `limit` hits (the same ones as the whole list's).

    Each chunk appears once, with `ranks` holding its 1-based rank in every list it came from
    and `score` the fused score; ties are broken by chunk id so the order is deterministic. The
    hits are new objects: the lists' own hits keep their scores (the answerability evidence reads
    them after fusion).
    """
    fusion = fusion or default_fusion()
    weights = _weights(fusion)
    convex = fusion.method == "convex"
    first: dict[str, SearchHit] = {}
    ranks: dict[str, dict[str, int]] = {}
    scores: dict[str, float] = {}
    for name, hits in lists.items():
        weight = weights.get(name, 1.0)
        normalised = _normalised(hits) if convex else {}
        for rank, hit in enumerate(hits, start=1):
            chunk_id = hit.chunk_id
            held = ranks.get(chunk_id)
            if held is None:
                first[chunk_id] = hit
                held = ranks[chunk_id] = dict(hit.ranks)
            if name in held:
                continue  # a list that repeats a chunk counts it at its best rank only
            held[name] = rank
            contribution = weight * normalised[chunk_id] if convex else weight / (fusion.rrf_k + rank)
            scores[chunk_id] = scores.get(chunk_id, 0.0) + contribution

    def key(chunk_id: str) -> tuple[float, str]:
        return -scores.get(chunk_id, 0.0), chunk_id

    # Scores and ranks first, hit objects only for what is returned: copying all 200 candidates
    # (dataclasses.replace) was most of fusion's cost when only the top k are kept.
    order = sorted(ranks, key=key) if limit is None else heapq.nsmallest(limit, ranks, key=key)
    return [_fused(first[chunk_id], score=scores.get(chunk_id, 0.0), ranks=ranks[chunk_id]) for chunk_id in order]


def _fused(hit: SearchHit, *, score: float, ranks: dict[str, int]) -> SearchHit:
    """A copy of `hit` with this score and these ranks (half the cost of `dataclasses.replace`,
    which looks the fields up on every call)."""
    return SearchHit(**{**hit.__dict__, "score": score, "ranks": ranks})


def feedback_moves(lists: dict[str, list[SearchHit]], fusion: Fusion) -> bool:
    """Whether `apply_feedback` with `fusion`'s weights could change any of these candidates'
    scores: only a chunk with a feedback score or a question profile moves. When none can, the
    boost leaves fusion's order as it is (both sort by score, then chunk id), so the top k can
    be cut at fusion."""
    if not fusion.feedback_weight and not fusion.context_weight:
        return False
    return any(hit.feedback or hit.feedback_profile for hits in lists.values() for hit in hits)


def apply_feedback(hits: list[SearchHit], *, weight: float, context_weight: float = 0.0,
                   question: np.ndarray | None = None, context_threshold: float = 0.7,
                   context_prior: float = 1.0) -> list[SearchHit]:
    """The feedback hook, a bounded boost: each chunk's score is multiplied by
    2 ** (weight * feedback + context_weight * context), where feedback is the smoothed vote
    score the feedback consumer writes (feedback/selectors.py) clamped to [-1, 1], and context,
    in (-1, 1), what the votes of people who asked something close to `question` (a unit vector)
    say about the chunk (its question profile, feedback/profiles.py; 0 without `question`).

    So no chunk moves by more than a factor 2 ** (weight + context_weight) either way, unvoted
    chunks keep their score, and a negative score (a kNN similarity) is divided instead, so a
    boost always helps. `retrieve` applies it to every fused candidate before the cut to k: a
    down-voted chunk can fall out of the top k and an up-voted one further down rise into it."""
    if question is None:
        context_weight = 0.0
    if not weight and not context_weight:
        return hits
    for hit in hits:
        exponent = weight * max(-1.0, min(1.0, hit.feedback))
        if context_weight and hit.feedback_profile:
            profile = QuestionProfile.decode(hit.feedback_profile)
            if profile is not None:
                exponent += context_weight * profile.score(question, threshold=context_threshold, prior=context_prior)
        if exponent:
            factor = 2.0 ** exponent
            hit.score = hit.score * factor if hit.score >= 0 else hit.score / factor
    return sorted(hits, key=lambda h: (-h.score, h.chunk_id))
