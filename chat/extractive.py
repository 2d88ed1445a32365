"""Extractive answers: with no language model, the answer is the passages' sentences that best
answer the question, each followed by its [n].

Sentences come whole from the document's text (`Passage.units`, chat/passages.py), not from the
chunk text: a chunk starts and ends wherever the splitter cut, and neighbouring chunks overlap,
so quoting chunk text repeats fragments and ends mid-sentence. A unit held by a better-ranked
passage is not repeated by a later one; headings are units of their own and never quoted as an
answer; the sentences chosen from one passage read in the document's order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chat.prompting import Passage
from chat.text import STOP_WORDS, Unit, sentences, text_units

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_SENTENCE_WORDS = 80  # longer "sentences" are tables or run-on extraction: skipped, never cut
MIN_SENTENCE_WORDS = 3
EMBEDDED_CANDIDATES = 8  # sentences embedded per question: bounds the time to the first token
NO_ANSWER = "I could not find anything about that in the documents you can see."


def _terms(text: str) -> set[str]:
    terms = set()
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS or len(word) < 2:
            continue
        # A light stem: plurals and -ing/-ed forms meet their root often enough to help overlap.
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        terms.add(word)
    return terms


def sentences_split(text: str) -> list[str]:
    """The sentences of `text` that can stand as an answer: MIN_SENTENCE_WORDS to
    MAX_SENTENCE_WORDS words (used to match a model's sentences to passages)."""
    return [s for s in sentences(text) if MIN_SENTENCE_WORDS <= len(s.split()) <= MAX_SENTENCE_WORDS]


def passage_units(passage: Passage) -> tuple[Unit, ...]:
    """The passage's units: from the document when known, else from its own text."""
    return passage.units or tuple(text_units(passage.text))


@dataclass(frozen=True)
class ScoredSentence:
    n: int
    position: int  # the unit's offset in its document (or passage): the reading order
    text: str
    score: float


def sentences_rank(question: str, passages: list[Passage], *, encoder=None) -> list[ScoredSentence]:
    """The passages' quotable sentences, best answer first: cosine similarity of the sentence to
    the question (embedding model) plus the share of the question's terms the sentence contains,
    plus a small prior for better-ranked passages."""
    question_terms = _terms(question)
    candidates: list[tuple[float, int, int, str]] = []
    seen: set[str] = set()
    for rank, passage in enumerate(passages):
        for unit in passage_units(passage):
            words = len(unit.text.split())
            if unit.kind == "heading" or not MIN_SENTENCE_WORDS <= words <= MAX_SENTENCE_WORDS:
                continue
            if unit.text in seen:  # the same sentence in two documents (or chunks without a document)
                continue
            seen.add(unit.text)
            overlap = len(question_terms & _terms(unit.text)) / max(len(question_terms), 1)
            prior = 0.1 / (1 + rank)
            candidates.append((overlap + prior, passage.n, unit.start, unit.text))
    if not candidates:
        return []
    # Embedding every sentence of five passages costs more than the answer's first-token budget;
    # the cheap lexical score picks which ones the model looks at.
    candidates.sort(key=lambda c: -c[0])
    candidates = candidates[:EMBEDDED_CANDIDATES]
    if encoder is None:
        from ingestion.embedding import embedder

        encoder = embedder()
    vectors = encoder.encode([question] + [c[3] for c in candidates])
    similarity = (vectors[1:] @ vectors[0]) if len(vectors) > 1 else np.zeros(0)
    scored = [
        ScoredSentence(n=n, position=position, text=text, score=float(sim) + 0.5 * lexical)
        for (lexical, n, position, text), sim in zip(candidates, similarity, strict=True)
    ]
    return sorted(scored, key=lambda s: (-s.score, s.n, s.position))


def extractive_answer(question: str, passages: list[Passage], *, sentences: int = 3, encoder=None) -> str:
    """The sentences that best answer `question`, each followed by its [n] citation: passages in
    the order of their best sentence, each passage's sentences in the document's order."""
    ranked = sentences_rank(question, passages, encoder=encoder)
    if not ranked:
        return NO_ANSWER
    best = ranked[0].score
    chosen: list[ScoredSentence] = []
    seen_terms: list[set[str]] = []
    for candidate in ranked:
        if len(chosen) >= sentences:
            break
        if chosen and candidate.score < 0.6 * best:
            break  # much weaker than the best: noise, not an answer
        terms = _terms(candidate.text)
        if any(len(terms & other) / max(len(terms | other), 1) > 0.8 for other in seen_terms):
            continue  # a near-duplicate from another document
        chosen.append(candidate)
        seen_terms.append(terms)
    order = list(dict.fromkeys(s.n for s in chosen))
    chosen.sort(key=lambda s: (order.index(s.n), s.position))
    return " ".join(f"{s.text} [{s.n}]" for s in chosen)


def abstention_text(question: str) -> str:
    """What the answer says when no passage answers the question."""
    subject = " ".join(question.split()).rstrip("?!. ")
    if len(subject) > 120:
        subject = subject[:119].rstrip() + "\u2026"
    return f"Your sources say nothing about \u201c{subject}\u201d."


# A language model that finds nothing in the passages says so in one of a few ways.
_CANNOT = re.compile(
    r"\b(?:(?:do(?:es)?|did) not|don't|doesn't|cannot|can't|could not|couldn't|unable to)\s+"
    r"(?:say|mention|contain|provide|include|answer|find|know|specify|tell|discuss|address|cover|have)"
    r"|\bno (?:information|mention|passage|answer|relevant)"
    r"|\bnot (?:mentioned|provided|specified|found|stated|covered|addressed|included)",
    re.IGNORECASE,
)


def model_declined(text: str) -> bool:
    """The model's answer says the passages do not answer (and cites nothing it could stand on):
    short, with a refusal phrase in its first sentence."""
    first = (sentences(text) or [""])[0]
    return bool(_CANNOT.search(first)) and len(text.split()) <= 60
