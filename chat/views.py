"""The chat page: the conversation list, the thread and the input box. The page renders once; the
socket (chat/consumers.py) streams answers into it."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chat.apis.chat import AnswerOutputSerializer
from chat.selectors import Asker, conversation_for, conversations_for, thread_messages
from feedback.models import Feedback
from ingestion.selectors import sources_visible_to


def chat_page(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    if not request.user.is_authenticated:
        if not settings.CHAT_ALLOW_ANONYMOUS:
            return redirect_to_login(request.get_full_path())
        if not request.session.session_key:
            request.session.save()  # anonymous conversations belong to this session
    asker = Asker(user=request.user, session_key=request.session.session_key or "")
    conversation = None
    if conversation_id is not None:
        conversation = conversation_for(asker, conversation_id)
        if conversation is None:
            raise Http404("No such conversation among yours.")
    thread = []
    if conversation is not None:
        messages = list(thread_messages(conversation))
        votes: dict[tuple[int, str], int] = {}
        if request.user.is_authenticated:
            rows = Feedback.objects.filter(user=request.user, message__in=messages)
            votes = {(m, c): r for m, c, r in rows.values_list("message_id", "chunk_id", "rating")}
        for message in messages:
            data = dict(AnswerOutputSerializer(message).data)
            data["failed"] = message.status != message.Status.COMPLETE
            data["votes"] = {chunk or "answer": rating for (m, chunk), rating in votes.items() if m == message.pk}
            thread.append(data)
    return render(request, "chat/chat.html", {
        "conversations": conversations_for(asker)[:100],
        # The sources the user may ask within (the picker); none ticked asks all of them.
        "sources": sources_visible_to(request.user).order_by("name").only("pk", "name")[:200],
        "conversation": conversation,
        "thread": thread,
        "chat_config": {
            "conversation": conversation.pk if conversation else None,
            "maxQuestionChars": settings.CHAT_MAX_QUESTION_CHARS,
            "canVote": request.user.is_authenticated,
            "mode": "generative" if settings.LLM_BASE_URL else "extractive",
        },
    })
