"""BM25 in memory over a LanceDB table's `body` column, beside the kNN in memory.

LanceDB's full-text search costs 6-15 ms a query over 10,000 rows (planning, the prefilter, I/O
and Arrow conversion), where scoring the few posting lists a query touches is well under a
millisecond. So the searching process keeps an inverted index of the table's snapshot
(lancedb_vectors.py takes it again whenever the table's version changes) and answers BM25 with
a few numpy additions, the access filter as the same boolean mask the kNN uses.

It scores as LanceDB's own index does: the same tokenizer (LanceDB's defaults, built with
tantivy: split on what is not a letter or digit, drop tokens of 40 bytes or more, lower-case,
English Snowball stemming, then English stop words removed (STOP_WORDS), ASCII folding), BM25 with k1 = 1.2 and
b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5)), a query's terms OR-ed (a repeated one
counted each time). One difference: every
row is scored on the statistics of the whole table, where LanceDB scores rows written since its
index was last built by a flat scan with statistics of their own until `refresh` folds them in.

Tokenising is most of the cost of taking a snapshot, so each row's terms are kept by chunk id
with the hash of the body they came from, and only new or changed bodies are tokenised again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import tantivy

K1 = 1.2
B = 0.75
MAX_TOKEN_BYTES = 40

# The stop words LanceDB's index drops, found by asking it for each candidate: NLTK's English
# list, checked after stemming ("very" is kept: it is "veri" by then). tantivy's own English list
# is another (shorter) one.
STOP_WORDS = (
    "i me my myself we our ours you your yours yourself he him his himself she her hers herself it its "
    "itself they them their theirs what which who whom this that these those am is are was were be been "
    "being have has had having do did doing a an the and but if or as until while of at by for with about "
    "against between into through after below to from up down in out on off over under again further then "
    "here there when where how all both each few more most other some such no nor not own same so than too "
    "s t can will just don should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma "
    "mightn mustn needn shan shouldn wasn weren won wouldn"
).split()

_analyzers = threading.local()


def analyzer() -> tantivy.TextAnalyzer:
    """LanceDB's default full-text tokenizer (create_fts_index's defaults), one per thread."""
    built = getattr(_analyzers, "analyzer", None)
    if built is None:
        built = _analyzers.analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(MAX_TOKEN_BYTES))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stemmer("english"))
            .filter(tantivy.Filter.custom_stopword(STOP_WORDS))
            .filter(tantivy.Filter.ascii_fold())
            .build()
        )
    return built


def tokens(text: str) -> list[str]:
    return analyzer().analyze(text or "")


@dataclass(frozen=True)
class RowTerms:
    """One row's terms: the hash of the body they came from (a per-process cache: a 64-bit
    collision within one chunk's versions is not a concern), term ids (into the Vocabulary) and
    counts. The hash, not the body: the snapshot's hit columns hold the text already."""

    body_hash: int
    term_ids: np.ndarray
    counts: np.ndarray


class Vocabulary:
    """Term -> id, and each chunk's RowTerms, kept across snapshots of one table."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.rows: dict[str, RowTerms] = {}

    def row_terms(self, chunk_id: str, body: str) -> RowTerms:
        held = self.rows.get(chunk_id)
        body_hash = hash(body)
        if held is not None and held.body_hash == body_hash:
            return held
        counted: dict[int, int] = {}
        for token in tokens(body):
            term = self.ids.setdefault(token, len(self.ids))
            counted[term] = counted.get(term, 0) + 1
        made = self.rows[chunk_id] = RowTerms(
            body_hash=body_hash, term_ids=np.fromiter(counted.keys(), dtype=np.int64, count=len(counted)),
            counts=np.fromiter(counted.values(), dtype=np.float32, count=len(counted)))
        return made

    def forget_except(self, chunk_ids: set[str]) -> None:
        """Drop the rows of chunks no longer in the table (term ids stay: they cost a dict entry)."""
        for gone in self.rows.keys() - chunk_ids:
            del self.rows[gone]


@dataclass
class TermIndex:
    """The inverted index of one snapshot: for term t, rows[starts[t]:starts[t + 1]] are the
    rows holding it and weights[...] their BM25 term-frequency parts; idf[t] its idf."""

    ids: dict[str, int]
    starts: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    idf: np.ndarray
    size: int

    def scores(self, text: str) -> np.ndarray | None:
        """Every row's BM25 score for `text` (0 where no term matches); None if no term of the
        query is in the index."""
        # A term the query repeats counts as often as it is repeated, as in LanceDB.
        repeats: dict[int, int] = {}
        for token in tokens(text):
            term = self.ids.get(token)
            if term is not None and term + 1 < len(self.starts) and self.starts[term + 1] > self.starts[term]:
                repeats[term] = repeats.get(term, 0) + 1
        if not repeats:
            return None
        scores = np.zeros(self.size, dtype=np.float32)
        for term, times in repeats.items():
            start, end = self.starts[term], self.starts[term + 1]
            # A term's rows are distinct, so a fancy-index add is exact here.
            scores[self.rows[start:end]] += (times * self.idf[term]) * self.weights[start:end]
        return scores


def term_index(chunk_ids: list[str], bodies: list[str], vocabulary: Vocabulary) -> TermIndex:
    """The inverted index of rows with these ids and bodies, in this order."""
    held = [vocabulary.row_terms(chunk_id, body or "") for chunk_id, body in zip(chunk_ids, bodies, strict=True)]
    vocabulary.forget_except(set(chunk_ids))
    size = len(held)
    lengths = np.fromiter((len(r.term_ids) for r in held), dtype=np.int64, count=size)
    if not size or not lengths.sum():
        empty = np.zeros(0, dtype=np.int64)
        return TermIndex(ids=vocabulary.ids, starts=np.zeros(1, dtype=np.int64), rows=empty,
                         weights=np.zeros(0, dtype=np.float32), idf=np.zeros(0, dtype=np.float32), size=size)
    terms = np.concatenate([r.term_ids for r in held])
    counts = np.concatenate([r.counts for r in held])
    rows = np.repeat(np.arange(size, dtype=np.int64), lengths)
    row_tokens = np.bincount(rows, weights=counts, minlength=size)
    average = max(float(row_tokens.mean()), 1e-9)
    norm = K1 * (1 - B + B * row_tokens / average)
    weights = ((K1 + 1) * counts / (counts + norm[rows])).astype(np.float32)
    order = np.argsort(terms, kind="stable")
    vocabulary_size = len(vocabulary.ids)
    doc_freq = np.bincount(terms, minlength=vocabulary_size)
    starts = np.zeros(vocabulary_size + 1, dtype=np.int64)
    np.cumsum(doc_freq, out=starts[1:])
    idf = np.log1p((size - doc_freq + 0.5) / (doc_freq + 0.5)).astype(np.float32)
    return TermIndex(ids=vocabulary.ids, starts=starts, rows=rows[order], weights=weights[order], idf=idf, size=size)
