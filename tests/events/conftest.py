"""Fixtures of the intake and sink tests: push sources, a real local HTTP receiver, and the
machine's RabbitMQ with names of the test's own."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from dataclasses import dataclass, field

import pytest
from kombu import Connection

from ingestion.connectors import config_clean
from tests.factories import SourceFactory

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def push_source_new(*, name: str = "", events_as_documents: bool = False):
    config = config_clean("push", {"events_as_documents": events_as_documents})
    return SourceFactory(name=name or f"push-{uuid.uuid4().hex[:6]}", kind="push", config=config)


@pytest.fixture
def push_source(db):
    return push_source_new()


@pytest.fixture
def stream_source(db):
    """A push source that makes every other event type a document."""
    return push_source_new(events_as_documents=True)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: records every request; answers from `answers` in turn
    ((status, headers) pairs), then 204."""

    url: str
    requests: list[Received] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver():
    state: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the stdlib's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            sink: Receiver = state["receiver"]
            sink.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers = sink.answers.pop(0) if sink.answers else (204, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            sink.arrived.set()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()


@pytest.fixture
def amqp():
    """A kombu connection to the machine's RabbitMQ and a prefix for the test's own queue and
    exchange names; what the test declared under it is deleted afterwards."""
    prefix = f"freshet-test-{uuid.uuid4().hex[:8]}"
    connection = Connection(AMQP_URL)
    connection.ensure_connection(max_retries=3)
    declared: list[tuple[str, str]] = []
    connection.declared = declared  # (kind, name) to delete at the end
    connection.prefix = prefix
    yield connection
    channel = connection.channel()
    for kind, name in declared:
        try:
            if kind == "queue":
                channel.queue_delete(name)
            else:
                channel.exchange_delete(name)
        except Exception:  # already gone
            channel = connection.channel()
    connection.release()
