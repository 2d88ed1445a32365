"""The web process's ASGI handler (config/asgi_handler.py): requests run on kept threads (so a
thread, and its database connection, serves request after request), and a request that finds
every kept thread busy is served on a thread of its own instead of waiting."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.core.signals import request_started

from config.asgi_handler import PooledThreadsASGIHandler


def scope(path: str = "/api/no-such-page/") -> dict:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "scheme": "http", "http_version": "1.1", "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 5000), "headers": [(b"host", b"127.0.0.1")]}


async def request(handler: PooledThreadsASGIHandler) -> int:
    sent: list[dict] = []
    done = asyncio.Event()

    async def receive():
        if done.is_set():
            await asyncio.Future()  # connected until the response is out
        done.set()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await handler(scope(), receive, send)
    return next(m for m in sent if m["type"] == "http.response.start")["status"]


@pytest.fixture
def request_threads():
    """The name of the thread each request's synchronous code started on, in order."""
    names: list[str] = []

    def started(**kwargs):
        names.append(threading.current_thread().name)

    request_started.connect(started, dispatch_uid="test-asgi-handler")
    yield names
    request_started.disconnect(dispatch_uid="test-asgi-handler")


def test_requests_one_after_another_are_served_by_the_same_kept_thread(request_threads):
    handler = PooledThreadsASGIHandler(threads=4)

    async def twenty():
        return [await request(handler) for _ in range(20)]

    assert asyncio.run(twenty()) == [404] * 20
    assert len(request_threads) == 20
    assert len(set(request_threads)) == 1 and request_threads[0].startswith("web-"), request_threads


def test_a_request_that_finds_every_kept_thread_busy_is_served_on_a_thread_of_its_own(request_threads):
    handler = PooledThreadsASGIHandler(threads=1)
    second_started = threading.Event()
    first_blocked = threading.Event()

    def hold_the_first(**kwargs):
        # The first request keeps the only kept thread until the second request has started:
        # if the second waited for that thread, the first would give up after 20 s.
        if not first_blocked.is_set():
            first_blocked.set()
            assert second_started.wait(timeout=20)
        else:
            second_started.set()

    request_started.connect(hold_the_first, dispatch_uid="test-asgi-hold")
    try:
        async def both():
            return await asyncio.gather(request(handler), request(handler))

        assert asyncio.run(both()) == [404, 404]
    finally:
        request_started.disconnect(dispatch_uid="test-asgi-hold")
    assert second_started.is_set()
    assert len(set(request_threads)) == 2 and any(name.startswith("web-") for name in request_threads)
