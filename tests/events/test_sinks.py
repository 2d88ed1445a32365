"""Event sinks: deliveries to a real local HTTP receiver (signatures checked with the
standardwebhooks verifier), retries, Retry-After, 410, type selection, a queue sink read back
from RabbitMQ, the staff API. Attempts are made in this process (services.delivery_attempt, what
the sinks task runs); one end-to-end test goes through the worker."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from email.utils import format_datetime

import pytest
from django.utils import timezone
from kombu import Exchange, Queue
from standardwebhooks.webhooks import Webhook

from events.models import Delivery, Event, EventSink
from events.services import event_publish
from events.sinks.selectors import sinks_want
from events.sinks.services import delivery_attempt, retry_delay, sink_create
from tests.conftest import client_for, wait_for
from tests.events.conftest import AMQP_URL
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def recorded(type="freshet.document.indexed", **data) -> Event:
    return event_publish(type=type, subject="documents/1", data={"document_id": 1, **data})


def test_a_delivery_carries_a_signature_the_standard_webhooks_verifier_accepts(receiver):
    sink = sink_create(name="crm", url=receiver.url, types=["freshet.document.indexed"])
    event = recorded()
    delivery = delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=1)
    assert delivery.status == Delivery.Status.SUCCEEDED and delivery.status_code == 204
    request = receiver.requests[0]
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.headers["webhook-id"] == event.pk
    payload = Webhook(sink.secret).verify(request.body, request.headers)
    assert (payload["id"], payload["type"], payload["data"]) == (event.pk, "freshet.document.indexed",
                                                                  {"document_id": 1})
    assert payload["specversion"] == "1.0"


def test_binary_mode_puts_the_attributes_in_headers(receiver):
    sink = sink_create(name="bin", url=receiver.url, types=["*"], mode="binary")
    event = recorded()
    delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=1)
    request = receiver.requests[0]
    assert request.headers["ce-id"] == event.pk and request.headers["ce-type"] == "freshet.document.indexed"
    assert request.headers["ce-specversion"] == "1.0" and request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"document_id": 1}
    Webhook(sink.secret).verify(request.body, request.headers)


def test_a_500_is_retried_with_backoff_and_every_attempt_is_recorded(receiver):
    receiver.answers.append((500, {}))
    sink = sink_create(name="flaky", url=receiver.url, types=["freshet.document.indexed"])
    event = recorded()
    first = delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=1)
    assert first.status == Delivery.Status.RETRYING and first.status_code == 500 and "500" in first.error
    wait = (first.next_attempt_at - timezone.now()).total_seconds()
    assert 1.5 <= wait <= 5.1  # the first step, 5 s, jittered down to no less than half
    second = delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=2)
    assert second.status == Delivery.Status.SUCCEEDED
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.pk, event.pk]  # receivers dedupe
    assert delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=2) is None  # made once only
    assert list(sink.deliveries.order_by("attempt").values_list("attempt", "status")) == [
        (1, "retrying"), (2, "succeeded")]


def test_the_backoff_grows_from_seconds_to_hours_and_is_bounded(settings):
    steps = [retry_delay(attempt) for attempt in range(1, settings.SINK_RETRY_ATTEMPTS)]
    assert steps[0] <= 5 and 60 <= steps[3] <= 320 and steps[-1] >= 3600
    assert all(step <= settings.SINK_RETRY_MAX_DELAY_SECONDS for step in steps)
    assert len({round(retry_delay(3), 3) for _ in range(20)}) > 5  # jittered


def test_it_gives_up_after_the_last_attempt(receiver, settings):
    settings.SINK_RETRY_ATTEMPTS = 2
    receiver.answers.extend([(500, {}), (502, {})])
    sink = sink_create(name="down", url=receiver.url, types=["*"])
    event = recorded()
    delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=1)
    last = delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=2)
    assert last.status == Delivery.Status.FAILED and "Gave up after 2 attempts" in last.error
    assert last.next_attempt_at is None


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(receiver, code):
    receiver.answers.append((code, {"Retry-After": "120"}))
    sink = sink_create(name=f"busy-{code}", url=receiver.url, types=["*"])
    delivery = delivery_attempt(sink_id=sink.pk, event_id=recorded().pk, attempt=1)
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert delivery.status == Delivery.Status.RETRYING and 117 <= wait <= 120


def test_retry_after_as_an_http_date(receiver):
    receiver.answers.append((429, {"Retry-After": format_datetime(timezone.now() + timedelta(seconds=600),
                                                                  usegmt=True)}))
    sink = sink_create(name="dated", url=receiver.url, types=["*"])
    delivery = delivery_attempt(sink_id=sink.pk, event_id=recorded().pk, attempt=1)
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 590 <= wait <= 600 and delivery.retry_queued  # a countdown: under SINK_COUNTDOWN_MAX_SECONDS


def test_a_410_disables_the_sink(receiver):
    receiver.answers.append((410, {}))
    sink = sink_create(name="gone", url=receiver.url, types=["*"])
    delivery = delivery_attempt(sink_id=sink.pk, event_id=recorded().pk, attempt=1)
    sink.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED and not sink.enabled and "410" in sink.disabled_reason
    assert delivery_attempt(sink_id=sink.pk, event_id=recorded().pk, attempt=1) is None
    assert len(receiver.requests) == 1
    assert not sinks_want("freshet.document.indexed")


def test_a_redirect_is_not_followed(receiver):
    receiver.answers.append((302, {"Location": "http://169.254.169.254/latest/meta-data"}))
    sink = sink_create(name="moved", url=receiver.url, types=["*"])
    delivery = delivery_attempt(sink_id=sink.pk, event_id=recorded().pk, attempt=1)
    assert delivery.status == Delivery.Status.RETRYING and "not followed" in delivery.error
    assert len(receiver.requests) == 1


def test_a_sink_hears_only_the_types_it_chose(receiver):
    sink_create(name="indexed-only", url=receiver.url, types=["freshet.document.indexed"])
    assert sinks_want("freshet.document.indexed")
    assert not sinks_want("freshet.document.failed") and not sinks_want("freshet.document.changed")
    sink_create(name="off", url=receiver.url, types=["freshet.document.failed"], enabled=False)
    assert not sinks_want("freshet.document.failed")


def test_a_queue_sink_publishes_in_the_amqp_binding(amqp):
    exchange_name = f"{amqp.prefix}-out"
    queue = Queue(f"{amqp.prefix}-read", exchange=Exchange(exchange_name, type="topic", durable=True),
                  routing_key="freshet.#", durable=True)
    amqp.declared.extend([("queue", queue.name), ("exchange", exchange_name)])
    queue(amqp.default_channel).declare()
    binary = sink_create(name="mq-bin", kind="queue", url=AMQP_URL, exchange=exchange_name, types=["*"], mode="binary")
    structured = sink_create(name="mq-json", kind="queue", url=AMQP_URL, exchange=exchange_name, types=["*"])
    event = recorded()
    assert delivery_attempt(sink_id=binary.pk, event_id=event.pk, attempt=1).status == Delivery.Status.SUCCEEDED
    assert delivery_attempt(sink_id=structured.pk, event_id=event.pk, attempt=1).status == Delivery.Status.SUCCEEDED
    bound = queue(amqp.default_channel)
    first = wait_for(lambda: bound.get(no_ack=True), timeout=5, message="the binary message")
    assert first.headers["cloudEvents:id"] == event.pk
    assert first.headers["cloudEvents:type"] == "freshet.document.indexed"
    assert first.content_type == "application/json" and json.loads(first.body) == {"document_id": 1}
    assert first.delivery_info["routing_key"] == "freshet.document.indexed"
    second = wait_for(lambda: bound.get(no_ack=True), timeout=5, message="the structured message")
    assert second.content_type == "application/cloudevents+json"
    assert json.loads(second.body)["id"] == event.pk and json.loads(second.body)["data"] == {"document_id": 1}


def test_the_staff_api_creates_sinks_with_a_write_only_secret(receiver):
    staff = client_for(UserFactory(username="ops", is_staff=True))
    response = staff.post("/api/sinks/", {"name": "crm", "url": receiver.url, "types": ["freshet.document.indexed"]},
                          format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("whsec_") and created["mode"] == "structured"
    sink_id = created["id"]
    shown = staff.get(f"/api/sinks/{sink_id}/").json()
    assert "secret" not in shown and shown["types"] == ["freshet.document.indexed"]
    assert all("secret" not in sink for sink in staff.get("/api/sinks/").json()["results"])

    response = staff.patch(f"/api/sinks/{sink_id}/", {"enabled": False, "mode": "binary"}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert EventSink.objects.get(pk=sink_id).secret == created["secret"]  # kept

    for bad in ({"url": "http://169.254.169.254/"}, {"types": []}, {"types": ["no spaces allowed"]},
                {"secret": "short"}, {"kind": "queue", "url": "http://x.example/"}):
        response = staff.post("/api/sinks/", {"name": "bad", "url": receiver.url, "types": ["*"], **bad}, format="json")
        assert response.status_code == 400, (bad, response.content)

    event = recorded()
    EventSink.objects.filter(pk=sink_id).update(enabled=True)
    delivery_attempt(sink_id=sink_id, event_id=event.pk, attempt=1)
    deliveries = staff.get(f"/api/sinks/{sink_id}/deliveries/").json()["results"]
    assert deliveries[0]["event_id"] == event.pk and deliveries[0]["status"] == "succeeded"
    assert deliveries[0]["event_type"] == "freshet.document.indexed"

    assert client_for(UserFactory(username="someone")).get("/api/sinks/").status_code == 403
    assert staff.delete(f"/api/sinks/{sink_id}/").status_code == 204
    assert not EventSink.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_chosen_events_reach_the_sink_through_the_worker_and_others_do_not(worker, receiver):
    sink = sink_create(name="e2e", url=receiver.url, types=["freshet.test.chosen"])
    event_publish(type="freshet.test.ignored", data={"n": 1})
    chosen = event_publish(type="freshet.test.chosen", data={"n": 2})
    # Generous: a just-started worker's processes first load the embedding model.
    wait_for(lambda: receiver.requests, timeout=240, message="the chosen event at the receiver")
    time.sleep(1.0)  # time enough for the unchosen one to arrive, were it sent
    assert [request.headers["webhook-id"] for request in receiver.requests] == [chosen.pk]
    Webhook(sink.secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    wait_for(lambda: Delivery.objects.filter(sink=sink, status="succeeded").exists(), timeout=10,
             message="the delivery recorded")


def test_the_admin_sends_a_test_event_and_shows_the_deliveries(receiver, client):
    admin_user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    sink = sink_create(name="crm", url=receiver.url, types=["freshet.document.indexed"])
    response = client.post("/admin/events/eventsink/", {"action": "send_test_event", "_selected_action": [sink.pk]},
                           follow=True)
    assert response.status_code == 200 and "Test event" in response.content.decode()
    event = Event.objects.get(type="freshet.sink.test")
    delivery_attempt(sink_id=sink.pk, event_id=event.pk, attempt=1)  # what its queued task runs
    assert receiver.requests[0].headers["webhook-id"] == event.pk
    page = client.get(f"/admin/events/delivery/?sink__id__exact={sink.pk}").content.decode()
    assert event.pk in page or "freshet.sink.test" in page
    assert sink.secret not in client.get(f"/admin/events/eventsink/{sink.pk}/change/").content.decode()  # write-only
