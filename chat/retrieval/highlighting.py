"""Highlighting: the sentences of a passage that contain the query's terms, with the terms marked."""

from __future__ import annotations

import functools
import html
import re

from chat.text import STOP_WORDS, sentences_lazily

_WORD = re.compile(r"\w+", re.UNICODE)
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
    return frozenset(_stem(w) for w in _WORD.findall(query) if w.lower() not in STOP_WORDS and len(w) > 1)


def highlight(text: str, query: str | frozenset[str], *, max_sentences: int = 3) -> str:
    """The passage's sentences that contain query terms, HTML-escaped, each match wrapped in
    <mark>; at most `max_sentences`, joined by " … ". A passage without any query term (a kNN
    match by meaning) gives its first sentence, unmarked. Safe to insert as HTML. `query` may be
    the terms from `query_terms`, to split a query once for many passages."""
    terms = query if isinstance(query, frozenset) else query_terms(query)
    # A word is marked when its stem is a term, and a stem starts its (lower-cased) word: a
    # passage that holds no term anywhere needs only its first sentence split off.
    lowered = text.lower()
    maybe = bool(terms) and any(term in lowered for term in terms)
    picked: list[str] = []
    first: str | None = None
    for sentence in sentences_lazily(text):
        if first is None:
            first = sentence
        if not maybe:
            break
        if any(_stem(word) in terms for word in _WORD.findall(sentence)):
            picked.append(_mark(sentence, terms))
            if len(picked) == max_sentences:
                break
    if not picked and first is not None:
        picked.append(html.escape(first))
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
