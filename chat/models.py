from __future__ import annotations

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    """A thread of questions and answers. Owned by a user, or (when anonymous chat is allowed)
    by the browser session that started it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    session_key = models.CharField(max_length=64, blank=True, db_index=True,
                                   help_text="The anonymous session that owns it (user empty).")
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    """One question and its answer, with what it took to make it: the retrieved chunks, the
    prompt sent, the model and the latency figures."""

    class Mode(models.TextChoices):
        GENERATIVE = "generative", "Language model"
        EXTRACTIVE = "extractive", "Extractive"

    class Status(models.TextChoices):
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    question = models.TextField()
    answer = models.TextField(blank=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.EXTRACTIVE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True, help_text="Why the language model failed, when it did.")
    retrieved = models.JSONField(
        default=list, blank=True,
        help_text="The chunks retrieval returned, best first: chunk_id, document_id, score, n (passage number).",
    )
    prompt = models.JSONField(default=list, blank=True, help_text="The chat messages sent to the model.")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    invalid_citations = models.JSONField(
        default=list, blank=True, help_text="Citation numbers the model wrote that match no passage given."
    )
    citations_inferred = models.BooleanField(
        default=False, help_text="The model cited nothing; its sentences were matched to passages afterwards.",
    )
    retrieval_ms = models.FloatField(null=True, blank=True)
    first_token_ms = models.FloatField(null=True, blank=True, help_text="From the question to the first token.")
    total_ms = models.FloatField(null=True, blank=True, help_text="From the question to the full answer.")
    stale = models.BooleanField(default=False, help_text="A cited document changed or was deleted since.")
    abstained = models.BooleanField(
        default=False, help_text="No passage answered the question: the answer says so and cites nothing.")
    related = models.JSONField(
        default=list, blank=True, help_text="When abstaining: the nearest passages, shown as possibly related.")
    sources = models.JSONField(default=list, blank=True, help_text="Asked within these source ids (empty: all).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.question[:80]


class Citation(models.Model):
    """A passage an answer cites, as it was when the answer was made. `document_id` is a plain
    number, not a foreign key: the citation outlives the document, and a deleted document (or a
    chunk whose text changed) is exactly what makes the answer stale."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="citations")
    n = models.PositiveSmallIntegerField(help_text="The number the answer cites it by: [n].")
    chunk_id = models.CharField(max_length=64)
    document_id = models.BigIntegerField(db_index=True)
    title = models.CharField(max_length=500, blank=True)
    uri = models.CharField(max_length=2048, blank=True)
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True, help_text="The PDF page the passage starts on.")
    url = models.CharField(max_length=2048, blank=True,
                           help_text="Where the citation opens: the web page, or the document page.")

    class Meta:
        ordering = ["message_id", "n"]
        constraints = [models.UniqueConstraint(fields=["message", "n"], name="citation_unique_number")]

    def __str__(self) -> str:
        return f"[{self.n}] {self.chunk_id}"

    def as_dict(self) -> dict:
        return {"n": self.n, "chunk_id": self.chunk_id, "document_id": self.document_id,
                "title": self.title, "uri": self.uri, "text": self.text, "page": self.page, "url": self.url}
