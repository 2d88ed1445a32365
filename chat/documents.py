"""The document page (`/documents/{id}/`): what a citation of an upload opens. Its title, source,
text with the cited passage highlighted (and scrolled to), and the original file to download.
Shown to whoever may see the document's source now; anyone else gets 404, so ids leak nothing."""

from __future__ import annotations

import html
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe

from chat.passages import chunk_span
from ingestion.models import Chunk, Document
from ingestion.parsers import DOCX, MARKDOWN, PDF, PDF_PAGE_BREAK, TEXT
from ingestion.selectors import documents_visible_to

# Served as themselves; anything else (HTML above all: it would run in Freshet's origin if a
# browser rendered it) is sent as opaque bytes. Always as an attachment, never inline.
SAFE_DOWNLOAD_TYPES = {PDF: PDF, DOCX: DOCX, TEXT: "text/plain; charset=utf-8",
                       MARKDOWN: "text/markdown; charset=utf-8"}


def _visible_document(request: HttpRequest, document_id: int) -> Document | HttpResponse:
    if not request.user.is_authenticated and not settings.CHAT_ALLOW_ANONYMOUS:
        return redirect_to_login(request.get_full_path())
    document = documents_visible_to(request.user).select_related("source").filter(pk=document_id).first()
    if document is None:
        raise Http404("No such document among those you may see.")
    return document


def _text_html(text: str, span: tuple[int, int] | None, *, paged: bool) -> str:
    """The document's text, escaped, the passage in <mark id="passage">, PDF pages headed."""
    if span is None:
        parts = [html.escape(text)]
    else:
        start, end = span
        parts = [html.escape(text[:start]), '<mark id="passage" class="passage-mark">',
                 html.escape(text[start:end]), "</mark>", html.escape(text[end:])]
    body = "".join(parts)
    if paged:
        pages = body.split(PDF_PAGE_BREAK)
        body = pages[0]
        for number, page in enumerate(pages[1:], start=2):
            body += f'<span class="page-break" id="page-{number}">Page {number}</span>{page}'
        body = '<span class="page-break" id="page-1">Page 1</span>' + body
    return body


def document_page(request: HttpRequest, document_id: int) -> HttpResponse:
    document = _visible_document(request, document_id)
    if isinstance(document, HttpResponse):
        return document
    span = None
    page = None
    chunk_id = request.GET.get("passage", "")
    if chunk_id:
        chunk = Chunk.objects.filter(pk=chunk_id[:64], document=document).only("text").first()
        if chunk is not None:
            span = chunk_span(document.text, chunk.text)
    paged = document.media_type == PDF
    if span is not None and paged:
        page = document.text.count(PDF_PAGE_BREAK, 0, span[0]) + 1
    return render(request, "chat/document.html", {
        "document": document,
        "text_html": mark_safe(_text_html(document.text, span, paged=paged)),  # escaped above
        "highlighted": span is not None,
        "passage_missing": bool(chunk_id) and span is None,
        "page": page,
        "downloadable": bool(document.file),
        "web": document.uri.lower().startswith(("http://", "https://")),
    })


def document_download(request: HttpRequest, document_id: int) -> HttpResponse:
    """The original bytes, as an attachment with a safe content type."""
    document = _visible_document(request, document_id)
    if isinstance(document, HttpResponse):
        return document
    if not document.file:
        raise Http404("This document has no stored original to download.")
    try:
        handle = document.file.open("rb")
    except FileNotFoundError:
        raise Http404("The stored original of this document is missing.") from None
    name = PurePosixPath(document.filename or document.external_id or f"document-{document.pk}").name
    response = FileResponse(handle, as_attachment=True, filename=name,
                            content_type=SAFE_DOWNLOAD_TYPES.get(document.media_type, "application/octet-stream"))
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response
