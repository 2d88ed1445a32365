"""IDOR (issue 14): every endpoint that takes an id, and every socket message that does, answers
another user's id exactly as it answers an id that does not exist: 404, nothing of the row.

The endpoints are enumerated, not listed: every URL pattern with a path parameter (from the URL
conf) and every request parameter or body field of the OpenAPI schema that names a row. A new
endpoint, or a new kind of id, fails here until it is given a row of someone else's to try.
"""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver

from chat.models import Citation, Conversation, Message
from chat.services import conversation_group
from ingestion.models import Chunk
from ingestion.services import document_ingest
from tests.chat.conftest import communicator, session_cookie
from tests.conftest import client_for
from tests.factories import GroupFactory, SourceFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

MISSING = 987654321
SECRET = "Vault-{run} holds the quarterly numbers."
# Path prefixes not enumerated here, and why.
NOT_ENUMERATED = {
    "admin/": "staff only (a non-staff user is sent to the login page); tests/ingestion/test_admin.py",
}


class Rows:
    """The owner's rows: a source only their group sees, its document and chunk, a conversation
    with an answer citing it, and whatever else a path parameter can name."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:6]
        self.secret = SECRET.format(run=run)
        vault = GroupFactory(name=f"vault-{run}")
        self.owner = UserFactory(username=f"owner-{run}")
        self.owner.groups.add(vault)
        self.intruder = UserFactory(username=f"intruder-{run}")
        self.source = SourceFactory(name=f"vault-{run}", public=False)
        self.source.groups.add(vault)
        self.document = document_ingest(source=self.source, external_id="numbers.txt", filename="numbers.txt",
                                        content=self.secret.encode(), user=self.owner).document
        self.chunk = Chunk.objects.create(id=Chunk.make_id(self.document.pk, 0), document=self.document, ordinal=0,
                                          text=self.secret, token_count=6, embedding_model="m", version=1)
        self.conversation = Conversation.objects.create(user=self.owner, title=self.secret[:40])
        self.message = Message.objects.create(
            conversation=self.conversation, question="What does the vault hold?", answer=self.secret,
            retrieved=[{"chunk_id": self.chunk.id, "document_id": self.document.pk, "score": 1.0, "n": 1}],
        )
        Citation.objects.create(message=self.message, n=1, chunk_id=self.chunk.id, document_id=self.document.pk,
                                title="numbers", text=self.secret)
        # Path parameter name -> the owner's row of that kind.
        self.by_parameter = {
            "source_id": self.source.pk,
            "document_id": self.document.pk,
            "conversation_id": self.conversation.pk,
            "message_id": self.message.pk,
        }
        # Rows only staff may see or change (staff own them all): others get the same answer
        # for them as for a missing id, 403 or 404.
        self.staff = UserFactory(username=f"staff-{run}", is_staff=True)
        from events.models import EventSink

        sink = EventSink.objects.create(name=f"vault-{run}", url="https://hooks.example/freshet", types=["*"],
                                        secret="whsec_" + "A" * 32, enabled=False)
        self.staff_only = {"sink_id": sink.pk}
        self.by_parameter.update(self.staff_only)


@pytest.fixture
def rows() -> Rows:
    return Rows()


def _patterns(resolver: URLResolver, prefix: str = ""):
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def id_taking_routes() -> list[tuple[str, URLPattern]]:
    routes = []
    for route, entry in _patterns(get_resolver()):
        if any(route.startswith(prefix) for prefix in NOT_ENUMERATED):
            continue
        if entry.pattern.converters:
            routes.append((route, entry))
    return routes


def methods_of(entry: URLPattern) -> list[str]:
    view = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
    if view is None:
        return ["get"]  # a function view
    return [m for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)]


def _fill(route: str, entry: URLPattern, values: dict[str, int]) -> str:
    path = route
    for name in entry.pattern.converters:
        start = path.index("<")
        path = path[:start] + str(values[name]) + path[path.index(">", start) + 1:]
    return "/" + path


def _call(client, method: str, path: str):
    if method in ("post", "put", "patch"):
        return getattr(client, method)(path, {}, format="json")
    return getattr(client, method)(path)


def test_the_enumeration_finds_the_known_id_taking_routes():
    found = {route for route, _ in id_taking_routes()}
    assert {"api/sources/<int:source_id>/", "api/documents/<int:document_id>/",
            "api/documents/<int:document_id>/chunks/", "chat/<int:conversation_id>/"} <= found


def test_every_id_taking_route_answers_a_foreign_id_as_a_missing_one(rows):
    intruder, owner, staff = client_for(rows.intruder), client_for(rows.owner), client_for(rows.staff)
    intruder_browser, owner_browser = client_for(None), client_for(None)
    intruder_browser.force_login(rows.intruder)
    owner_browser.force_login(rows.owner)
    checked = []
    for route, entry in id_taking_routes():
        unknown = set(entry.pattern.converters) - set(rows.by_parameter)
        assert not unknown, f"{route}: give Rows a row of the owner's for {sorted(unknown)}"
        foreign = _fill(route, entry, rows.by_parameter)
        missing = _fill(route, entry, dict.fromkeys(entry.pattern.converters, MISSING))
        api = route.startswith("api/")
        as_intruder, as_owner = (intruder, owner) if api else (intruder_browser, owner_browser)
        staff_only = bool(set(entry.pattern.converters) & set(rows.staff_only))
        if staff_only:
            as_owner = staff
        for method in methods_of(entry):
            if method == "get":
                # The row is there for its owner: the 404 below is the access check, not a typo.
                assert _call(as_owner, "get", foreign).status_code == 200, f"{route}: the owner gets their row"
            got, expected = _call(as_intruder, method, foreign), _call(as_intruder, method, missing)
            allowed = (403, 404) if staff_only else (404,)
            assert got.status_code in allowed, f"{method.upper()} {foreign} as another user: {got.status_code}"
            assert expected.status_code == got.status_code, f"{method.upper()} {missing}: {expected.status_code}"
            assert rows.secret not in got.content.decode(errors="replace")
            if api:
                assert set(got.json()) == set(expected.json()), f"{method.upper()} {route}: the bodies differ"
            checked.append(f"{method} {route}")
    assert len(checked) >= 6, checked
    # DELETE and PATCH above were refused: the rows are intact.
    rows.source.refresh_from_db()
    assert rows.source.public is False and Conversation.objects.filter(pk=rows.conversation.pk).exists()
    assert Chunk.objects.filter(document=rows.document).exists()
    from events.models import EventSink

    assert EventSink.objects.filter(pk=rows.staff_only["sink_id"]).exists()


# --- ids inside requests: query parameters and bodies (from the OpenAPI schema) ---------------
# Schema field name -> (the owner's row it names, how to send it).
ID_FIELDS = {
    "source": "source_id",
    "conversation": "conversation_id",
    "message_id": "message_id",
    "document": "document_id",
    "sources": "source_id",  # a list of sources to ask within
}
NOT_AN_ID = {
    "chunk_id",  # a passage of the voter's own answer: test_a_vote_on_a_foreign_passage_of_ones_own_answer_is_404
    "external_id",  # a name within the source the request names (and that source is checked)
}


def schema_id_fields() -> list[tuple[str, str, str, str]]:
    """(method, path, where, field) for every query parameter or body field that names a row."""
    client = client_for(None)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema.get("components", {}).get("schemas", {})
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    found.append((method, path, "query", parameter["name"]))
            for media in operation.get("requestBody", {}).get("content", {}).values():
                ref = media.get("schema", {}).get("$ref", "")
                body = components.get(ref.rsplit("/", 1)[-1], media.get("schema", {}))
                found.extend((method, path, "body", name) for name in body.get("properties", {}))
    return sorted(set(found))


# Endpoints a user's identity does not open (the intake authenticates a push source by its own
# secret): they must answer a foreign id and a missing one alike.
NOT_USER_AUTHENTICATED = {"/api/events/"}


def _send(client, method: str, path: str, where: str, name: str, value, base: dict):
    if where == "query":
        return getattr(client, method)(path, {**({"q": base["q"]} if "search" in path else {}), name: value})
    if path.startswith("/api/documents/"):
        upload = SimpleUploadedFile("numbers.txt", b"An intruder's replacement.")
        key = "files" if "bulk" in path else "file"
        return client.post(path, {name: value, key: upload}, format="multipart")
    return getattr(client, method)(path, {**base, name: value}, format="json")


def _looks_like_an_id(name: str) -> bool:
    return name in ID_FIELDS or name.endswith("_id") or name.endswith("_ids") or name == "id"


def test_every_request_field_that_names_a_row_answers_a_foreign_one_as_missing(rows):
    intruder = client_for(rows.intruder)
    fields = [f for f in schema_id_fields() if _looks_like_an_id(f[3]) and f[3] not in NOT_AN_ID]
    unknown = sorted({f"{m.upper()} {p} {name}" for m, p, _, name in fields if name not in ID_FIELDS})
    assert not unknown, f"Add these id fields to ID_FIELDS with a row of the owner's: {unknown}"
    checked = []
    for method, path, where, name in fields:
        if "{" in path:
            continue  # path parameters: the test above
        foreign = rows.by_parameter[ID_FIELDS[name]]
        value = [foreign] if name == "sources" else foreign
        base = {"q": "vault numbers", "question": "What does the vault hold?", "rating": 1}
        response = _send(intruder, method, path, where, name, value, base)
        if path in NOT_USER_AUTHENTICATED:
            missing = _send(intruder, method, path, where, name, MISSING, base)
            assert response.status_code == missing.status_code and response.status_code >= 400, \
                f"{method.upper()} {path}: {response.status_code} (foreign id), {missing.status_code} (missing id)"
        else:
            assert response.status_code == 404, f"{method.upper()} {path} with {where} {name}={value}: " \
                                                f"{response.status_code} {response.content[:300]}"
        assert rows.secret not in response.content.decode(errors="replace")
        checked.append(f"{method} {path} {name}")
    assert {"get /api/documents/ source", "post /api/chat/ conversation", "post /api/feedback/ message_id"} <= \
        set(checked), checked
    rows.document.refresh_from_db()
    assert rows.document.version == 1, "a refused upload replaced the owner's document"


def test_a_vote_on_a_foreign_passage_of_ones_own_answer_is_404(rows):
    """chunk_id names a passage of the voter's own answer; one that the answer did not retrieve
    (another user's) is missing, not forbidden."""
    conversation = Conversation.objects.create(user=rows.intruder)
    own = Message.objects.create(conversation=conversation, question="q", answer="a", retrieved=[])
    response = client_for(rows.intruder).post("/api/feedback/", {"message_id": own.pk, "rating": 1,
                                                                 "chunk_id": rows.chunk.id}, format="json")
    assert response.status_code == 404, response.content


# --- socket messages ------------------------------------------------------------------------------
def test_socket_messages_with_a_foreign_id_are_404(rows):
    cookie, owner_cookie = session_cookie(rows.intruder), session_cookie(rows.owner)
    group = conversation_group(rows.conversation.pk)

    async def scenario():
        # ?conversation= a foreign id: accepted, but not subscribed to its notices.
        spy = communicator(cookie, path=f"/ws/chat/?conversation={rows.conversation.pk}")
        watcher = communicator(owner_cookie, path=f"/ws/chat/?conversation={rows.conversation.pk}")
        assert (await spy.connect())[0] and (await watcher.connect())[0]
        await spy.send_to(text_data=json.dumps({"type": "question", "text": "What does the vault hold?",
                                                "conversation": rows.conversation.pk}))
        question = await spy.receive_json_from(timeout=30)
        await spy.send_to(text_data=json.dumps({"type": "feedback", "message_id": rows.message.pk, "rating": 1}))
        vote = await spy.receive_json_from(timeout=30)
        await get_channel_layer().group_send(group, {"type": "chat.stale", "message_id": rows.message.pk,
                                                     "conversation": rows.conversation.pk,
                                                     "document_id": rows.document.pk})
        seen_by_owner = await watcher.receive_json_from(timeout=10)
        leaked = await spy.receive_nothing(timeout=1)
        await spy.disconnect()
        await watcher.disconnect()
        return question, vote, seen_by_owner, leaked

    question, vote, seen_by_owner, nothing_leaked = async_to_sync(scenario)()
    assert question["type"] == "error" and question["status"] == 404, question
    assert vote["type"] == "error" and vote["status"] == 404, vote
    assert rows.secret not in json.dumps([question, vote])
    assert seen_by_owner["type"] == "stale", "the notice was sent (so the spy's silence means something)"
    assert nothing_leaked, "a socket subscribed to another user's conversation by its id"
