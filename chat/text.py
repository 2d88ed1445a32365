"""Text rules that retrieval (highlighting) and generation (extractive answers, citation
attribution) share: where a sentence ends, and which words carry no meaning for matching."""

from __future__ import annotations

import re

# A sentence ends at . ! ? before a capital (with or without the space: extracted text often
# loses it, "disabilities.A line scan"), at a blank line, or before a bullet.
SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])"
    r"|(?<=[a-z0-9)\]][.!?])(?=[A-Z])"
    r"|\n\s*\n|\n(?=\s*[-*\u2022]\s)"
)

# Function words: they neither make a passage relevant nor a sentence an answer.
STOP_WORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how i if in into is it "
    "its may might no not of on or our should so such than that the their them then there these they this "
    "those to was we were what when where which while who whom why will with would you your about after "
    "also any before between both each more most other over some under up very".split()
)


def sentences(text: str) -> list[str]:
    """The sentences of `text` in order, each with its runs of whitespace collapsed to one space;
    empty ones are left out."""
    pieces = (" ".join(raw.split()) for raw in SENTENCE_END.split(text))
    return [piece for piece in pieces if piece]
