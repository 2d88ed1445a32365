"""The cap on redeliveries (events/redeliveries.py): a message whose worker died under it is
delivered again (acknowledged late, rejected on worker loss), but not for ever: past
EVENT_REDELIVERY_MAX deaths its document fails with the reason. Real Redis, the real delivery
task run in this process with the task id a redelivered message carries."""

from __future__ import annotations

import uuid

from django.conf import settings

from config.celery_app import app
from config.redis_client import redis_client
from events.models import Event
from events.redeliveries import _key, delivery_begin
from events.tasks import event_deliver
from ingestion.models import Document
from ingestion.services import document_ingest
from tests.factories import SourceFactory

PARSE = "ingestion.handlers.document_parse"


def _changed(db) -> tuple[Document, Event]:
    result = document_ingest(source=SourceFactory(), external_id="notes/a.txt", filename="a.txt",
                             content=b"Glaciers feed the rivers in summer.", uri="")
    document = result.document
    event = Event.objects.get(type="freshet.document.changed", subject=f"documents/{document.pk}")
    return document, event


def _died(task_id: str, times: int) -> None:
    """As if `times` deliveries of the message had begun in processes that then died."""
    for _ in range(times):
        delivery_begin(task_id, 0)


def test_it_is_configured_to_redeliver_what_a_dead_worker_held():
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert event_deliver.acks_late and event_deliver.reject_on_worker_lost
    longest = max(hard for _, hard in settings.PIPELINE_TIME_LIMITS.values())
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > longest


def test_a_redelivered_message_runs_again_and_its_count_is_forgotten_after(db):
    document, event = _changed(db)
    task_id = str(uuid.uuid4())
    _died(task_id, settings.EVENT_REDELIVERY_MAX - 1)

    event_deliver.apply(args=[event.pk, PARSE], task_id=task_id)

    document.refresh_from_db()
    assert document.status == Document.Status.PROCESSING and "Glaciers" in document.text  # parsed
    assert redis_client().get(_key(task_id, 0)) is None


def test_past_the_cap_the_document_fails_with_the_reason_and_the_handler_does_not_run(db):
    document, event = _changed(db)
    task_id = str(uuid.uuid4())
    _died(task_id, settings.EVENT_REDELIVERY_MAX)

    event_deliver.apply(args=[event.pk, PARSE], task_id=task_id)

    document.refresh_from_db()
    assert document.status == Document.Status.FAILED
    assert f"the worker died {settings.EVENT_REDELIVERY_MAX} times while {PARSE}" in document.error
    assert document.text == ""  # not parsed a fourth time
    failed = Event.objects.get(type="freshet.document.failed", subject=f"documents/{document.pk}")
    assert "worker died" in failed.data["reason"]


def test_a_retry_is_counted_apart_from_the_deliveries_of_the_first_try(db):
    document, event = _changed(db)
    task_id = str(uuid.uuid4())
    _died(task_id, settings.EVENT_REDELIVERY_MAX)  # of try 1

    event_deliver.apply(args=[event.pk, PARSE], task_id=task_id, retries=1)

    document.refresh_from_db()
    assert document.status == Document.Status.PROCESSING
