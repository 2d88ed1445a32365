"""Change capture: a model signal publishes an event and does nothing else.

What happens next is the subscribers' business (ingestion/subscriptions.py and any other app's).
"""

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from events.services import event_publish
from ingestion.models import Document, Source


@receiver(post_save, sender=Document, dispatch_uid="document_changed")
def document_changed(sender, instance: Document, created: bool, **kwargs) -> None:
    event_publish(
        type="freshet.document.changed",
        subject=f"documents/{instance.pk}",
        data={"document_id": instance.pk, "source_id": instance.source_id,
              "version": instance.version, "created": created},
    )


@receiver(post_delete, sender=Document, dispatch_uid="document_deleted")
def document_deleted(sender, instance: Document, **kwargs) -> None:
    event_publish(
        type="freshet.document.deleted",
        subject=f"documents/{instance.pk}",
        data={"document_id": instance.pk, "source_id": instance.source_id,
              "file": instance.file.name or ""},
    )


@receiver(post_save, sender=Source, dispatch_uid="source_changed")
def source_changed(sender, instance: Source, created: bool, **kwargs) -> None:
    event_publish(
        type="freshet.source.changed",
        subject=f"sources/{instance.pk}",
        data={"source_id": instance.pk, "created": created},
    )


@receiver(m2m_changed, sender=Source.groups.through, dispatch_uid="source_groups_changed")
def source_groups_changed(sender, instance, action: str, reverse: bool, **kwargs) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    source_ids = [instance.pk] if not reverse else list(instance.sources.values_list("pk", flat=True))
    for source_id in source_ids:
        event_publish(
            type="freshet.source.changed",
            subject=f"sources/{source_id}",
            data={"source_id": source_id, "created": False},
        )


@receiver(post_delete, sender=Source, dispatch_uid="source_deleted")
def source_deleted(sender, instance: Source, **kwargs) -> None:
    event_publish(
        type="freshet.source.deleted",
        subject=f"sources/{instance.pk}",
        data={"source_id": instance.pk},
    )
