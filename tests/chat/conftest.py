"""Chat fixtures: a tiny corpus indexed through the real pipeline (real worker), personas, and
websocket communicators on the real ASGI application with a signed-in session cookie."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from ingestion.models import Document
from ingestion.services import document_ingest
from tests.conftest import wait_for
from tests.factories import GroupFactory, SourceFactory, UserFactory

ORIGIN = "http://localhost"


def session_cookie(user) -> str:
    """A real session for `user`, as the login view would make (committed: the consumer reads it
    from other threads)."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def communicator(cookie: str | None = None, *, origin: str | None = ORIGIN,
                 path: str = "/ws/chat/") -> WebsocketCommunicator:
    """A socket on the real ASGI application; `cookie` is a session key from session_cookie()
    (made before the event loop starts: the ORM is sync-only)."""
    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_answer(socket: WebsocketCommunicator, *, timeout: float = 60) -> tuple[list[str], dict]:
    """Collect token messages until the answer (or an error) arrives."""
    tokens: list[str] = []
    while True:
        message = await socket.receive_json_from(timeout=timeout)
        if message["type"] == "token":
            tokens.append(message["text"])
        elif message["type"] in ("answer", "error"):
            return tokens, message
        else:
            raise AssertionError(f"Unexpected message while answering: {message}")


def settled(document: Document) -> Document:
    def done():
        document.refresh_from_db()
        return document.status in (Document.Status.INDEXED, Document.Status.FAILED) and document
    wait_for(done, timeout=120, message=f"document {document.pk} to be indexed")
    assert document.status == Document.Status.INDEXED, document.error
    return document


@dataclass
class Corpus:
    marker: str
    public: list[Document]
    secret: Document
    member: object  # signed in, in no group: public sources only
    accountant: object  # in the `finance` group: also the restricted source


GLACIER = ("The Aurora glacier{m} is forty-two kilometres long and flows north into the fjord. "
           "Its ice is about three hundred metres thick at the centre. "
           "Surveyors measured its retreat every summer since 1990.")
VOLCANO = ("Mount Kettle{m} is an active volcano that last erupted in 2011. "
           "Its lava is basaltic and flows quickly down the eastern slope. "
           "The observatory on its rim records earthquakes day and night.")
PENGUIN = ("Emperor penguins{m} huddle together to survive the winter wind. "
           "The males keep the egg warm on their feet for about two months. "
           "Colonies of the penguins gather on the sea ice near the coast.")
SECRET = ("The Zephyrine{m} project budget for the third quarter is nine million crowns. "
          "Only the finance group may read the Zephyrine{m} budget figures.")


@pytest.fixture
def corpus(worker) -> Corpus:
    """Three public documents and one restricted to the `finance` group, indexed for real. Each
    test gets its own marker word, so chunks left in the index by earlier tests never match."""
    marker = uuid.uuid4().hex[:6]
    public_source = SourceFactory(name=f"handbook-{marker}", public=True)
    finance = GroupFactory(name="finance")
    restricted = SourceFactory(name=f"finance-{marker}", public=False)
    restricted.groups.add(finance)
    documents = []
    for name, text in (("glacier", GLACIER), ("volcano", VOLCANO), ("penguin", PENGUIN)):
        result = document_ingest(source=public_source, external_id=f"{name}.txt", filename=f"{name}.txt",
                                 title=f"{name.title()} notes", uri=f"https://docs.example/{name}",
                                 content=text.format(m=" " + marker).encode())
        documents.append(result.document)
    secret = document_ingest(source=restricted, external_id="budget.txt", filename="budget.txt",
                             title="Budget", uri="https://finance.example/budget",
                             content=SECRET.format(m=" " + marker).encode()).document
    documents = [settled(d) for d in documents]
    secret = settled(secret)
    member = UserFactory(username=f"member-{marker}")
    accountant = UserFactory(username=f"accountant-{marker}")
    accountant.groups.add(finance)
    return Corpus(marker=marker, public=documents, secret=secret, member=member, accountant=accountant)
