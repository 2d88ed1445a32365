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
