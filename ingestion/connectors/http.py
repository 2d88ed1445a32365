"""Fetching from the web like a good citizen: the one way the url, sitemap and feed kinds (and
re-fetches) read a page.

Every request goes through config/outbound.py's guard (http and https only, never a link-local or
metadata address, each redirect hop checked again), names Freshet in its User-Agent, asks
robots.txt first (cached per host), keeps to a per-host limit of requests at once and a delay
between two (shared by every process through Redis), is conditional when Freshet holds a copy
(If-None-Match / If-Modified-Since: a 304 costs one request and nothing else), and is bounded:
connect and total timeouts (a body still trickling in at WEB_TIMEOUT fails), a maximum body,
a few redirects (a loop is named as one), a few retries on 429/5xx honouring Retry-After within
a bounded total wait.

Errors are the connector interface's: ItemFailed for this URL alone (a 404, too large, robots.txt,
a redirect loop, a refused address, a body still arriving at the timeout), TransientError for what
may pass (connect or read timeouts, a refused connection, 429/5xx after the retries). Listing code
turns either into SourceUnavailable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings
from protego import Protego

from config.outbound import OutboundRefused, outbound_client, retry_after_seconds, url_check
from config.redis_client import redis_client
from events.errors import TransientError
from ingestion.connectors.base import ItemFailed

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to read at least 500 KiB of robots.txt


class FetchRefused(ItemFailed):
    """robots.txt or the outbound guard does not allow this URL."""


@dataclass(frozen=True)
class Page:
    """One answer: the final URL (after redirects), its status and headers, and the body (None
    for a 304 Not Modified)."""

    url: str
    status: int
    headers: httpx.Headers
    content: bytes | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "")

    @property
    def last_modified(self) -> str:
        return self.headers.get("last-modified", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content or b"").hexdigest()


def url_problem(value: object) -> str | None:
    """Why `value` cannot be a source's URL, for a person, or None if it can. A name that does not
    resolve now is accepted (it may later; the sync says so then)."""
    if not isinstance(value, str) or not value.strip():
        return "must be an http or https address, like https://example.org/page."
    url = value.strip()
    try:
        url_check(url)
    except OutboundRefused as error:
        return str(error)
    except httpx.ConnectError:
        pass
    return None


def page_get(url: str, *, etag: str = "", last_modified: str = "", max_bytes: int | None = None,
             robots: bool = True, timeout: float | None = None) -> Page:
    """GET `url` politely (see the module's docstring). A 2xx or a 304 comes back; anything else is
    ItemFailed or TransientError with a message naming the URL and what it answered. `max_bytes`
    and `timeout` (the whole response) default to WEB_MAX_BYTES and WEB_TIMEOUT."""
    max_bytes = settings.WEB_MAX_BYTES if max_bytes is None else max_bytes
    timeout = settings.WEB_TIMEOUT if timeout is None else timeout
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    waited, attempt = 0.0, 0
    while True:
        page = _get_following(url, headers=headers, max_bytes=max_bytes, robots=robots, timeout=timeout)
        if page.status not in RETRY_STATUSES:
            return _page_checked(url, page)
        failure = f"{url} answered {page.status}"
        retry_after = retry_after_seconds(page.headers.get("retry-after"))
        if attempt >= settings.WEB_RETRIES:
            raise TransientError(f"{failure} ({attempt + 1} tries); trying again later.")
        wait = max(retry_after or 0.0, 0.5 * 2 ** attempt * (1 + random.random()))
        if waited + wait > settings.WEB_RETRY_WAIT_MAX:
            raise TransientError(f"{failure} and asks to wait {wait:.0f} s (Retry-After), more than "
                                 f"WEB_RETRY_WAIT_MAX ({settings.WEB_RETRY_WAIT_MAX:g} s); trying again later.")
        logger.info("%s; trying again in %.1f s", failure, wait)
        time.sleep(wait)
        waited += wait
        attempt += 1


def _page_checked(url: str, page: Page) -> Page:
    if page.status < 300 or page.not_modified:
        return page
    reason = {404: "not found", 410: "gone", 401: "needs a login", 403: "forbidden"}.get(page.status, "")
    raise ItemFailed(f"{url} answered {page.status}" + (f" ({reason})." if reason else "."))


def _get_following(url: str, *, headers: dict[str, str], max_bytes: int, robots: bool,
                   timeout: float) -> Page:
    """One GET, following at most WEB_MAX_REDIRECTS redirects by hand, so that every hop is
    checked by the guard and robots.txt and counted against its own host's limits."""
    hops = [url]
    current = url
    for _ in range(settings.WEB_MAX_REDIRECTS + 1):
        try:
            url_check(current)
        except OutboundRefused as error:
            raise FetchRefused(str(error) if current == url else f"{url} redirects to {error}") from None
        except httpx.ConnectError as error:
            raise TransientError(str(error)) from error
        delay = settings.WEB_HOST_DELAY
        if robots:
            rules = robots_rules(current)
            if not rules.can_fetch(current, user_agent_token()):
                raise FetchRefused(f"robots.txt of {_origin(current)} does not allow fetching {current}.")
            crawl_delay = rules.crawl_delay(user_agent_token())
            if crawl_delay:
                delay = max(delay, min(float(crawl_delay), settings.WEB_CRAWL_DELAY_MAX))
        page = _send(current, headers=headers, max_bytes=max_bytes, delay=delay, timeout=timeout)
        location = page.headers.get("location")
        if page.status not in REDIRECT_STATUSES or not location:
            return page
        target = urljoin(current, location)
        if target in hops:
            raise ItemFailed(f"{url} redirects in a loop: {' → '.join([*hops, target])}.")
        hops.append(target)
        current = target
    raise ItemFailed(f"{url} redirects more than {settings.WEB_MAX_REDIRECTS} times (WEB_MAX_REDIRECTS).")


def _client(timeout: float) -> httpx.Client:
    # One client (one connection pool) per process and timeouts: Celery's prefork pool forks
    # after import, and a pool must never be shared across a fork.
    connect = min(timeout, settings.WEB_CONNECT_TIMEOUT)
    key = (os.getpid(), timeout, connect)
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = outbound_client(timeout=httpx.Timeout(timeout, connect=connect),
                                                 follow_redirects=False)
    return client


_CLIENTS: dict[tuple, httpx.Client] = {}


def _send(url: str, *, headers: dict[str, str], max_bytes: int, delay: float, timeout: float) -> Page:
    with host_turn(urlsplit(url).netloc.lower(), delay=delay):
        deadline = time.monotonic() + timeout
        try:
            with _client(timeout).stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status in REDIRECT_STATUSES or status == 304 or status >= 400:
                    return Page(str(response.url), status, response.headers, b"" if status != 304 else None)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ItemFailed(f"{url} is {int(declared)} bytes; the limit is {max_bytes} (WEB_MAX_BYTES).")
                body = bytearray()
                for piece in response.iter_bytes():
                    body.extend(piece)
                    if len(body) > max_bytes:
                        raise ItemFailed(f"{url} sent more than {max_bytes} bytes (WEB_MAX_BYTES).")
                    if time.monotonic() > deadline:
                        # Not transient: a server this slow is as slow on the next try, and each
                        # try would hold a worker for the whole timeout. The next sync tries again.
                        raise ItemFailed(f"{url} took longer than {timeout:g} s to send its body (WEB_TIMEOUT).")
                return Page(str(response.url), status, response.headers, bytes(body))
        except OutboundRefused as error:
            raise FetchRefused(str(error)) from None
        except httpx.TimeoutException as error:
            raise TransientError(f"{url} timed out ({type(error).__name__}, after {timeout:g} s: "
                                 "WEB_TIMEOUT).") from error
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            raise ItemFailed(f"{url} cannot be fetched: {error}.") from None
        except httpx.TransportError as error:  # refused, reset or dropped connections
            raise TransientError(f"Fetching {url} failed: {type(error).__name__}: {error}") from error


# --- robots.txt ---------------------------------------------------------------------------------
def user_agent_token() -> str:
    """The product token robots.txt groups are matched against ("Freshet")."""
    return settings.OUTBOUND_USER_AGENT.split("/", 1)[0].split()[0]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


_ROBOTS: dict[str, tuple[str, Protego]] = {}


def _robots_key(origin: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}web:robots:{hashlib.sha256(origin.encode()).hexdigest()[:32]}"


def robots_rules(url: str) -> Protego:
    """The robots.txt rules of `url`'s host, kept in Redis for every process for
    WEB_ROBOTS_CACHE_SECONDS (each process parses a text once). No robots.txt (4xx) allows
    everything; a server error or no answer is TransientError (RFC 9309: assume nothing is allowed
    until it answers)."""
    origin = _origin(url)
    key = _robots_key(origin)
    text = redis_client().get(key) if settings.WEB_ROBOTS_CACHE_SECONDS else None
    if text is None:
        text = _robots_fetch(origin).encode()
        if settings.WEB_ROBOTS_CACHE_SECONDS:
            redis_client().set(key, text, ex=settings.WEB_ROBOTS_CACHE_SECONDS)
    digest = hashlib.sha256(text).hexdigest()
    cached = _ROBOTS.get(origin)
    if cached and cached[0] == digest:
        return cached[1]
    rules = Protego.parse(text.decode("utf-8", errors="replace"))
    _ROBOTS[origin] = (digest, rules)
    return rules


def _robots_fetch(origin: str) -> str:
    url = f"{origin}/robots.txt"
    try:
        page = _get_following(url, headers={}, max_bytes=ROBOTS_MAX_BYTES, robots=False,
                              timeout=settings.WEB_TIMEOUT)
    except FetchRefused:
        raise
    except ItemFailed as error:  # too large, a redirect loop: as good as none (RFC 9309 2.3.1.2)
        logger.warning("Ignoring robots.txt of %s: %s", origin, error)
        return ""
    if page.status in RETRY_STATUSES or page.status >= 500:
        raise TransientError(f"robots.txt of {origin} answered {page.status}; nothing is fetched from it "
                             "until it answers.")
    if page.status >= 400:
        return ""
    return (page.content or b"").decode("utf-8", errors="replace")


def robots_forget(url: str) -> None:
    """Drop the cached robots.txt of `url`'s host (an operator who knows it changed)."""
    _ROBOTS.pop(_origin(url), None)
    redis_client().delete(_robots_key(_origin(url)))


# --- per-host limits ----------------------------------------------------------------------------
# One script, so taking a slot and booking the next start are one atomic step in Redis: KEYS[1]
# is the host's slots (a sorted set of tokens scored by when their lease ends, so a crashed
# process's slot frees itself), KEYS[2] when the host's next request may start. Returns -1 when
# every slot is taken, else the milliseconds to wait before starting. Redis's clock, not the
# callers', so processes on several machines agree.
_TURN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
local delay = tonumber(ARGV[4])
local start = math.max(now, tonumber(redis.call('GET', KEYS[2]) or '0'))
if delay > 0 then redis.call('SET', KEYS[2], start + delay, 'PX', start - now + delay + 1000) end
return start - now
"""


@contextmanager
def host_turn(host: str, *, delay: float):
    """Wait for a slot among WEB_HOST_CONCURRENCY for `host` and for `delay` seconds after the
    previous request to it started; TransientError if none frees up within WEB_TIMEOUT."""
    client = redis_client()
    digest = hashlib.sha256(host.encode()).hexdigest()[:32]
    slots = f"{settings.REDIS_KEY_PREFIX}web:host:{digest}:slots"
    token = uuid.uuid4().hex
    lease_ms = int((settings.WEB_TIMEOUT * 2 + settings.WEB_CONNECT_TIMEOUT + 10) * 1000)
    script = client.register_script(_TURN_SCRIPT)
    give_up = time.monotonic() + settings.WEB_TIMEOUT
    pause = 0.02
    while True:
        wait_ms = int(script(keys=[slots, f"{settings.REDIS_KEY_PREFIX}web:host:{digest}:next"],
                             args=[settings.WEB_HOST_CONCURRENCY, lease_ms, token, int(delay * 1000)]))
        if wait_ms >= 0:
            break
        if time.monotonic() > give_up:
            raise TransientError(f"{host} already has {settings.WEB_HOST_CONCURRENCY} requests in flight "
                                 "(WEB_HOST_CONCURRENCY); trying again later.")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
    try:
        if wait_ms:
            time.sleep(wait_ms / 1000)
        yield
    finally:
        client.zrem(slots, token)
