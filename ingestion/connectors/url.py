"""`url`: one web page, `{"url": ...}`; its external id is the URL.

What a page becomes (`page_fetched`, shared with sitemap and feed): an HTML page is reduced to its
main text by trafilatura (navigation, menus, footers and ads left out) and stored as Markdown
(headings and lists kept, `# title` first), so the document's text and its content hash follow
what the page says, not its chrome; the title is the page's. Anything else the server sends
(a PDF, a DOCX, plain text), and an HTML page trafilatura finds nothing in, is stored as it came,
for the pipeline's parsers to read as they read an upload.

A re-fetch is conditional on the stored copy's ETag / Last-Modified (a 304 is "not modified"); a
200 whose body is the stored one byte for byte is "not modified" too, so a server that ignores
conditional requests still costs no pipeline work.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from ingestion.connectors.base import ConfigInvalid, Connector, Fetched, Item, connector
from ingestion.connectors.http import Page, page_get, url_problem

HTML_TYPES = ("text/html", "application/xhtml+xml")


@connector
class UrlConnector(Connector):
    kind = "url"
    keys = {"url": True}

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        config = super().config_clean(config)
        problem = url_problem(config["url"])
        if problem:
            raise ConfigInvalid({"url": [problem]})
        config["url"] = config["url"].strip()
        return config

    def items(self, source):
        url = source.config["url"]
        # No marker: the page itself (ETag, Last-Modified, its bytes) says whether it changed.
        yield Item(external_id=url, uri=url)

    def fetch(self, source, item: Item, *, document=None) -> Fetched:
        return page_fetched(item.uri or item.external_id, document=document, marker=item.marker)


def page_fetched(url: str, *, document=None, marker: str = "", timeout: float | None = None) -> Fetched:
    """`url` fetched as a document (see the module's docstring); conditional on `document`, the
    copy Freshet holds, if any. `marker`: the listing's change marker (a sitemap's lastmod),
    kept as the document's; without one the page's ETag or Last-Modified is. `timeout`:
    WEB_TIMEOUT unless given."""
    known = (document.metadata or {}) if document is not None else {}
    # A document that failed is fetched whole: its copy is no proof of anything.
    held = document is not None and document.status != "failed"
    page = page_get(url, etag=known.get("etag", "") if held else "",
                    last_modified=known.get("last_modified", "") if held else "", timeout=timeout)
    metadata = _page_metadata(page, known)
    marker = marker or page.etag or page.last_modified or (document.marker if document is not None else "")
    if page.not_modified or (held and page.sha256 in (known.get("sha256"), document.content_hash)):
        return Fetched(content=None, marker=marker, uri=url, metadata=metadata)
    content, filename, title = page_content(page)
    return Fetched(content=content, marker=marker, title=title, uri=url, filename=filename, metadata=metadata)


def _page_metadata(page: Page, known: dict[str, Any]) -> dict[str, Any]:
    if page.not_modified:  # a 304 may leave out the validators: keep the ones that still hold
        return {**known, "etag": page.etag or known.get("etag", ""),
                "last_modified": page.last_modified or known.get("last_modified", "")}
    return {"etag": page.etag, "last_modified": page.last_modified, "content_type": page.content_type,
            "final_url": page.url, "sha256": page.sha256}


def page_content(page: Page) -> tuple[bytes, str, str]:
    """(content, filename, title) of a fetched page, as stored in Freshet."""
    body = page.content or b""
    if page.content_type in HTML_TYPES or (not page.content_type and body.lstrip()[:15].lower().startswith(
            (b"<!doctype html", b"<html"))):
        extracted = html_main_text(body, url=page.url)
        if extracted is not None:
            text, title = extracted
            return text.encode(), _filename(page.url, ".md"), title
        return body, _filename(page.url, ".html"), ""
    return body, _filename(page.url, ""), ""


def html_main_text(markup: bytes, *, url: str = "") -> tuple[str, str] | None:
    """The main text of an HTML page as Markdown, `# title` first, and its title; None when
    trafilatura finds no text (the page is then parsed whole by the pipeline's HTML parser)."""
    import trafilatura

    text = trafilatura.extract(markup, url=url or None, output_format="markdown", include_formatting=True,
                               include_comments=False, include_tables=True, include_links=False)
    if not text or not text.strip():
        return None
    metadata = trafilatura.extract_metadata(markup, default_url=url or None)
    title = ((metadata.title if metadata is not None else "") or "").strip()[:500]
    text = text.strip()
    if title and not re.match(rf"#\s+{re.escape(title)}\s*(\n|$)", text):
        text = f"# {title}\n\n{text}"
    return text + "\n", title


def _filename(url: str, extension: str) -> str:
    name = posixpath.basename(unquote(urlsplit(url).path)) or "index"
    stem, existing = posixpath.splitext(name)
    name = (stem or "index") + (extension or existing)
    return re.sub(r"[^\w.-]+", "-", name)[:200] or "page"
