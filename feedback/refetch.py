"""Re-fetching a document from its source, for `outdated` votes.

Only documents of `url` sources can be re-fetched: their address is the document's uri (or the
source's config["url"]). Uploads, pushes, feeds and folders are re-sent by whoever owns them, so
a vote on them is recorded and nothing is fetched.
"""

from __future__ import annotations

from django.conf import settings

from ingestion.connectors.base import Fetched, ItemFailed
from ingestion.models import Document, Source


class RefetchFailed(Exception):
    """The document cannot be re-fetched; the message says why, for the admin."""


def refetch_url(document: Document) -> str | None:
    """Where `document` can be fetched again, or None when its source is not a web source."""
    source = document.source
    if source.kind != Source.Kind.URL:
        return None
    return document.uri or str((source.config or {}).get("url") or "") or None


def document_page_fetch(document: Document, url: str) -> Fetched:
    """`document`'s page fetched again the way its `url` source syncs it (ingestion/connectors/url.py:
    the main text, conditional on the copy held; `content` None when the page did not change).
    RefetchFailed for what will not get better by waiting, TransientError for what may."""
    from ingestion.connectors.url import page_fetched

    try:
        return page_fetched(url, document=document, timeout=settings.FEEDBACK_REFETCH_TIMEOUT)
    except ItemFailed as error:
        raise RefetchFailed(str(error)) from None


def url_fetch(url: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
    """GET `url` through the web connectors' polite, guarded fetcher (ingestion/connectors/http.py),
    at most `max_bytes` (MAX_UPLOAD_BYTES) of body, within `timeout` (FEEDBACK_REFETCH_TIMEOUT).

    RefetchFailed for what will not get better by waiting (a bad scheme, 404, a body too large),
    TransientError for what may (timeouts, refused connections, 429, 5xx).
    """
    from ingestion.connectors.http import page_get

    max_bytes = settings.MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    timeout = settings.FEEDBACK_REFETCH_TIMEOUT if timeout is None else timeout
    try:
        page = page_get(url, max_bytes=max_bytes, timeout=timeout)
    except ItemFailed as error:
        raise RefetchFailed(str(error).replace("(WEB_MAX_BYTES)", "(MAX_UPLOAD_BYTES)")) from None
    return page.content or b""
