"""POST /api/chat/ with token authentication: the same answers as the socket, in one response."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from tests.conftest import client_for
from tests.factories import UserFactory


def test_it_needs_authentication(db):
    response = APIClient().post("/api/chat/", {"question": "Hello?"}, format="json")
    assert response.status_code == 401
    assert "Authorization: Token" in response.json()["detail"]


@pytest.mark.worker
def test_it_answers_with_citations_and_continues_a_conversation(corpus):
    client = client_for(corpus.member)
    response = client.post("/api/chat/", {"question": f"How long is the Aurora glacier {corpus.marker}?"},
                           format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert "forty-two kilometres" in body["text"] and body["mode"] == "extractive"
    assert body["citations"] and corpus.public[0].pk in {c["document_id"] for c in body["citations"]}
    assert set(body["citations"][0]) == {"n", "chunk_id", "document_id", "title", "uri", "text", "page", "url"}
    assert body["abstained"] is False and body["related"] == [] and body["sources"] == []
    assert body["total_ms"] >= body["first_token_ms"] > 0

    follow_up = client.post("/api/chat/", {"question": f"And the Zephyrine {corpus.marker} budget?",
                                           "conversation": body["conversation"]}, format="json").json()
    assert follow_up["conversation"] == body["conversation"]
    assert corpus.secret.pk not in {c["document_id"] for c in follow_up["citations"]}
    assert Message.objects.filter(conversation_id=body["conversation"]).count() == 2


def test_bad_questions_get_a_detail_a_person_can_act_on(db):
    user = UserFactory()
    client = client_for(user)
    other = Conversation.objects.create(user=UserFactory(), title="someone else's")

    missing = client.post("/api/chat/", {}, format="json")
    assert missing.status_code == 400 and "question" in missing.json()["detail"]

    too_long = client.post("/api/chat/", {"question": "z" * 2001}, format="json")
    assert too_long.status_code == 400
    assert too_long.json()["detail"] == (
        "The question is 2001 characters long; the limit is 2000. Shorten it."
    )

    foreign = client.post("/api/chat/", {"question": "Hello?", "conversation": other.pk}, format="json")
    assert foreign.status_code == 404 and "No conversation" in foreign.json()["detail"]
    assert not Message.objects.exists()


def test_questions_are_throttled_per_user(db):
    client = client_for(UserFactory())
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "chat": "2/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        codes = [client.post("/api/chat/", {"question": "z" * 2001}, format="json").status_code for _ in range(3)]
    assert codes == [400, 400, 429]


# --- The /chat/ page (server side; the browser test drives it for real) ------------------------
def test_the_page_needs_a_login_unless_anonymous_chat_is_allowed(db, client):
    response = client.get("/chat/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/chat/"
    with override_settings(CHAT_ALLOW_ANONYMOUS=True):
        page = client.get("/chat/")
    assert page.status_code == 200 and b'id="composer"' in page.content
    assert client.session.session_key  # anonymous conversations belong to this session


def test_users_see_only_their_own_conversations(db, client):
    owner, other = UserFactory(), UserFactory()
    mine = Conversation.objects.create(user=owner, title="Glaciers of the north")
    Message.objects.create(conversation=mine, question="How long is the Aurora glacier?", answer="Long. [1]")
    theirs = Conversation.objects.create(user=other, title="Someone else's secrets")

    client.force_login(owner)
    listing = client.get("/chat/").content.decode()
    assert "Glaciers of the north" in listing and "Someone else" not in listing
    thread = client.get(f"/chat/{mine.pk}/")
    assert thread.status_code == 200
    assert thread.context["thread"][0]["question"] == "How long is the Aurora glacier?"
    assert client.get(f"/chat/{theirs.pk}/").status_code == 404
