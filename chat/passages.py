"""Passages for an answer: the retrieved chunks with where they sit in their document (the
whole sentences they cover, the PDF page they start on) and where their citation opens."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from chat.prompting import Passage
from chat.text import Unit, text_units
from ingestion.models import Document, Source
from ingestion.parsers import PDF, PDF_PAGE_BREAK
from ingestion.search_index import SearchHit

# Sources whose documents are web pages: a citation opens the page itself.
WEB_KINDS = frozenset({Source.Kind.URL, Source.Kind.SITEMAP, Source.Kind.FEED})


@dataclass
class _Held:
    text: str
    media_type: str
    kind: str
    units: list[Unit] | None = None


def chunk_span(text: str, chunk: str) -> tuple[int, int] | None:
    """Where `chunk` sits in its document's `text` (chunks are substrings of it, stripped)."""
    start = text.find(chunk)
    if start < 0:
        head = chunk[:80]
        start = text.find(head) if head else -1
        if start < 0:
            return None
    return start, start + len(chunk)


def pdf_page(text: str, offset: int) -> int:
    """The 1-based page of `offset` in a PDF's text (pages are separated by PDF_PAGE_BREAK)."""
    return text.count(PDF_PAGE_BREAK, 0, offset) + 1


def document_url(document_id: int, chunk_id: str = "") -> str:
    url = reverse("document", args=[document_id])
    return f"{url}?passage={chunk_id}#passage" if chunk_id else url


def citation_url(*, kind: str, uri: str, document_id: int, chunk_id: str) -> str:
    """A web source's citation opens its page; any other opens Freshet's document page."""
    if kind in WEB_KINDS and uri.lower().startswith(("http://", "https://")):
        return uri
    return document_url(document_id, chunk_id)


def passages_from_hits(hits: list[SearchHit], *, relevance: list[float] | None = None) -> list[Passage]:
    """Number the hits 1..n as passages. Hits of a document that no longer exists are dropped
    (its chunks leave the index a moment after its row leaves the database). Each passage holds
    the whole units of its document that its chunk covers, less those a better-ranked passage
    already holds, so overlapping chunks never quote a sentence twice."""
    rows = Document.objects.filter(pk__in={h.document_id for h in hits}).values_list(
        "pk", "text", "media_type", "source__kind")
    held = {pk: _Held(text=text, media_type=media_type, kind=kind) for pk, text, media_type, kind in rows}
    taken: set[tuple[int, int]] = set()
    passages: list[Passage] = []
    scores = relevance if relevance is not None else [0.0] * len(hits)
    for hit, score in zip(hits, scores, strict=True):
        document = held.get(hit.document_id)
        if document is None:
            continue
        span = chunk_span(document.text, hit.text)
        units: tuple[Unit, ...] = ()
        page = None
        if span is not None:
            if document.units is None:
                document.units = text_units(document.text)
            start, end = span
            covered = [u for u in document.units if u.end > start and u.start < end]
            units = tuple(u for u in covered if (hit.document_id, u.start) not in taken)
            taken.update((hit.document_id, u.start) for u in covered)
            if document.media_type == PDF:
                page = pdf_page(document.text, start)
        passages.append(Passage(
            n=len(passages) + 1, chunk_id=hit.chunk_id, document_id=hit.document_id, title=hit.title, uri=hit.uri,
            text=hit.text, score=hit.score, relevance=score, page=page, units=units,
            url=citation_url(kind=document.kind, uri=hit.uri, document_id=hit.document_id, chunk_id=hit.chunk_id),
        ))
    return passages
