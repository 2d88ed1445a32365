from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Source(models.Model):
    class Kind(models.TextChoices):
        UPLOAD = "upload", "Upload"
        URL = "url", "Web page"
        SITEMAP = "sitemap", "Sitemap"
        FEED = "feed", "RSS/Atom feed"
        FOLDER = "folder", "Folder"
        PUSH = "push", "Pushed CloudEvents"
        QUEUE = "queue", "Broker queue (CloudEvents)"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.UPLOAD)
    config = models.JSONField(default=dict, blank=True, help_text="Connector settings (url, path, ...).")
    schedule_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Re-sync every N minutes (url, feed, folder); empty for never."
    )
    prune = models.BooleanField(
        default=True, help_text="A sync deletes the documents whose items are gone from the source."
    )
    public = models.BooleanField(default=True, help_text="Visible to every signed-in user.")
    groups = models.ManyToManyField(
        Group, blank=True, related_name="sources", help_text="Groups that may see a restricted source."
    )
    editor_groups = models.ManyToManyField(
        Group, blank=True, related_name="sources_edited",
        help_text="Groups whose members may replace or delete any document of the source, not only their own "
                  "(they must also be able to see it).",
    )
    chunk_size = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per chunk; empty for the default."
    )
    chunk_overlap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens shared by neighbouring chunks; empty for the default."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def chunking(self) -> tuple[int, int]:
        size = self.chunk_size or settings.CHUNK_SIZE_TOKENS
        overlap = self.chunk_overlap if self.chunk_overlap is not None else settings.CHUNK_OVERLAP_TOKENS
        return size, min(overlap, size // 2)

    def group_names(self) -> list[str]:
        return sorted(group.name for group in self.groups.all())

    def editor_group_names(self) -> list[str]:
        return sorted(group.name for group in self.editor_groups.all())


def document_upload_to(instance: Document, filename: str) -> str:
    # The client's filename is never used as a path: content is stored under a generated name.
    return f"documents/{uuid.uuid4().hex}"


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="documents")
    # Null: ingested by the system (a connector, the CLI without --as, a re-fetch), or by a user
    # since deleted; only staff and the source's editors may change such a document.
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="documents_uploaded", help_text="Who uploaded it; empty for the system.",
    )
    external_id = models.CharField(max_length=1024, help_text="The document's id in its source.")
    uri = models.CharField(max_length=2048, blank=True)
    title = models.CharField(max_length=500, blank=True)
    file = models.FileField(upload_to=document_upload_to, max_length=255, blank=True)
    filename = models.CharField(max_length=255, blank=True, help_text="The name it was uploaded with.")
    media_type = models.CharField(max_length=100, blank=True, help_text="Detected from the content.")
    content_hash = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    text = models.TextField(blank=True, help_text="Extracted text, kept so chunks can be rebuilt.")
    chunk_count = models.PositiveIntegerField(default=0)
    indexed_fingerprint = models.CharField(max_length=64, blank=True)
    # With external_id, the manifest a connector's sync diffs its listing against: the item's
    # change marker when it was last fetched (ETag, Last-Modified, a sitemap lastmod, mtime and size).
    marker = models.CharField(max_length=512, blank=True, help_text="The source's change marker when last fetched.")
    metadata = models.JSONField(
        default=dict, blank=True, help_text="What the source says about the document (headers, event attributes)."
    )
    # Empty: the source's chunking profile. Set for one document that needs other chunks (the
    # feedback consumer sets larger ones when users keep finding its passages incomplete).
    chunk_size = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per chunk for this document only; empty for its source's profile."
    )
    chunk_overlap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens shared by neighbouring chunks for this document only."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], name="document_unique_external_id")
        ]

    def __str__(self) -> str:
        return self.title or self.external_id

    @property
    def chunking(self) -> tuple[int, int]:
        """(tokens per chunk, overlap): the document's own profile if it has one, else its source's."""
        if not self.chunk_size:
            return self.source.chunking
        overlap = self.chunk_overlap if self.chunk_overlap is not None else self.source.chunking[1]
        return self.chunk_size, min(overlap, self.chunk_size // 2)

    def fingerprint(self) -> str:
        """What the index copy must match: content, title, uri and the chunking."""
        size, overlap = self.chunking
        raw = f"{self.content_hash}\n{self.title}\n{self.uri}\n{size}:{overlap}"
        return hashlib.sha256(raw.encode()).hexdigest()


class Chunk(models.Model):
    id = models.CharField(primary_key=True, max_length=64, help_text="Deterministic: document id + ordinal.")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField()
    embedding_model = models.CharField(max_length=200)
    version = models.PositiveIntegerField()

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_unique_ordinal")
        ]

    def __str__(self) -> str:
        return self.id

    @staticmethod
    def make_id(document_id: int, ordinal: int) -> str:
        return f"{document_id}-{ordinal}"


class SyncRun(models.Model):
    """One sync of a connector source: what it saw, what it changed, how it ended."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Some items failed"
        FAILED = "failed", "Failed"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=32, default="manual", help_text="manual, schedule, watch, api, ...")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    items_seen = models.PositiveIntegerField(default=0)
    items_new = models.PositiveIntegerField(default=0)
    items_changed = models.PositiveIntegerField(default=0)
    items_unchanged = models.PositiveIntegerField(default=0)
    items_deleted = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the sync failed, or the first item failures.")
    # Moves on with every chunk of items done: a running sync whose heartbeat is older than
    # SYNC_STALE_SECONDS lost its worker, and the next request for the source fails it and starts anew.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["source", "-started_at"], name="syncrun_source_started")]
        constraints = [
            # One sync per source at a time, guaranteed by the database: a second running row
            # for the same source cannot be inserted (ingestion/connectors/sync.py claims with it).
            models.UniqueConstraint(fields=["source"], condition=models.Q(status="running"),
                                    name="syncrun_one_running_per_source"),
        ]

    def __str__(self) -> str:
        return f"{self.source} sync #{self.pk} ({self.status})"


class SyncItem(models.Model):
    """An item a running sync still has to fetch (new, or its marker changed). Fetch tasks claim
    them in bounded chunks, so a big source never has more than SYNC_ITEMS_IN_FLIGHT in flight;
    a row is deleted once its item is done."""

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="items")
    external_id = models.CharField(max_length=1024)
    marker = models.CharField(max_length=512, blank=True)
    uri = models.CharField(max_length=2048, blank=True)
    title = models.CharField(max_length=500, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "claimed_at"], name="syncitem_run_claimed")]

    def __str__(self) -> str:
        return self.external_id
