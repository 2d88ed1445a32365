"""Re-fetching a document from its source, for `outdated` votes.

Only documents of `url` sources can be re-fetched: their address is the document's uri (or the
source's config["url"]). Uploads, pushes, feeds and folders are re-sent by whoever owns them, so
a vote on them is recorded and nothing is fetched.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from django.conf import settings

from events.errors import TransientError
from ingestion.models import Document, Source

# Statuses worth trying again later; any other 4xx/5xx is reported and left alone.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_REDIRECTS = 5


class RefetchFailed(Exception):
    """The document cannot be re-fetched; the message says why, for the admin."""


def refetch_url(document: Document) -> str | None:
    """Where `document` can be fetched again, or None when its source is not a web source."""
    source = document.source
    if source.kind != Source.Kind.URL:
        return None
    return document.uri or str((source.config or {}).get("url") or "") or None


def url_fetch(url: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
    """GET `url` (http or https only, a few redirects), at most `max_bytes` of body.

    RefetchFailed for what will not get better by waiting (a bad scheme, 404, a body too large),
    TransientError for what may (timeouts, refused connections, 429, 5xx).
    """
    max_bytes = settings.MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    timeout = settings.FEEDBACK_REFETCH_TIMEOUT if timeout is None else timeout
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise RefetchFailed(f"Only http and https addresses can be re-fetched, not {url!r}.")
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
            with client.stream("GET", url, headers={"User-Agent": "Freshet feedback re-fetch"}) as response:
                if response.status_code in TRANSIENT_STATUSES:
                    raise TransientError(f"{url} answered {response.status_code}; trying again later.")
                if response.status_code >= 400:
                    raise RefetchFailed(f"{url} answered {response.status_code}.")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise RefetchFailed(f"{url} is {int(declared)} bytes; the limit is {max_bytes} (MAX_UPLOAD_BYTES).")
                body = bytearray()
                for piece in response.iter_bytes():
                    body.extend(piece)
                    if len(body) > max_bytes:
                        raise RefetchFailed(f"{url} sent more than {max_bytes} bytes (MAX_UPLOAD_BYTES).")
                return bytes(body)
    except httpx.TooManyRedirects:
        raise RefetchFailed(f"{url} redirects more than {MAX_REDIRECTS} times.") from None
    except httpx.UnsupportedProtocol:
        raise RefetchFailed(f"{url} redirects to an address that is not http or https.") from None
    except httpx.InvalidURL as error:
        raise RefetchFailed(f"{url} is not a valid address: {error}.") from None
    except httpx.TransportError as error:  # timeouts, refused or dropped connections
        raise TransientError(f"Fetching {url} failed: {type(error).__name__}: {error}") from error
