"""Writes for feedback: store the vote, publish `freshet.feedback.received`. What follows from a
vote (tallies, reindexing) belongs to that event's subscribers."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from chat.models import Message
from config.exceptions import ApplicationError
from events.services import event_publish
from feedback.models import Feedback
from ingestion.selectors import documents_visible_to

MAX_COMMENT_CHARS = 2000


class FeedbackError(ApplicationError):
    """A vote that cannot be recorded; the message says why in words a person can act on."""


class FeedbackForbidden(FeedbackError):
    status = 403


class FeedbackNotFound(FeedbackError):
    """The answer is not the user's, or the chunk is not one of its passages the user may see.
    Both read the same, so a vote cannot probe what exists."""

    status = 404


def feedback_record(*, user: AbstractBaseUser | AnonymousUser, message_id: int, rating: int,
                    chunk_id: str | None = None, reason: str = "", comment: str | None = None) -> Feedback:
    """Store `user`'s vote on answer `message_id` (or on its passage `chunk_id`); a second vote
    on the same target replaces the first's rating and reason. The comment is replaced only by
    one given (an empty string clears it): a vote with `comment` None keeps the stored comment,
    so a second click on the thumb does not erase what the voter wrote. Publishes
    `freshet.feedback.received` after commit."""
    if user is None or not user.is_authenticated:
        raise FeedbackForbidden("Sign in to rate answers.")
    if isinstance(rating, bool) or rating not in (Feedback.Rating.UP, Feedback.Rating.DOWN):
        raise FeedbackError("rating must be 1 (thumbs up) or -1 (thumbs down).")
    reason = reason or ""
    if reason not in Feedback.Reason.values and reason != "":
        raise FeedbackError(f"reason must be one of {', '.join(Feedback.Reason.values)}, or left out.")
    comment = None if comment is None else comment.strip()
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise FeedbackError(f"The comment is {len(comment)} characters; the limit is {MAX_COMMENT_CHARS}.")
    chunk_id = (chunk_id or "").strip()

    message = Message.objects.filter(pk=message_id, conversation__user=user).first()
    if message is None:
        raise FeedbackNotFound(f"No answer {message_id} in your conversations.")
    document_id = None
    if chunk_id:
        entry = next((r for r in message.retrieved if r.get("chunk_id") == chunk_id), None)
        if entry is not None and documents_visible_to(user).filter(pk=entry["document_id"]).exists():
            document_id = int(entry["document_id"])
        else:
            raise FeedbackNotFound(f"No passage {chunk_id} that you can see in answer {message_id}.")

    with transaction.atomic():
        previous = (Feedback.objects.select_for_update()
                    .filter(user=user, message=message, chunk_id=chunk_id).values_list("rating", flat=True).first())
        changes = {"rating": int(rating), "reason": reason, "document_id": document_id}
        if comment is not None:
            changes["comment"] = comment
        feedback, created = Feedback.objects.update_or_create(
            user=user, message=message, chunk_id=chunk_id, defaults=changes,
        )
        event_publish(
            type="freshet.feedback.received",
            subject=f"feedback/{feedback.pk}",
            data={
                "feedback_id": feedback.pk, "user_id": user.pk, "message_id": message.pk,
                "conversation_id": message.conversation_id, "chunk_id": chunk_id, "document_id": document_id,
                "rating": feedback.rating, "reason": reason, "has_comment": bool(feedback.comment),
                "created": created, "previous_rating": previous,
                "cited_chunk_ids": list(message.citations.values_list("chunk_id", flat=True)),
            },
        )
    return feedback


def evaluation_case_from_feedback(*, feedback: Feedback, document, created_by=None):
    """Turn a vote (a thumbs-down with a comment, as a rule) into an evaluation case: its question,
    and the document the reviewer says is right. One case per vote; making it again updates it."""
    from feedback.models import EvaluationCase  # appended below the chat's imports, kept local

    case, _ = EvaluationCase.objects.update_or_create(
        feedback=feedback,
        defaults={"query": feedback.message.question, "document": document, "note": feedback.comment,
                  "created_by": created_by},
    )
    return case
