"""POST /api/feedback/: token authentication, access to the passage voted on, errors a person can act on."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from events.models import Event
from feedback.models import Feedback
from ingestion.services import document_ingest
from tests.conftest import client_for
from tests.factories import GroupFactory, SourceFactory, UserFactory
from tests.feedback.conftest import message_citing


@pytest.fixture
def library(db):
    """A public document, and one restricted to the group `finance`."""
    finance = GroupFactory(name="finance")
    restricted = SourceFactory(public=False)
    restricted.groups.add(finance)
    public = document_ingest(source=SourceFactory(), external_id="open.txt", content=b"Open facts.").document
    secret = document_ingest(source=restricted, external_id="budget.txt", content=b"Budget facts.").document
    return {"finance": finance, "public": public, "secret": secret}


def vote(client, **body):
    return client.post("/api/feedback/", body, format="json")


def test_it_records_a_vote_then_changes_it(library):
    user = UserFactory()
    public = library["public"]
    message = message_citing(user, [(f"{public.pk}-0", public.pk)])
    client = client_for(user)

    created = vote(client, message_id=message.pk, rating=-1, chunk_id=f"{public.pk}-0", reason="outdated",
                   comment="The figures are from last year.")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["rating"], body["reason"], body["document_id"], body["chunk_id"]) == (
        -1, "outdated", public.pk, f"{public.pk}-0")
    event = Event.objects.get(type="freshet.feedback.received", subject=f"feedback/{body['feedback_id']}")
    assert event.data["chunk_id"] == f"{public.pk}-0" and event.data["has_comment"] is True

    changed = vote(client, message_id=message.pk, rating=1, chunk_id=f"{public.pk}-0")
    assert changed.status_code == 200 and changed.json()["feedback_id"] == body["feedback_id"]
    assert Feedback.objects.get().rating == 1

    answer = vote(client, message_id=message.pk, rating=1)
    assert answer.status_code == 201 and answer.json()["chunk_id"] == ""


def test_a_second_vote_without_a_comment_keeps_the_stored_one(library):
    user = UserFactory()
    public = library["public"]
    chunk = f"{public.pk}-0"
    message = message_citing(user, [(chunk, public.pk)])
    client = client_for(user)

    for target in ({"chunk_id": chunk}, {}):  # on a citation, then on the whole answer
        first = vote(client, message_id=message.pk, rating=-1, comment="Cites last year's budget.", **target)
        assert first.status_code == 201, first.content
        stored = Feedback.objects.get(pk=first.json()["feedback_id"])

        again = vote(client, message_id=message.pk, rating=-1, reason="outdated", **target)  # a second click
        assert again.status_code == 200 and again.json()["comment"] == "Cites last year's budget."
        nulled = vote(client, message_id=message.pk, rating=-1, comment=None, **target)
        assert nulled.json()["comment"] == "Cites last year's budget."
        stored.refresh_from_db()
        assert (stored.comment, stored.reason) == ("Cites last year's budget.", "")
        event = Event.objects.filter(type="freshet.feedback.received", subject=f"feedback/{stored.pk}").latest("id")
        assert event.data["has_comment"] is True

        changed = vote(client, message_id=message.pk, rating=-1, comment="  Wrong year.  ", **target)
        assert changed.json()["comment"] == "Wrong year."
        cleared = vote(client, message_id=message.pk, rating=1, comment="", **target)
        assert cleared.status_code == 200 and cleared.json()["comment"] == ""
        stored.refresh_from_db()
        assert (stored.rating, stored.comment) == (1, "")


def test_a_socket_vote_without_a_comment_keeps_the_stored_one(transactional_db):
    """The chat socket's vote path passes an absent comment on as absent, as the REST one does."""
    from asgiref.sync import async_to_sync

    from tests.chat.conftest import communicator, session_cookie

    user = UserFactory()
    document = document_ingest(source=SourceFactory(), external_id="open.txt", content=b"Open facts.").document
    chunk = f"{document.pk}-0"
    message = message_citing(user, [(chunk, document.pk)])
    cookie = session_cookie(user)

    async def scenario() -> list[dict]:
        socket = communicator(cookie)
        assert (await socket.connect(timeout=30))[0]
        replies = []
        for payload in ({"rating": -1, "comment": "Not what the report says."}, {"rating": -1},
                        {"rating": -1, "comment": ""}):
            await socket.send_json_to({"type": "feedback", "message_id": message.pk, "chunk_id": chunk, **payload})
            replies.append(await socket.receive_json_from(timeout=10))
        await socket.disconnect()
        return replies

    commented, repeated, cleared = async_to_sync(scenario)()
    assert [r["type"] for r in (commented, repeated, cleared)] == ["feedback_ack"] * 3
    assert repeated["comment"] == "Not what the report says." and cleared["comment"] == ""
    assert Feedback.objects.get(pk=commented["feedback_id"]).comment == ""


def test_a_user_cannot_vote_on_a_passage_they_may_not_see(library):
    secret = library["secret"]
    chunk = f"{secret.pk}-0"
    accountant = UserFactory()
    accountant.groups.add(library["finance"])
    message = message_citing(accountant, [(chunk, secret.pk)])
    client = client_for(accountant)
    assert vote(client, message_id=message.pk, rating=1, chunk_id=chunk).status_code == 201

    # Out of the group, the same passage of the same answer is not there for them any more.
    accountant.groups.remove(library["finance"])
    refused = vote(client, message_id=message.pk, rating=-1, chunk_id=chunk)
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"No passage {chunk} that you can see in answer {message.pk}."
    assert Feedback.objects.get(chunk_id=chunk).rating == 1

    # Nor can anyone name a restricted passage that their answer did not show them.
    outsider = UserFactory()
    own = message_citing(outsider, [(f"{library['public'].pk}-0", library["public"].pk)])
    assert vote(client_for(outsider), message_id=own.pk, rating=-1, chunk_id=chunk).status_code == 404
    # Or vote on someone else's answer.
    foreign = vote(client_for(outsider), message_id=message.pk, rating=-1)
    assert foreign.status_code == 404 and "No answer" in foreign.json()["detail"]
    assert Feedback.objects.count() == 1


def test_bad_votes_get_a_detail_a_person_can_act_on(library):
    user = UserFactory()
    message = message_citing(user, [(f"{library['public'].pk}-0", library["public"].pk)])
    client = client_for(user)

    anonymous = APIClient().post("/api/feedback/", {"message_id": message.pk, "rating": 1}, format="json")
    assert anonymous.status_code == 401 and "Authorization: Token" in anonymous.json()["detail"]

    cases = [
        ({"message_id": message.pk, "rating": 5}, "rating"),
        ({"message_id": message.pk}, "rating: This field is required."),
        ({"rating": 1}, "message_id: This field is required."),
        ({"message_id": message.pk, "rating": 1, "reason": "boring"}, "reason"),
        ({"message_id": message.pk, "rating": -1, "comment": "x" * 2001}, "comment"),
        ({"message_id": "seven", "rating": 1}, "message_id"),
    ]
    for body, expected in cases:
        response = vote(client, **body)
        assert response.status_code == 400, (body, response.content)
        assert expected in response.json()["detail"], response.json()
    not_json = client.post("/api/feedback/", "rating=1", content_type="application/json")
    assert not_json.status_code == 400 and not_json.json()["detail"]
    assert not Feedback.objects.exists()


def test_votes_are_throttled_per_user(library):
    user = UserFactory()
    message = message_citing(user, [(f"{library['public'].pk}-0", library["public"].pk)])
    client = client_for(user)
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "feedback": "2/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        codes = [vote(client, message_id=message.pk, rating=1).status_code for _ in range(3)]
    assert codes == [201, 200, 429]
