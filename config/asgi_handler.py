"""Django's ASGI handler with the synchronous part of each request run on one of a fixed set of
long-lived threads.

Django's own handler gives every request a fresh thread-sensitive context, that is a new
single-thread executor: a thread is started for the request, another to join it after, and since
database connections belong to a thread, a new database connection is opened for every request
and `CONN_MAX_AGE` never keeps one. On the CloudEvents intake that was two thirds of a request's
CPU (py-spy: thread starts and joins, SQLite connection set-up), and every API request paid it.

Django's handler also runs its middleware in async mode: each of the synchronous middleware's
hooks, the views and the CSRF check became a hop between the event loop and the request's thread
(a dozen a request). Freshet's views are all synchronous, so here the whole chain (middleware and
view) runs in synchronous mode, in one hop to the request's thread, and `request_started` (whose
receivers are synchronous: `close_old_connections`) is sent in that same hop rather than in one
of its own (a hop is ~0.1 ms of CPU); closing the response after it is sent is the second.

Here each request borrows one of `WEB_THREADS` executors (asgiref's ThreadSensitiveContext with a
caller-owned executor: entered per request, never shut down), so threads and their database
connections live on, and Django's `close_old_connections` at the start and end of each request
still closes a connection that is too old or broken. A request that finds all `WEB_THREADS` busy
(long answers streaming, say) gets a thread of its own for its length, as under Django's handler,
so no request waits behind another. Websockets are not handled here (Channels' consumers run on
their own).
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix


class PooledThreadsASGIHandler(ASGIHandler):
    def __init__(self, threads: int) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # one synchronous chain, called in one hop
        self._free: deque[ThreadPoolExecutor] = deque(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"web-{number}") for number in range(threads)
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        try:
            executor = self._free.pop()
        except IndexError:
            # Every kept thread is busy: a thread of the request's own, as Django does.
            async with ThreadSensitiveContext():
                await self.handle(scope, receive, send)
            return
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._free.append(executor)

    async def handle(self, scope, receive, send) -> None:
        """Django's ASGIHandler.handle (a disconnect while the view runs drops the response, the
        response is closed after it is sent) with `request_started`, the request's creation and
        the synchronous chain in one call on the request's thread (the thread-sensitive executor
        __call__ chose)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))

        def respond() -> HttpResponseBase:
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                return error_response
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the ASGI server chunks it
            return response

        async def process_request() -> HttpResponseBase:
            response = await sync_to_async(respond, thread_sensitive=True)()
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected while the response went out
            return response

        # As Django: the listener goes first, so its end (a disconnect) cancels the request task.
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(process_request())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            await sync_to_async(response.close)()
        body_file.close()


def asgi_application() -> PooledThreadsASGIHandler:
    """What `django.core.asgi.get_asgi_application()` returns, with `WEB_THREADS` pooled request
    threads."""
    django.setup(set_prefix=False)
    from django.conf import settings

    return PooledThreadsASGIHandler(settings.WEB_THREADS)
