"""Text rules that retrieval (highlighting) and generation (extractive answers, citation
attribution) share: where a sentence ends, and which words carry no meaning for matching."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# A sentence ends at . ! ? before a capital (with or without the space: extracted text often
# loses it, "disabilities.A line scan"), at a blank line, or before a bullet.
_ABBREVIATIONS = "".join(rf"(?<!\b{re.escape(a)})" for a in (
    "Dr.", "Mr.", "Mrs.", "Ms.", "Prof.", "St.", "vs.", "Fig.", "No.", "e.g.", "i.e.", "al.", "approx.", "cf."))
# Each alternative starts with a test that fails fast at most positions (after . ! ?, or a
# newline), the abbreviations' fourteen look-behinds only after punctuation: the same matches as
# testing them first at every position, about ten times faster (highlighting splits every hit).
SENTENCE_END = re.compile(
    r"(?<=[.!?])(?:" + _ABBREVIATIONS + r"[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])"
    r"|(?<=[a-z0-9)\]][.!?])(?=[A-Z]))"
    r"|\n(?:\s*\n|(?=\s*[-*\u2022]\s))"
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
    return list(sentences_lazily(text))


def sentences_lazily(text: str) -> Iterator[str]:
    """`sentences(text)`, each found when asked for: a caller that needs the first few does not
    split the rest."""
    position = 0
    for end in SENTENCE_END.finditer(text):
        piece = " ".join(text[position:end.start()].split())
        if piece:
            yield piece
        position = end.end()
    piece = " ".join(text[position:].split())
    if piece:
        yield piece


# --- Units: sentences, headings and list items, with where they are in the text ----------------
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u25aa\u2013]|\d{1,3}[.)])\s+")
_MARKDOWN_HEADING = re.compile(r"^\s*#{1,6}\s+")
_TERMINAL = (".", "!", "?", ":", ";", ",", "\u2026")
HEADING_MAX_WORDS = 10


@dataclass(frozen=True)
class Unit:
    """A piece of a document that reads on its own: a sentence, a heading or a list item.
    `start`/`end` are offsets into the text it came from; `text` has its whitespace collapsed
    (and a heading's # or an item's bullet removed)."""

    start: int
    end: int
    text: str
    kind: str  # "sentence", "heading" or "item"


def _is_heading(line: str, *, alone: bool, after_break: bool) -> bool:
    stripped = line.strip()
    if _MARKDOWN_HEADING.match(stripped):
        return True
    words = stripped.split()
    if not words or len(words) > HEADING_MAX_WORDS or stripped.endswith(_TERMINAL):
        return False
    # A hard-wrapped line of a sentence ("reaching a depth of") starts lower-case or follows an
    # unfinished line; a heading starts a block or follows a finished sentence.
    return (stripped[0].isupper() or stripped[0].isdigit()) and (alone or after_break)


def text_units(text: str) -> list[Unit]:
    """The units of `text` in order. Blank lines end paragraphs; a heading (a Markdown `#` line,
    or a short capitalised line without final punctuation that starts a block or follows a
    finished sentence) and a list item are units of their own; the rest of a paragraph is split
    into sentences (SENTENCE_END), across its hard line wraps."""
    units: list[Unit] = []
    for block in re.finditer(r"\S(?:.*?)(?=\n\s*\n|\Z)", text, flags=re.DOTALL):
        lines = [(m.start() + block.start(), m.group()) for m in re.finditer(r"[^\n]+", block.group())]
        lines = [(start, line) for start, line in lines if line.strip()]
        paragraph: list[tuple[int, str]] = []
        item: list[tuple[int, str]] = []
        after_break = True
        for index, (start, line) in enumerate(lines):
            alone = len(lines) == 1
            if _BULLET.match(line):
                units.extend(_sentences_at(paragraph))
                units.extend(_sentences_at(item, kind="item"))
                paragraph, item = [], [(start, line)]
                continue
            if item and line.strip()[:1].islower():
                item.append((start, line))  # the item goes on, hard-wrapped
                continue
            units.extend(_sentences_at(item, kind="item"))
            item = []
            if _is_heading(line, alone=alone, after_break=after_break or index == 0) and (
                    alone or index + 1 < len(lines) or _MARKDOWN_HEADING.match(line)):
                units.extend(_sentences_at(paragraph))
                paragraph = []
                units.append(_unit(start, line, "heading"))
                after_break = True
                continue
            paragraph.append((start, line))
            after_break = line.rstrip().endswith((".", "!", "?", ":"))
        units.extend(_sentences_at(item, kind="item"))
        units.extend(_sentences_at(paragraph))
    return units


def _unit(start: int, raw: str, kind: str) -> Unit:
    end = start + len(raw.rstrip())
    start += len(raw) - len(raw.lstrip())
    words = raw.strip()
    if kind == "heading":
        words = _MARKDOWN_HEADING.sub("", words)
    elif kind == "item":
        words = _BULLET.sub("", words)
    return Unit(start=start, end=end, text=" ".join(words.split()), kind=kind)


def _sentences_at(lines: list[tuple[int, str]], *, kind: str = "sentence") -> list[Unit]:
    """Split consecutive lines (offset, text) into sentences with their offsets (an item stays
    one unit, whatever its sentences)."""
    if not lines:
        return []
    base = lines[0][0]
    # The span with its original separators (newlines become spaces), so offsets stay exact.
    pieces, cursor = [], base
    for start, line in lines:
        pieces.append(" " * (start - cursor))
        pieces.append(line)
        cursor = start + len(line)
    span = "".join(pieces)
    if kind == "item":
        return [_unit(base, span, kind)]
    units, position = [], 0
    for match in [*SENTENCE_END.finditer(span), None]:
        end = match.start() if match is not None else len(span)
        if span[position:end].strip():
            units.append(_unit(base + position, span[position:end], kind))
        position = match.end() if match is not None else len(span)
    return units
