import pytest
from django.db import transaction

from events.envelope import cloudevent_from_record
from events.models import Event
from events.services import event_publish
from events.subscriptions import Subscription, subscriptions_for
from ingestion.models import Document
from tests.conftest import wait_for
from tests.factories import SourceFactory


def test_the_ingestion_workflow_is_declared_as_data():
    chain = ["freshet.document.changed", "freshet.document.parsed", "freshet.document.chunked",
             "freshet.index.drain_requested"]
    queues = [subscriptions_for(event_type)[0].queue for event_type in chain]
    assert queues == ["parse", "chunk", "embed", "index"]
    for event_type in chain:
        assert callable(subscriptions_for(event_type)[0].resolve())


def test_a_subscription_filter_keeps_deliveries_to_events_whose_data_match():
    filtered = Subscription("freshet.test.happened", "events.tests.handler", queue="sync", when={"replaced": True})
    assert filtered.wants({"replaced": True, "document_id": 3})
    assert not filtered.wants({"replaced": False}) and not filtered.wants({}) and not filtered.wants(None)
    assert Subscription("freshet.test.happened", "events.tests.handler", queue="sync").wants({})

    # A first version indexed: no answer cites it and nobody voted on it, so no task for those.
    def handlers(data):
        return {s.handler for s in subscriptions_for("freshet.document.indexed", data)}
    replacing = {"chat.handlers.document_indexed_mark_stale", "feedback.handlers.document_indexed_restore_scores"}
    assert handlers({"document_id": 1, "replaced": True}) >= replacing
    assert not handlers({"document_id": 1, "replaced": False}) & replacing


@pytest.mark.django_db
def test_a_recorded_event_is_a_valid_cloudevent():
    event = event_publish(type="freshet.test.happened", subject="things/1", data={"n": 1})
    envelope = cloudevent_from_record(Event.objects.get(pk=event.pk))
    assert envelope.get_specversion() == "1.0"
    assert (envelope.get_type(), envelope.get_subject(), envelope.get_source()) == (
        "freshet.test.happened", "things/1", "/freshet")
    assert envelope.get_data() == {"n": 1}


@pytest.mark.django_db
def test_deliveries_wait_for_the_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        event = event_publish(type="freshet.document.changed", data={"document_id": 0, "version": 1})
        assert Event.objects.filter(pk=event.pk).exists()
    assert len(callbacks) == 1  # routing is deferred to the commit, not run inline


@pytest.mark.worker
def test_a_rolled_back_change_leaves_no_event_and_no_job(worker):
    source = SourceFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        Document.objects.create(source=source, external_id="ghost", version=1)
        raise RuntimeError("roll back")
    assert not Event.objects.filter(type="freshet.document.changed").exists()

    # A committed change after it is processed normally: the worker saw no ghost job.
    document = Document.objects.create(source=source, external_id="real", version=1)
    wait_for(lambda: Event.objects.filter(subject=f"documents/{document.pk}", type="freshet.document.failed").exists(),
             message="the committed document to be processed")
    assert Event.objects.filter(type="freshet.document.changed").count() == 1
