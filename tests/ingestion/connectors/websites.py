"""A real HTTP server on 127.0.0.1 playing the web for the url, sitemap and feed connectors: pages
with ETag/Last-Modified that answer 304 to a matching conditional request, robots.txt, sitemaps
(plain, index, gzip), feeds, and the faults (429 with Retry-After, 500, malformed XML, a slow
body, redirect loops, a redirect to the metadata address). It counts every request per path."""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""
    last_modified: str = ""
    trickle: float = 0.0  # seconds between the body's 16-byte pieces (a slow body)
    length: bool = True  # send Content-Length


class Website:
    def __init__(self) -> None:
        self.routes: dict[str, list[Answer]] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str], float]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (the name http.server calls)
                site._serve(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path

    # --- what it serves -------------------------------------------------------------------
    def answer(self, path: str, *answers: Answer) -> None:
        """Serve `answers` one per request, the last one from then on."""
        self.routes[path] = list(answers)

    def page(self, path: str, body: str | bytes, *, content_type: str = "text/html; charset=utf-8",
             etag: str = "", last_modified: str = "", **kwargs) -> None:
        body = body.encode() if isinstance(body, str) else body
        self.answer(path, Answer(body=body, content_type=content_type, etag=etag, last_modified=last_modified,
                                 **kwargs))

    def remove(self, path: str) -> None:
        self.routes.pop(path, None)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.answer(path, Answer(status=status, headers={"Location": location}))

    def robots(self, text: str) -> None:
        self.page("/robots.txt", text, content_type="text/plain")

    # --- the server -------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        with self._lock:
            self.hits[path] += 1
            self.requests.append((path, dict(handler.headers.items()), time.monotonic()))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            answers = self.routes.get(path)
            answer = (answers.pop(0) if len(answers) > 1 else answers[0]) if answers else Answer(404, b"not here")
        try:
            self._write(handler, answer)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        conditional = (answer.etag and handler.headers.get("If-None-Match") == answer.etag) or (
            answer.last_modified and not handler.headers.get("If-None-Match")
            and handler.headers.get("If-Modified-Since") == answer.last_modified)
        status = 304 if conditional and answer.status == 200 else answer.status
        handler.send_response(status)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if answer.etag:
            handler.send_header("ETag", answer.etag)
        if answer.last_modified:
            handler.send_header("Last-Modified", answer.last_modified)
        if status == 304:
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_header("Content-Type", answer.content_type)
        if answer.length:
            handler.send_header("Content-Length", str(len(answer.body)))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if not answer.trickle:
            handler.wfile.write(answer.body)
            return
        for start in range(0, len(answer.body), 16):
            handler.wfile.write(answer.body[start:start + 16])
            handler.wfile.flush()
            time.sleep(answer.trickle)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- content ------------------------------------------------------------------------------------
NAVIGATION = ("<header><nav><a href='/'>Home</a> <a href='/about'>About us</a> <a href='/shop'>Shop</a></nav>"
              "</header><div class='menu'><ul><li><a href='/a'>Menu one</a></li><li><a href='/b'>Menu two</a></li>"
              "</ul></div>")


def html_page(title: str, *paragraphs: str) -> str:
    """A page with navigation, a menu and a footer around its article (what trafilatura drops)."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html><head><title>{escape(title)} | Acme</title></head><body>{NAVIGATION}"
            f"<article><h1>{escape(title)}</h1>{body}</article><footer>Copyright 2026 Acme Corp, all rights"
            " reserved</footer></body></html>")


def sitemap_xml(pages: list[tuple[str, str]]) -> str:
    """A urlset of (url, lastmod) pairs ("" for no lastmod)."""
    urls = "".join(f"<url><loc>{escape(url)}</loc>" + (f"<lastmod>{lastmod}</lastmod>" if lastmod else "") + "</url>"
                   for url, lastmod in pages)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'


def sitemap_index_xml(urls: list[str]) -> str:
    items = "".join(f"<sitemap><loc>{escape(url)}</loc></sitemap>" for url in urls)
    return (f'<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"{items}</sitemapindex>")


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode())


def rss_xml(entries: list[dict[str, str]], *, title: str = "Acme news") -> str:
    """RSS 2.0; each entry: guid, title, link, description, pubDate (all optional)."""
    items = ""
    for entry in entries:
        parts = "".join(f"<{tag}>{escape(entry[tag])}</{tag}>" for tag in ("title", "link", "description", "pubDate")
                        if entry.get(tag))
        if entry.get("guid"):
            parts += f'<guid isPermaLink="false">{escape(entry["guid"])}</guid>'
        items += f"<item>{parts}</item>"
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{escape(title)}</title>'
            f"<link>http://example.org/</link><description>News</description>{items}</channel></rss>")


def atom_xml(entries: list[dict[str, str]]) -> str:
    """Atom 1.0; each entry: id, title, link, content (HTML), updated."""
    items = "".join(
        f"<entry><id>{escape(e['id'])}</id><title>{escape(e.get('title', ''))}</title>"
        + (f'<link href="{escape(e["link"])}"/>' if e.get("link") else "")
        + f"<updated>{e.get('updated', '2026-01-01T00:00:00Z')}</updated>"
        + f'<content type="html">{escape(e.get("content", ""))}</content></entry>'
        for e in entries)
    return ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Acme</title>'
            f"<id>urn:acme</id><updated>2026-01-01T00:00:00Z</updated>{items}</feed>")


def http_date(seconds_from_now: float = 0) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)
