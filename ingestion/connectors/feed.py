"""`feed`: the entries of an RSS or Atom feed, `{"url": ..., "content": "entry" | "link"}`.

feedparser reads the feed. An entry's external id is its guid (Atom `id`; its link, then a hash of
it, when it has none). With `"content": "entry"` (the default) the document is the entry itself
(title and content, or summary, as HTML sanitised by feedparser, read by the pipeline's HTML
parser) and its marker a hash of the entry, so an edited entry is re-indexed even when the feed
does not move its `updated`; with `"link"` the document is the page the entry links to, fetched
like a `url` source (main text, conditional GET) and marked by the entry's updated/published.

The feed is fetched once per listing and kept a few minutes in Redis, so fetching its entries
reads it from there rather than from the server again.
"""

from __future__ import annotations

import hashlib
import html
import json
import xml.sax
from collections.abc import Iterator
from typing import Any

import feedparser
from django.conf import settings

from config.redis_client import redis_client
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
from ingestion.connectors.http import page_get, url_problem
from ingestion.connectors.url import page_fetched

CONTENT_MODES = ("entry", "link")
FEED_CACHE_SECONDS = 600


@connector
class FeedConnector(Connector):
    kind = "feed"
    keys = {"url": True, "content": False}

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        config = super().config_clean(config)
        errors: dict[str, list[str]] = {}
        problem = url_problem(config["url"])
        if problem:
            errors["url"] = [problem]
        config.setdefault("content", "entry")
        if config["content"] not in CONTENT_MODES:
            errors["content"] = ['must be "entry" (index the entry\'s own text) or "link" (index the page it '
                                 "links to)."]
        if errors:
            raise ConfigInvalid(errors)
        config["url"] = config["url"].strip()
        return config

    def items(self, source) -> Iterator[Item]:
        url = source.config["url"]
        by_link = source.config.get("content", "entry") == "link"
        for entry_id, entry in feed_entries(url, fresh=True).items():
            if by_link:
                marker = entry.get("updated", "") or entry.get("published", "")
            else:
                marker = _entry_hash(entry)
            yield Item(external_id=entry_id, marker=marker, uri=entry.get("link", "") or url,
                       title=entry.get("title", "")[:500])

    def fetch(self, source, item: Item, *, document=None) -> Fetched:
        if source.config.get("content", "entry") == "link":
            if not item.uri or item.uri == source.config["url"]:
                raise ItemFailed(f"The feed entry {item.external_id} links to no page.")
            return page_fetched(item.uri, document=document, marker=item.marker)
        entry = feed_entries(source.config["url"]).get(item.external_id)
        if entry is None:
            raise ItemFailed(f"The entry {item.external_id} is no longer in the feed {source.config['url']}.")
        parts = _entry_parts(entry)
        title = html.escape(parts["title"])
        content = (f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
                   f"{parts['content']}</body></html>").encode()
        if document is not None and document.status != "failed" and \
                hashlib.sha256(content).hexdigest() == document.content_hash:
            content = None
        return Fetched(content=content, marker=item.marker, title=parts["title"][:500], uri=item.uri,
                       filename="entry.html", metadata={"feed": source.config["url"], "updated": parts["updated"]})


def _entry_parts(entry) -> dict[str, str]:
    content = ""
    for block in entry.get("content") or []:
        if block.get("value"):
            content = block["value"] if "html" in block.get("type", "") else f"<p>{html.escape(block['value'])}</p>"
            break
    if not content:
        content = entry.get("summary", "")
    return {"title": entry.get("title", ""), "link": entry.get("link", ""), "content": content,
            "updated": entry.get("updated", "") or entry.get("published", "")}


def _entry_hash(entry) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(_entry_parts(entry), sort_keys=True).encode()).hexdigest()


def feed_entries(url: str, *, fresh: bool = False) -> dict[str, Any]:
    """The feed's entries by external id. `fresh`: fetch it now (a listing); otherwise the copy
    the last listing kept in Redis will do. SourceUnavailable if it cannot be read or is no feed."""
    key = f"{settings.REDIS_KEY_PREFIX}web:feed:{hashlib.sha256(url.encode()).hexdigest()[:32]}"
    body = None if fresh else redis_client().get(key)
    if body is None:
        try:
            page = page_get(url)
        except (ItemFailed, TransientError) as error:
            raise SourceUnavailable(f"The feed {url} cannot be fetched: {error}") from None
        body = page.content or b""
        redis_client().set(key, body, ex=FEED_CACHE_SECONDS)
    parsed = feedparser.parse(body, sanitize_html=True, resolve_relative_uris=True, response_headers={
        "content-location": url})
    if parsed.get("bozo") and isinstance(parsed.get("bozo_exception"), xml.sax.SAXException) or \
            (not parsed.get("version") and not parsed.entries):
        reason = parsed.get("bozo_exception") or "no RSS or Atom feed found"
        raise SourceUnavailable(f"The feed {url} cannot be read: {reason}.")
    entries: dict[str, Any] = {}
    for entry in parsed.entries:
        entry_id = entry.get("id") or entry.get("link") or _entry_hash(entry)
        entries.setdefault(entry_id, entry)
    return entries
