"""The chat socket under daphne, DEBUG off, as deployed (issue 14): a page of another site may not
open it with the visitor's cookie (Origin checked), nobody unauthenticated may open it, and an
oversized frame is refused without the server holding it: over CHAT_MAX_MESSAGE_BYTES the
consumer answers 413 and stays usable; over daphne's frame limit (1 MiB) the connection closes."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.chat.conftest import session_cookie
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cookie():
    return session_cookie(UserFactory(username="socket-user"))


def ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws/chat/"


def open_socket(url: str, *, origin: str | None, cookie: str | None):
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    return connect(ws(url), origin=origin, additional_headers=headers, open_timeout=20, max_size=2**22)


def refused(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refusal:
        open_socket(url, **kwargs).close()
    return refusal.value.response.status_code


def test_a_signed_in_user_on_the_sites_own_origin_gets_in(daphne_url, cookie):
    with open_socket(daphne_url, origin=daphne_url, cookie=cookie) as socket:
        socket.send(json.dumps({"type": "ping"}))
        reply = json.loads(socket.recv(timeout=20))
    assert reply["type"] == "error" and reply["status"] == 400  # in, and answering


@pytest.mark.parametrize("origin", [
    "http://evil.example",
    "https://127.0.0.1.evil.example",
    "http://localhost.evil.example:8000",
    "null",  # a sandboxed iframe or a file:// page
])
def test_a_foreign_origin_is_refused_even_with_a_valid_session(daphne_url, cookie, origin):
    assert refused(daphne_url, origin=origin, cookie=cookie) == 403


@pytest.mark.parametrize("session", [None, "not-a-session-key"])
def test_nobody_unauthenticated_gets_in(daphne_url, session):
    assert refused(daphne_url, origin=daphne_url, cookie=session) == 403


def test_a_message_over_the_limit_is_refused_and_the_socket_still_works(daphne_url, cookie, settings):
    too_big = json.dumps({"type": "question", "text": "x" * (settings.CHAT_MAX_MESSAGE_BYTES + 1)})
    with open_socket(daphne_url, origin=daphne_url, cookie=cookie) as socket:
        socket.send(too_big)
        reply = json.loads(socket.recv(timeout=20))
        socket.send(json.dumps({"type": "question", "text": ""}))
        after = json.loads(socket.recv(timeout=20))
    assert reply["type"] == "error" and reply["status"] == 413, reply
    assert after["type"] == "error" and after["status"] == 400, after  # still answering


def test_a_frame_over_the_servers_limit_closes_the_connection(daphne_url, cookie):
    with open_socket(daphne_url, origin=daphne_url, cookie=cookie) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            # The server may drop the connection while the frame is still being sent (the send
            # then fails with a reset) or right after it (the receive fails): either way, closed.
            socket.send("x" * (2 * 1024 * 1024))
            socket.recv(timeout=20)
    # Autobahn drops the connection (sometimes with close code 1009, message too big) instead of
    # handing the frame on: no reply came, and the server serves the next socket as before.
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009, closed.value
    with open_socket(daphne_url, origin=daphne_url, cookie=cookie) as socket:
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv(timeout=20))["status"] == 400
