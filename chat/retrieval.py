"""The one retrieval function: the chat, the search API, the `search` command and the
evaluation all call `retrieve`, so what is measured is what users get."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ingestion.embedding import embedder
from ingestion.search_index import AccessFilter, SearchHit, search_index

Mode = Literal["hybrid", "bm25", "knn"]
MODES: tuple[str, ...] = ("hybrid", "bm25", "knn")


@dataclass(frozen=True)
class Fusion:
    """Reciprocal-rank fusion parameters: score = sum_i weight_i / (rrf_k + rank_i)."""

    rrf_k: int = 60
    bm25_weight: float = 1.0
    knn_weight: float = 1.0
    candidates: int = 50  # per list, before fusion
    feedback_weight: float = 0.0  # the feedback hook: how far a chunk's feedback score moves it


DEFAULT_FUSION = Fusion()


def fuse(lists: dict[str, list[SearchHit]], *, fusion: Fusion = DEFAULT_FUSION) -> list[SearchHit]:
    """Reciprocal-rank fusion of ranked lists keyed by name ("bm25", "knn")."""
    weights = {"bm25": fusion.bm25_weight, "knn": fusion.knn_weight}
    fused: dict[str, SearchHit] = {}
    scores: dict[str, float] = {}
    for name, hits in lists.items():
        for rank, hit in enumerate(hits, start=1):
            entry = fused.setdefault(hit.chunk_id, hit)
            entry.ranks[name] = rank
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weights.get(name, 1.0) / (fusion.rrf_k + rank)
    for chunk_id, hit in fused.items():
        hit.score = scores[chunk_id]
    return sorted(fused.values(), key=lambda h: (-h.score, h.chunk_id))


def apply_feedback(hits: list[SearchHit], *, weight: float) -> list[SearchHit]:
    if not weight:
        return hits
    for hit in hits:
        hit.score *= 1.0 + weight * hit.feedback
    return sorted(hits, key=lambda h: (-h.score, h.chunk_id))


def retrieve(query: str, *, access: AccessFilter, k: int = 10, mode: Mode = "hybrid",
             fusion: Fusion = DEFAULT_FUSION) -> list[SearchHit]:
    """The top `k` chunks for `query` that `access` may see."""
    query = query.strip()
    if not query:
        return []
    index = search_index()
    depth = max(k, fusion.candidates)
    if mode == "bm25":
        hits = index.bm25(query, k=depth, access=access)
    elif mode == "knn":
        vector = embedder().encode([query])[0].tolist()
        hits = index.knn(vector, k=depth, access=access)
    elif mode == "hybrid":
        vector = embedder().encode([query])[0].tolist()
        hits = fuse({"bm25": index.bm25(query, k=depth, access=access),
                     "knn": index.knn(vector, k=depth, access=access)}, fusion=fusion)
    else:
        raise ValueError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    return apply_feedback(hits, weight=fusion.feedback_weight)[:k]
