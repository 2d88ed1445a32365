from __future__ import annotations

from django.conf import settings
from django.db import models


class Feedback(models.Model):
    """A user's vote on an answer, or on one of its citations. One vote per user per answer and
    chunk; voting again changes it. What follows from a vote (tallies, reindexing) belongs to the
    subscribers of `freshet.feedback.received`."""

    class Rating(models.IntegerChoices):
        UP = 1, "Thumbs up"
        DOWN = -1, "Thumbs down"

    class Reason(models.TextChoices):
        OUTDATED = "outdated", "Outdated"
        WRONG_SOURCE = "wrong_source", "Wrong source"
        INCOMPLETE = "incomplete", "Incomplete"
        OTHER = "other", "Other"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feedback")
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="feedback")
    # Empty, not null, for a vote on the whole answer: the unique constraint then holds on
    # every database (NULLs are distinct in SQL, so two "whole answer" votes would slip by).
    chunk_id = models.CharField(max_length=64, blank=True, default="")
    document_id = models.BigIntegerField(null=True, blank=True, db_index=True,
                                         help_text="The cited chunk's document, kept if the chunk goes.")
    rating = models.SmallIntegerField(choices=Rating.choices)
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(fields=["user", "message", "chunk_id"], name="feedback_one_vote_per_target"),
            models.CheckConstraint(condition=models.Q(rating__in=[1, -1]), name="feedback_rating_up_or_down"),
        ]

    def __str__(self) -> str:
        target = f"chunk {self.chunk_id}" if self.chunk_id else "answer"
        return f"{self.get_rating_display()} on {target} of message {self.message_id}"


# --- What the feedback consumer keeps (feedback/handlers.py) ----------------------------------
# Tallies are derived from Feedback rows and recomputed for the chunks and documents a vote
# touches, so handling an event twice, or a changed vote, never counts anything twice. Ids are
# plain numbers, not foreign keys: a tally outlives the chunk or document it is about.


class ChunkFeedback(models.Model):
    """The counted votes on one chunk and the score the search index should hold for it."""

    chunk_id = models.CharField(max_length=64, unique=True)
    document_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    up = models.PositiveIntegerField(default=0, help_text="Counted thumbs up (one per user).")
    down = models.PositiveIntegerField(default=0, help_text="Counted thumbs down (one per user).")
    score = models.FloatField(default=0.0, help_text="Smoothed and decayed, in (-1, 1): what retrieval boosts by.")
    indexed_score = models.FloatField(null=True, blank=True, help_text="The score last written to the index.")
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at", "chunk_id"]
        verbose_name = "chunk tally"
        verbose_name_plural = "chunk tallies"

    def __str__(self) -> str:
        return f"chunk {self.chunk_id}: +{self.up} -{self.down} ({self.score:+.2f})"


class DocumentFeedback(models.Model):
    """The votes touching one document's chunks, by rating and reason, and what the consumer did
    about them (re-fetch for `outdated`, a re-chunk request for repeated `incomplete`)."""

    class Refetch(models.TextChoices):
        NONE = "", "—"
        REQUESTED = "requested", "Requested"
        CHANGED = "changed", "Changed: reprocessing"
        UNCHANGED = "unchanged", "Unchanged"
        NOT_REFETCHABLE = "not_refetchable", "Cannot be re-fetched"
        FAILED = "failed", "Failed"

    document_id = models.BigIntegerField(unique=True)
    source_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    title = models.CharField(max_length=500, blank=True)
    up = models.PositiveIntegerField(default=0, help_text="Thumbs up on its chunks or on answers citing it.")
    down = models.PositiveIntegerField(default=0)
    outdated = models.PositiveIntegerField(default=0, help_text="Users who said it is outdated.")
    wrong_source = models.PositiveIntegerField(default=0, help_text="Users who said it is the wrong source.")
    incomplete = models.PositiveIntegerField(default=0, help_text="Users who said its passages are incomplete.")
    comments = models.PositiveIntegerField(default=0)
    last_vote_at = models.DateTimeField(null=True, blank=True)
    refetch_status = models.CharField(max_length=16, choices=Refetch.choices, blank=True, default="")
    refetch_detail = models.TextField(blank=True)
    refetch_requested_at = models.DateTimeField(null=True, blank=True)
    refetched_at = models.DateTimeField(null=True, blank=True)
    content_refreshed_at = models.DateTimeField(
        null=True, blank=True, help_text="A re-fetch found new content; `outdated` votes before this stop counting.")
    rechunk_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When repeated `incomplete` votes asked for larger chunks.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_vote_at", "-id"]
        verbose_name = "document tally"
        verbose_name_plural = "document tallies"

    def __str__(self) -> str:
        return self.title or f"document {self.document_id}"


class EvaluationCase(models.Model):
    """A question and the document a reviewer says answers it, usually made from a thumbs-down
    with a comment; `manage.py evaluate_cases` checks retrieval against every case."""

    query = models.TextField()
    document = models.ForeignKey("ingestion.Document", on_delete=models.CASCADE, related_name="evaluation_cases",
                                 help_text="The document that should come first for the query.")
    feedback = models.ForeignKey(Feedback, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="evaluation_cases")
    note = models.TextField(blank=True, help_text="The user's comment, or the reviewer's.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["feedback"], name="evaluation_case_one_per_feedback"),
        ]

    def __str__(self) -> str:
        return self.query[:80]
