"""`sitemap`: every page a sitemap lists, `{"url": ..., "include": [...], "exclude": [...]}`.

ultimate-sitemap-parser reads the sitemap (XML, sitemap indexes to any depth, gzip, plain text,
RSS/Atom) with every fetch going through http.py's guarded, polite fetcher. A page's external id
is its URL and its marker its `lastmod`, so a page whose lastmod did not move is not fetched at
all; a page without one is fetched conditionally. Patterns are globs (`*` matches anything,
`/` included: `https://example.org/docs/*`), or regular expressions when written `re:...`
(searched anywhere in the URL); a page is taken when it matches an include (or there are none)
and no exclude.

The listing is all or nothing: a sitemap (or any sitemap of an index) that cannot be fetched or is
not well-formed XML is SourceUnavailable, so a broken index never prunes the pages it would list.
"""

from __future__ import annotations

import fnmatch
import re
import xml.parsers.expat
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from usp.exceptions import SitemapException
from usp.fetch_parse import SitemapFetcher
from usp.helpers import GunzipException, gunzip
from usp.objects.sitemap import InvalidSitemap
from usp.web_client.abstract_client import (
    AbstractWebClient,
    AbstractWebClientResponse,
    AbstractWebClientSuccessResponse,
    WebClientErrorResponse,
)

from events.errors import TransientError
from ingestion.connectors.base import (
    ConfigInvalid,
    Connector,
    Fetched,
    Item,
    ItemFailed,
    SourceUnavailable,
    connector,
)
from ingestion.connectors.http import Page, page_get, url_problem
from ingestion.connectors.url import page_fetched


@connector
class SitemapConnector(Connector):
    kind = "sitemap"
    keys = {"url": True, "include": False, "exclude": False}

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        config = super().config_clean(config)
        errors: dict[str, list[str]] = {}
        problem = url_problem(config["url"])
        if problem:
            errors["url"] = [problem]
        for key in ("include", "exclude"):
            value = config.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
                errors[key] = ['must be a list of URL patterns: globs ("https://example.org/docs/*") or '
                               'regular expressions written "re:..."']
                continue
            for pattern in value:
                if pattern.startswith("re:"):
                    try:
                        re.compile(pattern[3:])
                    except re.error as error:
                        errors.setdefault(key, []).append(f"{pattern!r} is not a regular expression: {error}.")
            config[key] = [p.strip() for p in value]
        if errors:
            raise ConfigInvalid(errors)
        config["url"] = config["url"].strip()
        return config

    def items(self, source) -> Iterator[Item]:
        config = source.config
        include = [_matcher(p) for p in config.get("include") or []]
        exclude = [_matcher(p) for p in config.get("exclude") or []]
        for url, lastmod in sitemap_pages(config["url"]).items():
            if (not include or any(m(url) for m in include)) and not any(m(url) for m in exclude):
                yield Item(external_id=url, marker=lastmod, uri=url)

    def fetch(self, source, item: Item, *, document=None) -> Fetched:
        return page_fetched(item.uri or item.external_id, document=document, marker=item.marker)


def _matcher(pattern: str):
    if pattern.startswith("re:"):
        return re.compile(pattern[3:]).search
    return re.compile(fnmatch.translate(pattern)).match


def sitemap_pages(url: str) -> dict[str, str]:
    """Every page URL the sitemap at `url` lists (indexes followed), with its lastmod (ISO 8601,
    "" when it has none). SourceUnavailable with the reason if any sitemap of it cannot be read."""
    try:
        tree = SitemapFetcher(url=url, recursion_level=0, web_client=GuardedWebClient()).sitemap()
    except SitemapException as error:
        raise SourceUnavailable(f"The sitemap {url} cannot be read: {error}") from None
    for sitemap in [tree, *tree.all_sitemaps()]:
        if isinstance(sitemap, InvalidSitemap):
            raise SourceUnavailable(f"The sitemap {url} cannot be read: {sitemap.reason}")
    pages: dict[str, str] = {}
    for page in tree.all_pages():
        lastmod = page.last_modified.isoformat() if page.last_modified else ""
        pages[page.url] = max(pages.get(page.url, ""), lastmod)
    return pages


class _Response(AbstractWebClientSuccessResponse):
    def __init__(self, page: Page, data: bytes):
        self._page, self._data = page, data

    def status_code(self) -> int:
        return self._page.status

    def status_message(self) -> str:
        return "OK"

    def header(self, case_insensitive_name: str) -> str | None:
        return self._page.headers.get(case_insensitive_name)

    def raw_data(self) -> bytes:
        return self._data

    def url(self) -> str:
        return self._page.url


class GuardedWebClient(AbstractWebClient):
    """usp's web client on http.py: robots.txt, per-host limits, the outbound guard, retries (so
    usp's own retries are off: every error is final here). Every body is checked for well-formed
    XML first, which usp's parser does not insist on: it keeps what it read before an error, and a
    truncated sitemap would prune the pages after the cut."""

    def __init__(self) -> None:
        self.max_bytes = settings.WEB_MAX_BYTES

    def set_max_response_data_length(self, max_response_data_length: int | None) -> None:
        if max_response_data_length:
            self.max_bytes = min(settings.WEB_MAX_BYTES, max_response_data_length)

    def get(self, url: str) -> AbstractWebClientResponse:
        try:
            page = page_get(url, max_bytes=self.max_bytes)
        except (ItemFailed, TransientError) as error:
            return WebClientErrorResponse(str(error), retryable=False)
        data = plain = page.content or b""
        if data[:2] == b"\x1f\x8b":
            try:
                plain = gunzip(data, max_output_bytes=self.max_bytes)
            except GunzipException as error:
                return WebClientErrorResponse(f"{url} is not valid gzip: {error}", retryable=False)
            # usp unzips what is named .gz or typed gzip itself; anything else is handed over unzipped.
            if not (urlsplit(page.url).path.lower().endswith(".gz") or "gzip" in page.content_type):
                data = plain
        problem = xml_problem(plain)
        if problem:
            return WebClientErrorResponse(f"{url} is not well-formed XML: {problem}", retryable=False)
        return _Response(page, data)


def xml_problem(data: bytes) -> str | None:
    """Why `data` (if it looks like XML) is not well-formed XML, or None. Document type
    declarations are refused, as usp's parser refuses them (entity expansion)."""
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return None  # a plain-text sitemap
    parser = xml.parsers.expat.ParserCreate()

    def refuse(*args):
        raise ValueError("it declares a DOCTYPE or entities, which sitemaps may not")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as error:
        return f"{xml.parsers.expat.ErrorString(error.code)} at line {error.lineno}, column {error.offset}"
    except ValueError as error:
        return str(error)
    return None
