"""Answerability: how likely a retrieved passage is to answer the question, as a calibrated
probability, so the chat can say "your sources say nothing about that" instead of quoting the
nearest noise, and the search API can mark each result `relevant`.

The evidence is what retrieval already has for every candidate, so it costs no extra model call:

- `cosine`: the passage's cosine similarity to the question (the embedding model; a passage the
  kNN list did not return gets the list's lowest cosine, an upper bound of its own);
- `lead`: how far that cosine stands above the median of the kNN candidates' (a passage that
  answers stands out from the other passages on the same topic; noise does not);
- `overlap`: the share of the question's content words (stemmed) that the passage contains;
- `both`: whether BM25 and kNN both returned it.

A logistic model turns them into a probability; a question whose best cosine is below
`CHAT_MIN_COSINE` is off-topic and all its passages score 0 (`off_topic`). Its coefficients were fitted on SciFact's
*train* split only (`benchmarks/answerability.py --fit`: questions whose judged abstracts are in
the index against questions whose judged abstracts were left out of it), so the scores and the
threshold (`CHAT_RELEVANCE_THRESHOLD`) were never tuned on the figures reported. No cross-encoder
re-ranker ships in a package installable here (flashrank and rerankers download their weights
from the Hugging Face hub at first use), so none is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from django.conf import settings

from chat.text import STOP_WORDS

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Fitted by `benchmarks/answerability.py --fit` on SciFact train (see the module docstring).
COEFFICIENTS: dict[str, float] = {
    "bias": -4.691,
    "cosine": 0.956,
    "lead": 11.706,
    "overlap": 4.012,
    "both": 0.223,
}
FEATURES: tuple[str, ...] = ("cosine", "lead", "overlap", "both")


def _stem(word: str) -> str:
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ied", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_terms(text: str) -> frozenset[str]:
    """The text's words that carry meaning, lower-cased and stemmed."""
    return frozenset(_stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1)


@dataclass(frozen=True)
class Evidence:
    cosine: float
    lead: float
    overlap: float
    both: float

    def as_dict(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 4) for name in FEATURES}


def term_overlap(question_terms: frozenset[str], passage: str) -> float:
    if not question_terms:
        return 0.0
    return len(question_terms & content_terms(passage)) / len(question_terms)


def relevance(evidence: Evidence, coefficients: dict[str, float] | None = None) -> float:
    """The calibrated probability, in (0, 1), that the passage answers the question."""
    weights = coefficients or COEFFICIENTS
    z = weights["bias"] + sum(weights[name] * getattr(evidence, name) for name in FEATURES)
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def off_topic(best_cosine: float) -> bool:
    """A question none of whose candidates comes near it in meaning (the best kNN cosine below
    CHAT_MIN_COSINE) is about something the sources do not cover: every passage's relevance is 0.
    Measured on SciFact train: general-knowledge questions reach at most 0.37, the questions the
    corpus answers 0.41 or more in 97 cases out of 100; the model alone, fitted on near misses,
    leans on `lead` and lets a third of off-topic questions through."""
    return best_cosine < settings.CHAT_MIN_COSINE


def relevance_threshold() -> float:
    """Passages scoring below this are not evidence of an answer (read at call time)."""
    return settings.CHAT_RELEVANCE_THRESHOLD


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
