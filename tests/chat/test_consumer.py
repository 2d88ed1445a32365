"""The chat socket through the real ASGI stack (config.asgi.application: origin check, session
auth, URL router), the real channel layer (Redis), a real Celery worker and the LanceDB index."""

from __future__ import annotations

import json
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import override_settings

from chat.models import Citation, Conversation, Message
from events.models import Event
from feedback.models import Feedback
from ingestion.models import Chunk
from ingestion.services import document_delete, document_ingest
from tests.chat.conftest import communicator, receive_answer, session_cookie, settled
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


async def receive_until(socket, wanted, *, timeout: float = 120) -> dict:
    """The first message `wanted` accepts (others, such as a notice about another answer, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await socket.receive_json_from(timeout=max(deadline - time.monotonic(), 0.1))
        if wanted(message):
            return message


def run(scenario):
    """Run an async scenario from a sync test (the consumer's thread-pool work runs meanwhile)."""
    return async_to_sync(scenario)()


def test_it_refuses_anonymous_sockets(transactional_db):
    async def scenario():
        socket = communicator(None)
        connected, code = await socket.connect(timeout=30)
        assert not connected
        assert code == 4401
    run(scenario)


def test_it_refuses_a_foreign_origin_and_accepts_its_own(transactional_db):
    cookie = session_cookie(UserFactory())

    async def scenario():
        for origin in ("http://evil.example", "http://localhost.evil.example", None):
            socket = communicator(cookie, origin=origin)
            connected, _ = await socket.connect(timeout=30)
            assert not connected, origin
        socket = communicator(cookie, origin="http://localhost")
        connected, _ = await socket.connect(timeout=30)
        assert connected
        await socket.disconnect()
    with override_settings(DEBUG=False):
        run(scenario)


def test_a_question_streams_tokens_then_an_answer_citing_indexed_chunks(corpus):
    user = corpus.member
    cookie = session_cookie(user)

    async def scenario():
        socket = communicator(cookie)
        assert (await socket.connect(timeout=30))[0]
        await socket.send_json_to({"type": "question", "conversation": None,
                                   "text": f"How long is the Aurora glacier {corpus.marker}?"})
        tokens, answer = await receive_answer(socket)
        await socket.send_json_to({"type": "question", "conversation": answer["conversation"],
                                   "text": f"When did Mount Kettle {corpus.marker} last erupt?"})
        _, second = await receive_answer(socket)
        await socket.disconnect()
        return tokens, answer, second
    tokens, answer, second = run(scenario)

    assert answer["type"] == "answer", answer
    assert len(tokens) > 3
    assert "".join(tokens).strip() == answer["text"]
    assert "forty-two kilometres" in answer["text"]
    glacier = corpus.public[0]
    assert answer["citations"], answer
    cited = {c["chunk_id"]: c for c in answer["citations"]}
    assert {c["document_id"] for c in answer["citations"]} <= {d.pk for d in corpus.public}
    assert glacier.pk in {c["document_id"] for c in answer["citations"]}
    for chunk in Chunk.objects.filter(pk__in=cited):
        assert cited[chunk.pk]["text"] == chunk.text
        assert cited[chunk.pk]["uri"] == chunk.document.uri
    assert Chunk.objects.filter(pk__in=cited).count() == len(cited)
    for citation in answer["citations"]:
        assert f"[{citation['n']}]" in answer["text"]

    message = Message.objects.get(pk=answer["message_id"])
    assert message.conversation.user == user and message.conversation_id == answer["conversation"]
    assert message.mode == Message.Mode.EXTRACTIVE and message.status == Message.Status.COMPLETE
    assert message.retrieved and all({"chunk_id", "document_id", "score"} <= set(r) for r in message.retrieved)
    assert 0 < message.first_token_ms <= message.total_ms
    assert set(Citation.objects.filter(message=message).values_list("chunk_id", flat=True)) == set(cited)

    assert second["conversation"] == answer["conversation"]
    assert "2011" in second["text"]
    assert Conversation.objects.get(pk=answer["conversation"]).messages.count() == 2


def test_restricted_chunks_are_cited_only_for_members_of_the_group(corpus):
    question = f"What is the Zephyrine {corpus.marker} project budget?"

    async def ask(cookie):
        socket = communicator(cookie)
        assert (await socket.connect(timeout=30))[0]
        await socket.send_json_to({"type": "question", "text": question, "conversation": None})
        _, answer = await receive_answer(socket)
        await socket.disconnect()
        return answer

    outsider = async_to_sync(ask)(session_cookie(corpus.member))
    assert outsider["type"] == "answer"
    assert corpus.secret.pk not in {c["document_id"] for c in outsider["citations"]}
    assert "nine million" not in outsider["text"]
    message = Message.objects.get(pk=outsider["message_id"])
    assert corpus.secret.pk not in {r["document_id"] for r in message.retrieved}

    insider = async_to_sync(ask)(session_cookie(corpus.accountant))
    assert corpus.secret.pk in {c["document_id"] for c in insider["citations"]}
    assert "nine million crowns" in insider["text"]


def test_anonymous_chat_when_allowed_sees_public_sources_only(corpus):
    async def scenario():
        socket = communicator(None)
        assert (await socket.connect(timeout=30))[0]
        await socket.send_json_to({"type": "question", "conversation": None,
                                   "text": f"Zephyrine {corpus.marker} budget, and emperor penguins {corpus.marker}?"})
        _, answer = await receive_answer(socket)
        # Anonymous visitors may ask but not vote.
        await socket.send_json_to({"type": "feedback", "message_id": answer["message_id"], "rating": 1})
        refused = await socket.receive_json_from(timeout=10)
        await socket.disconnect()
        return answer, refused
    with override_settings(CHAT_ALLOW_ANONYMOUS=True):
        answer, refused = run(scenario)
    assert answer["type"] == "answer" and answer["citations"]
    assert {c["document_id"] for c in answer["citations"]} <= {d.pk for d in corpus.public}
    assert Conversation.objects.get(pk=answer["conversation"]).user is None
    assert refused["type"] == "error" and refused["status"] == 403


def test_feedback_is_stored_acknowledged_published_and_changeable(corpus):
    user = corpus.member
    cookie, other_cookie = session_cookie(user), session_cookie(corpus.accountant)

    async def scenario():
        socket = communicator(cookie)
        assert (await socket.connect(timeout=30))[0]
        await socket.send_json_to({"type": "question", "conversation": None,
                                   "text": f"How do emperor penguins {corpus.marker} survive the winter?"})
        _, answer = await receive_answer(socket)
        replies = []
        chunk_id = answer["citations"][0]["chunk_id"]
        for payload in (
            {"message_id": answer["message_id"], "rating": -1},
            {"message_id": answer["message_id"], "rating": 1, "reason": "other", "comment": "On reflection, fine"},
            {"message_id": answer["message_id"], "rating": -1, "chunk_id": chunk_id, "reason": "outdated"},
            {"message_id": answer["message_id"], "rating": 1, "chunk_id": f"{corpus.secret.pk}-0"},
            {"message_id": answer["message_id"], "rating": 5},
            {"message_id": answer["message_id"], "rating": 1, "reason": "boring"},
        ):
            await socket.send_json_to({"type": "feedback", **payload})
            replies.append(await socket.receive_json_from(timeout=10))
        await socket.disconnect()

        # Someone else's socket cannot vote on this answer.
        intruder = communicator(other_cookie)
        assert (await intruder.connect(timeout=30))[0]
        await intruder.send_json_to({"type": "feedback", "message_id": answer["message_id"], "rating": -1})
        replies.append(await intruder.receive_json_from(timeout=10))
        await intruder.disconnect()
        return answer, chunk_id, replies
    answer, chunk_id, replies = run(scenario)
    down, up, per_chunk, foreign_chunk, bad_rating, bad_reason, intruder = replies

    assert down["type"] == "feedback_ack" and up["type"] == "feedback_ack"
    assert up["feedback_id"] == down["feedback_id"]  # one vote per user per answer, changed
    vote = Feedback.objects.get(pk=down["feedback_id"])
    assert (vote.user, vote.message_id, vote.rating, vote.chunk_id) == (user, answer["message_id"], 1, "")
    assert vote.comment == "On reflection, fine"

    assert per_chunk["type"] == "feedback_ack" and per_chunk["feedback_id"] != down["feedback_id"]
    chunk_vote = Feedback.objects.get(pk=per_chunk["feedback_id"])
    assert (chunk_vote.chunk_id, chunk_vote.rating, chunk_vote.reason) == (chunk_id, -1, "outdated")
    assert chunk_vote.document_id == answer["citations"][0]["document_id"]

    assert foreign_chunk == {**foreign_chunk, "type": "error", "status": 404}
    assert bad_rating["type"] == "error" and "rating" in bad_rating["detail"]
    assert bad_reason["type"] == "error" and "reason" in bad_reason["detail"]
    assert intruder["type"] == "error" and intruder["status"] == 404
    assert Feedback.objects.filter(message_id=answer["message_id"]).count() == 2

    events = Event.objects.filter(type="freshet.feedback.received").order_by("time")
    assert [e.data["rating"] for e in events] == [-1, 1, -1]
    assert events.last().data["chunk_id"] == chunk_id
    assert events.first().data["message_id"] == answer["message_id"]


def test_malformed_and_oversized_messages_get_errors_and_the_socket_stays_usable(transactional_db):
    user = UserFactory()
    cookie = session_cookie(user)
    someone_else = Conversation.objects.create(user=UserFactory(), title="not yours")

    async def scenario():
        socket = communicator(cookie)
        assert (await socket.connect(timeout=30))[0]
        replies = []
        for frame in (
            {"bytes_data": b"\x00\x01binary"},
            {"text_data": "{not json"},
            {"text_data": "[1, 2, 3]"},
            {"text_data": json.dumps({"type": "dance"})},
            {"text_data": json.dumps({"type": "question", "text": "x" * 20_000})},
            {"text_data": json.dumps({"type": "question", "text": "y" * 2001})},
            {"text_data": json.dumps({"type": "question", "text": "   "})},
            {"text_data": json.dumps({"type": "question", "text": "hi", "conversation": "abc"})},
            {"text_data": json.dumps({"type": "question", "text": "hi", "conversation": someone_else.pk})},
            {"text_data": json.dumps({"type": "feedback", "message_id": "first"})},
        ):
            await socket.send_to(**frame)
            replies.append(await socket.receive_json_from(timeout=30))
        await socket.send_json_to({"type": "question", "text": "Is anyone there?", "conversation": None})
        tokens, answer = await receive_answer(socket)
        await socket.disconnect()
        return replies, tokens, answer
    replies, tokens, answer = run(scenario)

    assert [r["type"] for r in replies] == ["error"] * len(replies)
    binary, not_json, not_object, unknown, oversized, too_long, empty, bad_id, foreign, bad_feedback = replies
    assert "text frames" in binary["detail"]
    assert "not valid JSON" in not_json["detail"]
    assert "JSON object" in not_object["detail"]
    assert "dance" in unknown["detail"]
    assert oversized["status"] == 413 and "limit is 16384" in oversized["detail"]
    assert "2001 characters" in too_long["detail"] and "2000" in too_long["detail"]
    assert "empty" in empty["detail"] or "blank" in empty["detail"]
    assert bad_id["detail"].startswith("conversation:")
    assert foreign["status"] == 404
    assert "message_id" in bad_feedback["detail"] and "rating" in bad_feedback["detail"]
    # Still usable: an answer (no document matches, so it says so, citing nothing).
    assert answer["type"] == "answer" and tokens
    assert answer["citations"] == []
    assert Message.objects.filter(conversation__user=user).count() == 1


def test_open_conversations_hear_when_a_cited_document_changes_or_goes(corpus):
    cookie = session_cookie(corpus.member)
    glacier, volcano = corpus.public[0], corpus.public[1]
    volcano_id, glacier_source = volcano.pk, glacier.source

    async def ask(socket, text, conversation=None):
        await socket.send_json_to({"type": "question", "text": text, "conversation": conversation})
        return (await receive_answer(socket))[1]

    async def scenario():
        socket = communicator(cookie)
        assert (await socket.connect(timeout=30))[0]
        first = await ask(socket, f"How thick is the Aurora glacier {corpus.marker} ice?")
        second = await ask(socket, f"What kind of lava does Mount Kettle {corpus.marker} have?", first["conversation"])
        # A second tab showing the same conversation (it subscribes through the URL).
        watcher = communicator(cookie, path=f"/ws/chat/?conversation={first['conversation']}")
        assert (await watcher.connect(timeout=30))[0]

        await sync_to_async(document_ingest)(source=glacier_source, external_id=glacier.external_id,
                                             content=b"The Aurora glacier has melted away entirely.")
        about_first = lambda m: m.get("message_id") == first["message_id"]  # noqa: E731
        changed = [await receive_until(socket, about_first), await receive_until(watcher, about_first)]
        await sync_to_async(settled)(glacier)
        await sync_to_async(document_delete)(document=volcano)
        gone = await receive_until(socket, lambda m: m.get("document_id") == volcano_id)
        await socket.disconnect()
        await watcher.disconnect()
        return first, second, changed, gone
    first, second, changed, gone = run(scenario)

    assert glacier.pk in {c["document_id"] for c in first["citations"]}
    assert volcano_id in {c["document_id"] for c in second["citations"]}
    for notice in changed:
        assert notice == {"type": "stale", "message_id": first["message_id"], "conversation": first["conversation"],
                          "document_id": glacier.pk}
    assert gone == {"type": "stale", "message_id": second["message_id"], "conversation": first["conversation"],
                    "document_id": volcano_id}
    assert Message.objects.get(pk=first["message_id"]).stale and Message.objects.get(pk=second["message_id"]).stale
