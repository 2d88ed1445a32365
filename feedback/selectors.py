"""Reads for feedback: which votes count toward a chunk, the score they make, and the lists the
admin and `manage.py evaluate_cases` show.

Which votes count (for one chunk):
- a vote on the chunk itself (a per-citation vote), or a vote on an answer that cites it;
- one per user: the user's vote on the chunk itself wins over their answer votes, and the latest
  of the same kind wins (a changed vote replaces the old one, it does not add to it);
- at most FEEDBACK_USER_VOTES_PER_HOUR of a user's votes count per clock hour, in the order they
  were cast: the rest are stored but steer nothing;
- an `outdated` vote stops counting once a re-fetch brought new content for its document.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from feedback.models import ChunkFeedback, DocumentFeedback, EvaluationCase, Feedback


@dataclass(frozen=True)
class Vote:
    """One user's vote as it credits one chunk."""

    feedback_id: int
    user_id: int
    chunk_id: str
    document_id: int | None
    rating: int
    reason: str
    on_chunk: bool  # cast on this chunk (True) or on an answer citing it (False)
    at: datetime  # when it was cast or last changed
    hour_rank: int  # how many votes the user cast earlier in the same clock hour
    question: str = ""  # what the user asked in the rated answer


def _hour_rank() -> Coalesce:
    """How many of the same user's votes were created earlier in the same clock hour (ties on
    the timestamp broken by id): one correlated COUNT, computed by the database. The outer query
    must annotate `hour_start` (TruncHour cannot wrap an OuterRef)."""
    earlier = (
        Feedback.objects.filter(user=OuterRef("user"), created_at__gte=OuterRef("hour_start"))
        .filter(Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), pk__lt=OuterRef("pk")))
        .order_by()
        .values("user")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(earlier, output_field=IntegerField()), Value(0))


def votes_touching(chunk_ids: Iterable[str]) -> list[Vote]:
    """Every stored vote that credits one of `chunk_ids`, counted or not."""
    ids = sorted({c for c in chunk_ids if c})
    if not ids:
        return []
    fields = ("pk", "user_id", "rating", "reason", "updated_at", "hour_rank", "message__question")
    ranked = Feedback.objects.annotate(hour_start=TruncHour("created_at"), hour_rank=_hour_rank())
    direct = ranked.filter(chunk_id__in=ids).values_list(*fields, "chunk_id", "document_id")
    via_answer = (ranked.filter(chunk_id="", message__citations__chunk_id__in=ids)
                  .values_list(*fields, "message__citations__chunk_id", "message__citations__document_id"))
    votes = []
    for on_chunk, rows in ((True, direct), (False, via_answer)):
        for pk, user_id, rating, reason, at, rank, question, chunk_id, document_id in rows:
            if chunk_id in ids:
                votes.append(Vote(feedback_id=pk, user_id=user_id, chunk_id=chunk_id, document_id=document_id,
                                  rating=rating, reason=reason, on_chunk=on_chunk, at=at, hour_rank=rank,
                                  question=question or ""))
    return votes


def votes_counted(votes: Iterable[Vote]) -> dict[str, list[Vote]]:
    """The votes that count, by chunk id (rules in the module docstring)."""
    votes = list(votes)
    document_ids = {v.document_id for v in votes if v.reason == Feedback.Reason.OUTDATED and v.document_id}
    refreshed = dict(DocumentFeedback.objects.filter(document_id__in=document_ids, content_refreshed_at__isnull=False)
                     .values_list("document_id", "content_refreshed_at"))
    cap = settings.FEEDBACK_USER_VOTES_PER_HOUR
    best: dict[tuple[str, int], Vote] = {}
    for vote in votes:
        if vote.hour_rank >= cap:
            continue
        if vote.reason == Feedback.Reason.OUTDATED and vote.at < refreshed.get(vote.document_id, vote.at):
            continue
        key = (vote.chunk_id, vote.user_id)
        held = best.get(key)
        if held is None or (vote.on_chunk, vote.at, vote.feedback_id) > (held.on_chunk, held.at, held.feedback_id):
            best[key] = vote
    counted: dict[str, list[Vote]] = {}
    for (chunk_id, _user), vote in best.items():
        counted.setdefault(chunk_id, []).append(vote)
    return counted


def feedback_score(votes: Iterable[Vote], *, now: datetime | None = None, prior: float | None = None,
                   half_life_days: float | None = None, down_weight: float | None = None) -> float:
    """The chunk's feedback score: sum(w * rating) / (sum(w) + prior), where a vote's weight w
    is 0.5 ** (age / half-life), times FEEDBACK_DOWN_WEIGHT for a thumbs-down.

    Always strictly inside (-1, 1); one fresh vote moves it by 1 / (1 + prior) at most, and a vote
    weighs half as much every half-life, so old opinions fade unless people repeat them. A
    thumbs-down may weigh less than a thumbs-up (FEEDBACK_DOWN_WEIGHT < 1): that a passage did
    not answer one person's question says less about it than that it answered one (the
    default, 0.5, was chosen on SciFact's train split: README, "Benchmarks").
    """
    prior = settings.FEEDBACK_PRIOR if prior is None else prior
    total = signed = 0.0
    for vote in votes:
        weight = vote_weight(vote, now=now, half_life_days=half_life_days, down_weight=down_weight)
        total += abs(weight)
        signed += weight
    return signed / (total + prior) if total else 0.0


def vote_weight(vote: Vote, *, now: datetime | None = None, half_life_days: float | None = None,
                down_weight: float | None = None) -> float:
    """What one vote adds to its chunk's score before smoothing: 0.5 ** (age / half-life), times
    FEEDBACK_DOWN_WEIGHT and negative for a thumbs-down."""
    now = now or timezone.now()
    half_life = (settings.FEEDBACK_HALF_LIFE_DAYS if half_life_days is None else half_life_days) * 86400
    down_weight = settings.FEEDBACK_DOWN_WEIGHT if down_weight is None else down_weight
    age = max(0.0, (now - vote.at).total_seconds())
    weight = math.pow(0.5, age / half_life)
    return weight if vote.rating > 0 else -weight * down_weight


def chunk_scores(chunk_ids: Iterable[str]) -> dict[str, float]:
    """The scores the search index should hold for these chunks, as last tallied (0 untallied)."""
    ids = list(chunk_ids)
    held = dict(ChunkFeedback.objects.filter(chunk_id__in=ids).values_list("chunk_id", "score"))
    return {chunk_id: held.get(chunk_id, 0.0) for chunk_id in ids}


def document_tally_counts(document_id: int) -> dict[str, object]:
    """Votes touching a document's chunks (directly or through answers citing them): thumbs up
    and down counted per vote, reasons per distinct user."""
    rows = Feedback.objects.filter(
        Q(document_id=document_id) | Q(chunk_id="", message__citations__document_id=document_id))
    per_user = {
        reason: Count("user", filter=Q(reason=reason), distinct=True)
        for reason in (Feedback.Reason.OUTDATED, Feedback.Reason.WRONG_SOURCE, Feedback.Reason.INCOMPLETE)
    }
    return rows.aggregate(
        up=Count("pk", filter=Q(rating=Feedback.Rating.UP), distinct=True),
        down=Count("pk", filter=Q(rating=Feedback.Rating.DOWN), distinct=True),
        comments=Count("pk", filter=~Q(comment=""), distinct=True),
        last_vote_at=Max("updated_at"),
        **per_user,
    )


def chunks_with_feedback(*, document_id: int | None = None) -> QuerySet[ChunkFeedback]:
    tallies = ChunkFeedback.objects.all()
    if document_id is not None:
        tallies = tallies.filter(document_id=document_id)
    return tallies


def evaluation_cases() -> QuerySet[EvaluationCase]:
    """Every evaluation case whose expected document still exists, oldest first."""
    return EvaluationCase.objects.select_related("document").order_by("created_at", "pk")


def vote_exists(*, user, message_id: int, chunk_id: str | None) -> bool:
    """Whether `user` already voted on this answer (or this passage of it)."""
    if user is None or not user.is_authenticated:
        return False
    return Feedback.objects.filter(user=user, message_id=message_id, chunk_id=(chunk_id or "").strip()).exists()
