"""The one error policy (events/errors.py, events/handling.py, events/tasks.py), run in this
process through the real delivery task (Celery's `apply`, which runs each retry at once instead
of after its backoff) against the real PostgreSQL. The faults come from stage handlers of this
module that raise what a real outage raises (redis-py's and Django's errors, which are not
subclasses of the builtin ConnectionError: the bug that once stranded documents)."""

from __future__ import annotations

import pytest
import redis
from django.db import OperationalError

from config.celery_app import app as celery_app
from events.errors import RETRYABLE, TransientError, retry_countdown
from events.models import Event
from events.services import event_publish
from events.subscriptions import Subscription
from events.tasks import event_deliver
from ingestion.handlers import stage
from ingestion.models import Document
from ingestion.pipeline import stages
from ingestion.services import document_ingest
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

FAULTS: list[BaseException] = []  # raised in order by the stage below, one per try
TRIES: list[int] = []


def _faulty_parse(document: Document, version: int) -> None:
    TRIES.append(version)
    if FAULTS:
        raise FAULTS.pop(0)
    stages.document_parse(document, version)


faulty_parse = stage("parsing", _faulty_parse)
HANDLER = f"{__name__}.faulty_parse"


@pytest.fixture
def deliver(monkeypatch):
    """Deliver a document's `changed` event to the faulty stage; the document, reread."""
    subscription = Subscription("freshet.document.changed", HANDLER, queue="parse")
    monkeypatch.setattr("events.tasks.subscription_of", lambda handler: subscription if handler == HANDLER else None)
    # Run each retry in turn, as a worker would, instead of raising Celery's Retry to the caller.
    propagates = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    FAULTS.clear()
    TRIES.clear()

    def run(*faults: BaseException) -> Document:
        FAULTS.extend(faults)
        document = document_ingest(source=SourceFactory(), external_id="note.txt", content=b"Fjords are deep.").document
        event = event_publish(type="freshet.document.changed", subject=f"documents/{document.pk}",
                              data={"document_id": document.pk, "version": document.version})
        event_deliver.apply(args=[event.id, HANDLER])
        document.refresh_from_db()
        return document

    yield run
    celery_app.conf.task_eager_propagates = propagates


def test_it_retries_redis_and_database_errors_until_the_stage_succeeds(deliver, settings):
    settings.EVENT_RETRY_MAX = 5
    document = deliver(redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390"),
                       OperationalError("server closed the connection unexpectedly"),
                       TransientError("search engine busy"))
    assert len(TRIES) == 4
    assert document.status == Document.Status.PROCESSING and not document.error  # parsed, on its way
    assert Event.objects.filter(subject=f"documents/{document.pk}", type="freshet.document.parsed").exists()


def test_a_transient_failure_past_the_cap_fails_the_document_with_the_reason(deliver, settings):
    settings.EVENT_RETRY_MAX = 3
    document = deliver(*[OperationalError("the database system is starting up")] * 10)
    assert len(TRIES) == 4  # the first try and three retries, not one more
    assert document.status == Document.Status.FAILED
    assert "Gave up while parsing" in document.error and "after 4 tries" in document.error
    assert "the database system is starting up" in document.error
    failed = Event.objects.get(subject=f"documents/{document.pk}", type="freshet.document.failed")
    assert failed.data["stage"] == "parsing" and failed.data["reason"] == document.error


def test_a_permanent_error_fails_the_document_at_once(deliver, settings):
    settings.EVENT_RETRY_MAX = 3
    document = deliver(KeyError("no such column"))
    assert len(TRIES) == 1
    assert document.status == Document.Status.FAILED
    assert document.error.startswith("Internal error while parsing: KeyError")


def test_a_malformed_event_is_dropped_without_a_retry(monkeypatch):
    subscription = Subscription("freshet.document.changed", HANDLER, queue="parse")
    monkeypatch.setattr("events.tasks.subscription_of", lambda handler: subscription)
    TRIES.clear()
    event = event_publish(type="freshet.document.changed", data={"document_id": "seven"})
    result = event_deliver.apply(args=[event.id, HANDLER])
    assert result.successful() and not TRIES


def test_retryable_errors_include_what_redis_py_and_django_raise():
    # Neither is a subclass of the builtins: each must be named in the one tuple.
    for error in (redis.ConnectionError("down"), redis.TimeoutError("slow"), OperationalError("gone")):
        assert not isinstance(error, ConnectionError | TimeoutError)
        assert isinstance(error, RETRYABLE)
    assert not isinstance(ValueError("bad"), RETRYABLE)


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    for retries in range(12):
        countdowns = {retry_countdown(retries, maximum=300) for _ in range(50)}
        assert all(0 <= c <= min(300, 2 ** retries) for c in countdowns)
    assert len({retry_countdown(8, maximum=300) for _ in range(50)}) > 5  # jittered, not one value
