"""Answerability: how likely a retrieved passage is to answer the question, as a calibrated
probability, so the chat can say "your sources say nothing about that" instead of quoting the
nearest noise, and the search API can mark each result `relevant`.

The evidence is what retrieval already has for every candidate, so it costs no extra model call:

- `cosine`: the passage's cosine similarity to the question (the embedding model; a passage the
  kNN list did not return gets the list's lowest cosine, an upper bound of its own);
- `lead`: how far that cosine stands above the median of the kNN candidates' (a passage that
  answers stands out from the other passages on the same topic; noise does not);
- `overlap`: the share of the question's content words (stemmed) that the passage contains;
- `both`: whether BM25 and kNN both returned it;
- `lexical_rank`: 1 / its rank in the BM25 list (0 when BM25 did not return it);
- `lexical_share`: its BM25 score over the BM25 list's best (0 when BM25 did not return it);
- `rare_overlap`: `overlap` with each question word weighted by how rare it is among the
  candidates of both lists (log((n + 1) / (df + 0.5)), df the candidates holding the word), so
  the words that single out the question's own claim count, not the ones every passage on its
  topic shares. That is what tells a near miss (an abstract on the same topic) from the answer:
  a document frequency over the candidates, because they are the question's topic, and because
  it costs a substring search in texts retrieval already holds (`evidence_for` takes 2.6 ms p50
  for the ~170 candidates of a SciFact question here). The model takes it multiplied by `cosine`
  (`cosine*rare_overlap`): rare words matched in a passage that is also close in meaning.
- `adjacent_rare_overlap`: `rare_overlap` of the passage together with the chunks just before and
  after it in its document, those of them among the candidates: an abstract cut in two chunks
  states the question's claim across both, where a near miss shares the topic's words in each.
  Taken times `cosine` too; chosen by 5-fold cross-validation on train (`--cv 12`: the
  unanswerable abstained at 90% answered 28.7% against 26.8% without it; the whole document's
  candidate chunks instead of the adjacent ones: the same, at a cost that grows with the
  document).

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
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from chat.text import STOP_WORDS

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Fitted by `benchmarks/answerability.py --fit` on SciFact train (see the module docstring).
# The model's inputs are FEATURES, each an Evidence field or a product of two ("a*b").
COEFFICIENTS: dict[str, float] = {
    "bias": -4.183,
    "cosine": -2.152,
    "lead": 9.05,
    "overlap": -0.252,
    "both": 0.182,
    "lexical_rank": 0.499,
    "cosine*rare_overlap": -7.799,
    "lexical_share": 1.579,
    "cosine*adjacent_rare_overlap": 14.558,
}
FEATURES: tuple[str, ...] = ("cosine", "lead", "overlap", "both", "lexical_rank", "cosine*rare_overlap",
                             "lexical_share", "cosine*adjacent_rare_overlap")
EVIDENCE: tuple[str, ...] = ("cosine", "lead", "overlap", "both", "lexical_rank", "lexical_share", "rare_overlap",
                             "adjacent_rare_overlap")


@lru_cache(maxsize=1 << 15)
def _stem(word: str) -> str:
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ied", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=4096)
def content_terms(text: str) -> frozenset[str]:
    """The text's words that carry meaning, lower-cased and stemmed. Kept for the last 4,096
    texts (with `_lowered`'s, ~4 KiB a SciFact passage, 16 MB in all): the passages that answer
    one question are candidates for the next ones on its topic, and a third of `evidence_for`'s
    CPU was this, once a passage a question (4.3 -> 2.7 ms a question over the same 80 SciFact
    questions' candidates once they were seen)."""
    return frozenset(_stem(w) for w in set(_WORD.findall(text.lower())) if w not in STOP_WORDS and len(w) > 1)


# The candidates' texts lower-cased, for term_rarity's substring search: kept as content_terms is.
_lowered = lru_cache(maxsize=4096)(str.lower)


@dataclass(frozen=True)
class Evidence:
    """What retrieval knows about one passage as an answer to the question (module docstring)."""

    cosine: float
    lead: float
    overlap: float
    both: float
    lexical_rank: float = 0.0
    lexical_share: float = 0.0
    rare_overlap: float = 0.0
    adjacent_rare_overlap: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 4) for name in EVIDENCE}

    def feature(self, name: str) -> float:
        """One input of the model: a field, or the product of two fields ("cosine*rare_overlap")."""
        if "*" in name:
            left, right = name.split("*", 1)
            return self.feature(left) * self.feature(right)
        return float(getattr(self, name))


def term_overlap(question_terms: frozenset[str], passage_terms: frozenset[str]) -> float:
    """The share of the question's terms that the passage's terms (`content_terms`) hold."""
    if not question_terms:
        return 0.0
    return len(question_terms & passage_terms) / len(question_terms)


def term_rarity(question_terms: frozenset[str], candidates: Iterable[str]) -> dict[str, float]:
    """Each question term's weight, log((n + 1) / (df + 0.5)), df the number of the `n` candidate
    texts that hold a word starting with it (the terms are stems: "activ" counts "activated"; of
    two terms that start one word, "cell" and "cellular" in "cellular", the longer one)."""
    texts = [_lowered(text) for text in candidates]
    return {term: math.log((len(texts) + 1) / (_texts_holding(texts, term, question_terms) + 0.5))
            for term in question_terms}


def _texts_holding(texts: list[str], term: str, question_terms: frozenset[str]) -> int:
    """How many of the (lower-cased) texts have a word that starts with `term` and not with a longer
    question term. A substring search, then a look at the character before: what a regular
    expression `\\b(term|...)`, longest term first, finds, at half its cost or less."""
    longer = [other for other in question_terms if len(other) > len(term) and other.startswith(term)]
    count = 0
    for text in texts:
        start = text.find(term)
        while start != -1:
            before = text[start - 1] if start else " "
            # Neither str.isalnum() nor "_", a regular expression's \w: a word starts here.
            if not (before.isalnum() or before == "_") and not any(text.startswith(o, start) for o in longer):
                count += 1
                break
            start = text.find(term, start + 1)
    return count


def rare_overlap(question_terms: frozenset[str], passage_terms: frozenset[str], rarity: dict[str, float]) -> float:
    """The share of the question's terms that the passage's terms hold, each weighted by its `rarity`."""
    total = sum(rarity.values())
    if not question_terms or total <= 0:
        return 0.0
    return sum(rarity[term] for term in question_terms & passage_terms) / total


def relevance(evidence: Evidence, coefficients: dict[str, float] | None = None) -> float:
    """The calibrated probability, in (0, 1), that the passage answers the question; `coefficients`
    (default COEFFICIENTS) name the model's inputs, `bias` and each feature's."""
    weights = coefficients or COEFFICIENTS
    z = sum(weight if name == "bias" else weight * evidence.feature(name) for name, weight in weights.items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def off_topic(best_cosine: float) -> bool:
    """A question none of whose candidates comes near it in meaning (the best kNN cosine below
    CHAT_MIN_COSINE) is about something the sources do not cover: every passage's relevance is 0.
    Measured on SciFact train: the train general-knowledge questions reach at most 0.373, and
    0.382 keeps 98.5% of the questions the corpus answers; the model alone, fitted mostly on near
    misses, lets about half of the off-topic test questions through."""
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
