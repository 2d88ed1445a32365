"""Reads for conversations and messages. Every read goes through the asker: users see only their
own conversations, an anonymous visitor only those of their browser session."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, Q, QuerySet

from chat.models import Citation, Conversation, Message
from chat.prompting import Turn


@dataclass(frozen=True)
class Asker:
    """Who is asking: a signed-in user, or an anonymous browser session (when allowed)."""

    user: AbstractBaseUser | AnonymousUser
    session_key: str = ""

    @property
    def authenticated(self) -> bool:
        return bool(self.user is not None and self.user.is_authenticated)

    def owner_filter(self, prefix: str = "") -> Q:
        if self.authenticated:
            return Q(**{f"{prefix}user": self.user})
        if not self.session_key:
            return Q(pk__in=[])  # an anonymous socket without a session owns nothing it can reopen
        return Q(**{f"{prefix}user__isnull": True, f"{prefix}session_key": self.session_key})


def conversations_for(asker: Asker) -> QuerySet[Conversation]:
    return Conversation.objects.filter(asker.owner_filter())


def conversation_for(asker: Asker, conversation_id: int) -> Conversation | None:
    return conversations_for(asker).filter(pk=conversation_id).first()


def message_for(asker: Asker, message_id: int) -> Message | None:
    return Message.objects.filter(asker.owner_filter("conversation__")).filter(pk=message_id).first()


def conversation_turns(conversation: Conversation, *, limit: int) -> list[Turn]:
    """The last `limit` answered turns, oldest first."""
    if limit <= 0:
        return []
    rows = (conversation.messages.filter(status=Message.Status.COMPLETE).exclude(answer="")
            .order_by("-created_at", "-id").values_list("question", "answer")[:limit])
    return [Turn(question=q, answer=a) for q, a in reversed(list(rows))]


def thread_messages(conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.prefetch_related(Prefetch("citations", queryset=Citation.objects.order_by("n")))
