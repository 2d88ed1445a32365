"""The one retrieval function: the chat, the search API, the `search` command and the
evaluation all call `retrieve`, so what is measured is what users get.

Hybrid mode asks the search index for two candidate lists, BM25 over title + text and kNN over
the embedding, both under the caller's access filter, and fuses them (`fuse`). Two fusions are
implemented; which one runs and with what parameters comes from settings (SEARCH_FUSION and
friends), so the figures in the README can be reproduced and changed without code edits.
"""

from __future__ import annotations

import functools
import html
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from django.conf import settings

from feedback.profiles import QuestionProfile, unit_vector
from ingestion.embedding import VectorCache, embedder
from ingestion.search_index import AccessFilter, SearchHit, search_index

Mode = Literal["hybrid", "bm25", "knn"]
MODES: tuple[str, ...] = ("hybrid", "bm25", "knn")
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


def fuse(lists: dict[str, list[SearchHit]], *, fusion: Fusion | None = None) -> list[SearchHit]:
    """Merge ranked lists keyed by name ("bm25", "knn") into one, best first.

    Each chunk appears once, with `ranks` holding its 1-based rank in every list it came from
    and `score` the fused score; ties are broken by chunk id so the order is deterministic.
    """
    fusion = fusion or default_fusion()
    weights = _weights(fusion)
    merged: dict[str, SearchHit] = {}
    scores: dict[str, float] = {}
    for name, hits in lists.items():
        weight = weights.get(name, 1.0)
        normalised = _normalised(hits) if fusion.method == "convex" else {}
        for rank, hit in enumerate(hits, start=1):
            entry = merged.get(hit.chunk_id)
            if entry is None:
                entry = merged[hit.chunk_id] = replace(hit, ranks=dict(hit.ranks))
            if name in entry.ranks:
                continue  # a list that repeats a chunk counts it at its best rank only
            entry.ranks[name] = rank
            if fusion.method == "convex":
                contribution = weight * normalised[hit.chunk_id]
            else:
                contribution = weight / (fusion.rrf_k + rank)
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + contribution
    for chunk_id, hit in merged.items():
        hit.score = scores.get(chunk_id, 0.0)
    return sorted(merged.values(), key=lambda h: (-h.score, h.chunk_id))


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


# BM25 runs in the index engine (native code) while this thread embeds the query: the two
# overlap instead of adding up. A small shared pool; each request uses one thread of it.
_bm25_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bm25")


class QueryBatcher:
    """Embeds concurrent queries together: the model runs one forward pass at a time per process
    (Embedder holds a lock), so under concurrent searches each query would wait for every query
    ahead of it. Instead, whichever caller finds the model idle encodes everything waiting, in
    one batch, and hands each caller its vector; a batch of eight short queries costs little
    more than one. A single caller is encoded at once, with no added wait."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._waiting: list[dict] = []
        self._busy = False

    def encode(self, text: str) -> list[float]:
        slot: dict = {"text": text}
        with self._ready:
            self._waiting.append(slot)
            while "vector" not in slot and "error" not in slot:
                if self._busy:
                    self._ready.wait()
                    continue
                self._busy, batch, self._waiting = True, self._waiting, []
                self._ready.release()
                try:
                    vectors = embedder().encode([s["text"] for s in batch])
                    results = [{"vector": vector.tolist()} for vector in vectors]
                except BaseException as error:  # every caller of this batch gets the model's error
                    results = [{"error": error}] * len(batch)
                finally:
                    self._ready.acquire()
                    self._busy = False
                for waiting, result in zip(batch, results, strict=True):
                    waiting.update(result)
                self._ready.notify_all()
        if "error" in slot:
            raise slot["error"]
        return slot["vector"]


_query_batcher = QueryBatcher()
_query_cache = VectorCache()


def _query_vector(query: str) -> list[float]:
    """The query's embedding: from a per-process LRU of the last SEARCH_QUERY_CACHE_SIZE queries
    (people ask the same things again: a retried chat question, a popular search), else encoded.
    Vectors depend on the query text and the model only, so the cache never needs invalidating."""
    size = settings.SEARCH_QUERY_CACHE_SIZE
    if size and (held := _query_cache.get_many([query])):
        return held[query]
    vector = _query_batcher.encode(query)
    _query_cache.put(query, vector, size=size)
    return vector


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
        vector = _query_vector(query)
        hits = index.knn(vector, k=depth, access=access)
    else:
        lexical = _bm25_pool.submit(index.bm25, query, k=depth, access=access)
        try:
            vector = _query_vector(query)
            semantic = index.knn(vector, k=depth, access=access)
        finally:
            bm25_hits = lexical.result()
        hits = fuse({"bm25": bm25_hits, "knn": semantic}, fusion=fusion)
    question = None
    if fusion.context_weight and any(hit.feedback_profile for hit in hits):
        question = unit_vector(vector if vector is not None else _query_vector(query))
    return apply_feedback(hits, weight=fusion.feedback_weight, context_weight=fusion.context_weight,
                          question=question, context_threshold=fusion.context_threshold,
                          context_prior=fusion.context_prior)[:k]


# --- Highlighting -----------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have in is it its of on or that the this to was were "
    "what when where which who why will with not no do does did how can".split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ed", "es", "ly", "s")


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """A crude suffix stripper, enough to mark "proteins" for the query word "protein" (the
    index's BM25 stems too, so its matches should be visible). Cached: passages repeat words."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def query_terms(query: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _WORD.findall(query) if w.lower() not in _STOP_WORDS and len(w) > 1)


def highlight(text: str, query: str | frozenset[str], *, max_sentences: int = 3) -> str:
    """The passage's sentences that contain query terms, HTML-escaped, each match wrapped in
    <mark>; at most `max_sentences`, joined by " … ". A passage without any query term (a kNN
    match by meaning) gives its first sentence, unmarked. Safe to insert as HTML. `query` may be
    the terms from `query_terms`, to split a query once for many passages."""
    terms = query if isinstance(query, frozenset) else query_terms(query)
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    picked: list[str] = []
    for sentence in sentences:
        words = _WORD.findall(sentence)
        if terms and any(_stem(word) in terms for word in words):
            picked.append(_mark(sentence, terms))
            if len(picked) == max_sentences:
                break
    if not picked and sentences:
        picked.append(html.escape(sentences[0]))
    return " … ".join(picked)


def _mark(sentence: str, terms: frozenset[str]) -> str:
    out: list[str] = []
    position = 0
    for match in _WORD.finditer(sentence):
        word = match.group()
        if _stem(word) in terms:
            out.append(html.escape(sentence[position:match.start()]))
            out.append(f"<mark>{html.escape(word)}</mark>")
            position = match.end()
    out.append(html.escape(sentence[position:]))
    return "".join(out)


# --- Search for a user (the REST endpoint) ----------------------------------------------------
class SourceNotVisible(LookupError):
    """The source does not exist, or the caller may not see it (the same answer for both)."""


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


def search_for_user(*, user, query: str, k: int = 10, mode: Mode = "hybrid",
                    source_id: int | None = None) -> list[SearchResult]:
    """`retrieve` under `user`'s access, optionally narrowed to one source they may see, with
    source names and highlighted passages. SourceNotVisible if `source_id` is not theirs to see."""
    from ingestion.models import Source
    from ingestion.selectors import access_for_user, sources_visible_to

    access = access_for_user(user)
    if source_id is not None:
        if not sources_visible_to(user).filter(pk=source_id).exists():
            raise SourceNotVisible(source_id)
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
