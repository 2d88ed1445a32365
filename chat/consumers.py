"""The chat socket (`ws/chat/`). Protocol, JSON text frames:

client -> server
    {"type": "question", "text": "...", "conversation": ID or null, "sources": [ID, ...] (optional)}
    {"type": "feedback", "message_id": ID, "rating": 1 | -1, "chunk_id": optional,
     "reason": optional "outdated" | "wrong_source" | "incomplete" | "other", "comment": optional}
server -> client
    {"type": "token", "text": "..."}  (repeated), then
    {"type": "answer", "message_id": ID, "conversation": ID, "text": "...", "citations": [...], ...}
    {"type": "feedback_ack", "feedback_id": ID, ...}
    {"type": "stale", "message_id": ID, "conversation": ID, "document_id": ID}
    {"type": "error", "detail": "...", "status": 400 | 403 | 404 | 413 | 429 | 500 | 502,
     "about": "question" | "feedback" | "message"}

`?conversation=ID` in the socket URL subscribes to stale notices for that conversation (the page
passes the one it shows); every conversation asked in on the socket is subscribed too.

Thin on purpose: it authenticates on connect, parses and checks messages, and runs the blocking
services (retrieval, generation, the database) in threads so the event loop stays free while
pieces of the answer are streamed as they come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import close_old_connections
from rest_framework import serializers

from chat.apis.chat import AnswerOutputSerializer, QuestionInputSerializer
from chat.generation import GenerationError
from chat.selectors import Asker, conversation_for
from chat.services import answer_pieces, answer_plan, answer_save, conversation_group
from config.exceptions import ApplicationError, error_message
from feedback.models import Feedback
from feedback.services import feedback_record

logger = logging.getLogger(__name__)


def in_thread(function):
    """Run blocking work (the ORM, the embedding model, the search index) in the default thread
    pool, closing the thread's database connection when it is done.

    The clean-up runs inside the call on purpose: channels' database_sync_to_async cleans up
    outside the copied context, where (asgiref 3.13) it no longer sees the connection the call
    opened; seen here, every pool thread kept a connection open."""
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()
    return sync_to_async(run, thread_sensitive=False)


class FeedbackMessageSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(min_value=1)
    rating = serializers.ChoiceField(choices=[1, -1])
    chunk_id = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=64)
    reason = serializers.ChoiceField(choices=Feedback.Reason.values, required=False, allow_blank=True,
                                     allow_null=True)
    comment = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=2000,
                                    trim_whitespace=True)


_publisher_warmed = False


def publisher_warm() -> None:
    """Open the Celery producer pool's broker connection ahead of the first vote. Measured: the
    first event a web process publishes pays for kombu importing its transport and the pool
    connecting (0.7-1.5 s here), and that was the vote acknowledged over a fresh socket; every
    later one took what `POST /api/feedback/` takes. Warmed when a socket connects instead, off
    the vote's path. Best effort: a broker that is down is reported by the vote itself."""
    from config.celery_app import app

    try:
        with app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001 - a warm-up must never break a connect
        logger.debug("Could not warm the event publisher: %s", error)


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        global _publisher_warmed
        if not _publisher_warmed:
            _publisher_warmed = True
            asyncio.get_running_loop().run_in_executor(None, publisher_warm)
        user = self.scope.get("user")
        authenticated = bool(user is not None and user.is_authenticated)
        self.groups_joined: set[str] = set()
        self.answering: asyncio.Task | None = None
        if not authenticated and not settings.CHAT_ALLOW_ANONYMOUS:
            await self.close(code=4401)  # before accept: the handshake is refused (HTTP 403)
            return
        session = self.scope.get("session")
        if not authenticated and session is not None and not session.session_key:
            # An anonymous socket without a session cookie still owns what it asks in, for its lifetime.
            await in_thread(session.save)()
        self.asker = Asker(user=user, session_key=(session.session_key if session is not None else "") or "")
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        wanted = (query.get("conversation") or [""])[0]
        if wanted.isdigit():
            conversation = await in_thread(conversation_for)(self.asker, int(wanted))
            if conversation is not None:
                await self.join(conversation.pk)

    async def disconnect(self, code: int) -> None:
        if self.answering is not None and not self.answering.done():
            self.answering.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def join(self, conversation_id: int) -> None:
        group = conversation_group(conversation_id)
        if group not in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))

    async def send_error(self, detail: str, *, status: int = 400, about: str = "message", **extra) -> None:
        await self.send_json({"type": "error", "detail": detail, "status": status, "about": about, **extra})

    # --- client messages --------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.send_error("Send JSON messages as text frames, not binary ones.")
            return
        size = len(text_data.encode("utf-8"))
        if size > settings.CHAT_MAX_MESSAGE_BYTES:
            await self.send_error(
                f"The message is {size} bytes; the limit is {settings.CHAT_MAX_MESSAGE_BYTES}. Send less.",
                status=413,
            )
            return
        try:
            payload = json.loads(text_data)
        except ValueError:
            await self.send_error('The message is not valid JSON; send an object like {"type": "question", ...}.')
            return
        if not isinstance(payload, dict):
            await self.send_error('Send a JSON object with a "type" ("question" or "feedback").')
            return
        kind = payload.get("type")
        if kind == "question":
            await self.on_question(payload)
        elif kind == "feedback":
            await self.on_feedback(payload)
        else:
            await self.send_error(f"Unknown message type {kind!r}; send \"question\" or \"feedback\".")

    async def on_question(self, payload: dict) -> None:
        serializer = QuestionInputSerializer(data={"question": payload.get("text"),
                                                   "conversation": payload.get("conversation"),
                                                   "sources": payload.get("sources")})
        if not serializer.is_valid():
            # The socket calls the question `text`: name the field as the client sent it.
            errors = {("text" if name == "question" else name): messages
                      for name, messages in serializer.errors.items()}
            await self.send_error(error_message(errors), about="question")
            return
        if self.answering is not None and not self.answering.done():
            await self.send_error("Wait for the current answer to finish before asking again.", status=429,
                                  about="question")
            return
        self.answering = asyncio.create_task(
            self.answer(serializer.validated_data["question"], serializer.validated_data.get("conversation"),
                        serializer.validated_data.get("sources"))
        )

    async def answer(self, question: str, conversation_id: int | None, sources: list[int] | None = None) -> None:
        started = time.perf_counter()
        try:
            plan = await in_thread(answer_plan)(asker=self.asker, question=question,
                                                conversation_id=conversation_id, started=started, sources=sources)
        except ApplicationError as error:
            await self.send_error(error.message, status=error.status, about="question")
            return
        except Exception:
            logger.exception("Answering failed before generation")
            await self.send_error("Searching your documents failed; try again in a moment.", status=500,
                                  about="question")
            return

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            # Runs in a worker thread: each piece is handed to the event loop as soon as it exists.
            try:
                for piece in answer_pieces(plan):
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                    if stop.is_set():
                        return
                loop.call_soon_threadsafe(queue.put_nowait, ("end", ""))
            except GenerationError as error:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", error.message))
            except Exception:
                logger.exception("Generation failed")
                loop.call_soon_threadsafe(queue.put_nowait, ("error", "Generating the answer failed."))

        producer = loop.run_in_executor(None, produce)
        pieces: list[str] = []
        error = ""
        try:
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    pieces.append(value)
                    await self.send_json({"type": "token", "text": value})
                else:
                    error = value if kind == "error" else ""
                    break
            await producer
        finally:
            stop.set()  # the socket went away (task cancelled): stop generating

        try:
            message = await in_thread(answer_save)(plan, text="".join(pieces), error=error)
        except ApplicationError as failure:
            await self.send_error(failure.message, status=failure.status, about="question")
            return
        except Exception:
            logger.exception("Saving the answer failed")
            await self.send_error("The answer could not be saved; ask again.", status=500, about="question")
            return
        await self.join(message.conversation_id)
        if error:
            await self.send_error(error, status=502, about="question", message_id=message.pk,
                                  conversation=message.conversation_id)
            return
        output = await in_thread(lambda: AnswerOutputSerializer(message).data)()
        await self.send_json({"type": "answer", **output})

    async def on_feedback(self, payload: dict) -> None:
        serializer = FeedbackMessageSerializer(data={k: v for k, v in payload.items() if k != "type"})
        if not serializer.is_valid():
            await self.send_error(error_message(serializer.errors), about="feedback")
            return
        data = serializer.validated_data
        try:
            feedback = await in_thread(feedback_record)(
                user=self.scope.get("user"), message_id=data["message_id"], rating=int(data["rating"]),
                chunk_id=data.get("chunk_id") or "", reason=data.get("reason") or "",
                comment=data.get("comment"),
            )
        except ApplicationError as error:
            await self.send_error(error.message, status=error.status, about="feedback")
            return
        await self.send_json({"type": "feedback_ack", "feedback_id": feedback.pk, "message_id": feedback.message_id,
                              "chunk_id": feedback.chunk_id or None, "rating": feedback.rating,
                              "reason": feedback.reason, "comment": feedback.comment})

    # --- channel-layer events ---------------------------------------------------------------
    async def chat_stale(self, event: dict) -> None:
        await self.send_json({"type": "stale", "message_id": event["message_id"],
                              "conversation": event["conversation"], "document_id": event["document_id"]})
