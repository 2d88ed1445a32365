from django.db import models


class Event(models.Model):
    """One CloudEvent 1.0, as published: the audit trail of every change in Freshet."""

    id = models.CharField(primary_key=True, max_length=64)
    source = models.CharField(max_length=255)
    type = models.CharField(max_length=128, db_index=True)
    subject = models.CharField(max_length=255, blank=True, db_index=True)
    time = models.DateTimeField(db_index=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["time", "id"]
        indexes = [models.Index(fields=["subject", "time"])]

    def __str__(self) -> str:
        return f"{self.type} {self.subject}"


class ReceivedEvent(models.Model):
    """One CloudEvent pushed to a push or queue source, recorded before anything is done with it:
    the unique (source, event source, event id) makes a second delivery a no-op, and the rows of
    a source are applied in the order they came (events/intake/apply.py)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed"

    class Action(models.TextChoices):
        UPSERT = "upsert", "Create or replace a document"
        DELETE = "delete", "Delete a document"

    source = models.ForeignKey("ingestion.Source", on_delete=models.CASCADE, related_name="received_events")
    ce_source = models.CharField("event source", max_length=512)
    ce_id = models.CharField("event id", max_length=256)
    type = models.CharField(max_length=128)
    via = models.CharField(max_length=8, help_text="http or queue")
    attributes = models.JSONField(default=dict, help_text="The event's context attributes, extensions included.")
    action = models.CharField(max_length=8, choices=Action.choices)
    external_id = models.CharField(max_length=1024)
    title = models.CharField(max_length=500, blank=True)
    uri = models.CharField(max_length=2048, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    content = models.BinaryField(blank=True, default=b"")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "ce_source", "ce_id"], name="received_event_unique_id"),
        ]
        indexes = [models.Index(fields=["source", "status", "id"], name="received_event_pending")]

    def __str__(self) -> str:
        return f"{self.type} {self.ce_source}#{self.ce_id}"


class EventSink(models.Model):
    """Where chosen events of the log go out as CloudEvents: an HTTP endpoint (Standard Webhooks
    signed) or an AMQP exchange."""

    class Kind(models.TextChoices):
        HTTP = "http", "HTTP endpoint"
        QUEUE = "queue", "AMQP exchange"

    class Mode(models.TextChoices):
        STRUCTURED = "structured", "Structured (application/cloudevents+json)"
        BINARY = "binary", "Binary (attributes in headers)"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.HTTP)
    url = models.CharField(max_length=2048, help_text="https://... for http; amqp://user:pass@host/vhost for queue.")
    types = models.JSONField(default=list, help_text='Event types to send ["freshet.document.indexed"]; "*" for all.')
    secret = models.CharField(max_length=200, help_text="Standard Webhooks key (whsec_...), signs every HTTP delivery.")
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.STRUCTURED)
    exchange = models.CharField(max_length=255, blank=True, help_text="queue: the topic exchange to publish to.")
    routing_key = models.CharField(max_length=255, blank=True, help_text="queue: empty for the event's type.")
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def wants(self, event_type: str) -> bool:
        return "*" in self.types or event_type in self.types


class Delivery(models.Model):
    """One attempt to deliver one event to one sink: what happened and how long it took."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SUCCEEDED = "succeeded", "Delivered"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed for good"

    sink = models.ForeignKey(EventSink, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING, db_index=True)
    status_code = models.PositiveIntegerField(null=True, blank=True, help_text="The receiver's HTTP status.")
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When the next attempt is due.")
    retry_queued = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["sink", "event", "attempt"], name="delivery_unique_attempt"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.sink} #{self.attempt} ({self.status})"
