"""The broker intake against the machine's RabbitMQ: the real consumer (consume_forever, what
`manage.py events_consume` runs) in a thread of this process, on a queue of the test's own."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from kombu import Exchange, Producer, Queue

from events.intake.apply import received_events_apply
from events.intake.consumer import REASON_HEADER, message_record
from events.models import ReceivedEvent
from ingestion.models import Document
from tests.conftest import wait_for
from tests.events.conftest import AMQP_URL
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue_source(amqp):
    name = f"{amqp.prefix}-in"
    exchange = f"{amqp.prefix}-changes"
    amqp.declared.extend([("queue", name), ("queue", f"{name}.dead"), ("exchange", exchange)])
    source = SourceFactory(name=f"mq-{uuid.uuid4().hex[:6]}", kind="queue",
                           config={"url": AMQP_URL, "queue": name, "exchange": exchange, "binding_key": "crm.#"})
    # Declared here so messages published before the consumer starts are kept.
    Queue(name, exchange=Exchange(exchange, type="topic", durable=True), routing_key="crm.#",
          durable=True)(amqp.default_channel).declare()
    Queue(f"{name}.dead", durable=True)(amqp.default_channel).declare()
    return source


@pytest.fixture
def consumer(settings):
    """Runs the consumer of every queue source in a thread until the test ends."""
    settings.EVENTS_CONSUME_RELOAD_SECONDS = 0.2
    from events.intake.consumer import consume_forever

    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start():
        thread = threading.Thread(target=consume_forever, kwargs={"stop": stop}, daemon=True)
        thread.start()
        threads.append(thread)

    def stop_all():
        stop.set()
        for thread in threads:
            thread.join(timeout=15)

    start.stop = stop_all
    yield start
    stop_all()


def publish(amqp, source, body: bytes, **properties) -> None:
    exchange = Exchange(source.config["exchange"], type="topic", durable=True)
    Producer(amqp.default_channel).publish(body, exchange=exchange, routing_key="crm.tickets", delivery_mode=2,
                                           **properties)


def upsert_data(external_id: str, content: str) -> dict:
    return {"external_id": external_id, "title": external_id, "content": content}


def structured(event_id: str, data: dict) -> bytes:
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "/crm", "type": "freshet.document.upsert",
                       "data": data}).encode()


def documents(source) -> dict[str, bytes]:
    received_events_apply(source_id=source.pk)
    return {doc.external_id: doc.file.read() for doc in Document.objects.filter(source=source)}


def test_structured_and_binary_messages_become_documents_and_a_malformed_one_a_dead_letter(amqp, queue_source,
                                                                                          consumer):
    publish(amqp, queue_source, structured("s-1", upsert_data("t/1", "The printer is on fire.")),
            content_type="application/cloudevents+json", content_encoding="utf-8")
    publish(amqp, queue_source, json.dumps(upsert_data("t/2", "The coffee is cold.")).encode(),
            content_type="application/json", content_encoding="utf-8",
            headers={"cloudEvents:specversion": "1.0", "cloudEvents:id": "b-1", "cloudEvents:source": "/crm",
                     "cloudEvents:type": "freshet.document.upsert", "cloudEvents:time": "2026-12-01T12:00:00Z"})
    publish(amqp, queue_source, b"{not an event", content_type="application/cloudevents+json",
            content_encoding="utf-8")
    consumer()
    wait_for(lambda: ReceivedEvent.objects.filter(source=queue_source).count() == 2, timeout=20,
             message="two events recorded")
    assert documents(queue_source) == {"t/1": b"The printer is on fire.", "t/2": b"The coffee is cold."}
    assert ReceivedEvent.objects.get(ce_id="b-1").attributes["time"] == "2026-12-01T12:00:00Z"

    dead = Queue(f"{queue_source.config['queue']}.dead", durable=True)(amqp.default_channel)
    letter = wait_for(lambda: dead.get(no_ack=True), timeout=20, message="the dead letter")
    assert _bytes(letter.body) == b"{not an event"
    assert "not valid JSON" in letter.headers[REASON_HEADER]
    main = Queue(queue_source.config["queue"], durable=True)(amqp.default_channel)
    wait_for(lambda: main.queue_declare(passive=True).message_count == 0, timeout=10, message="the queue drained")


def test_an_unknown_type_goes_to_the_dead_letter_queue(amqp, queue_source, consumer):
    body = json.dumps({"specversion": "1.0", "id": "u-1", "source": "/crm", "type": "com.example.ticket",
                       "data": {"n": 1}}).encode()
    publish(amqp, queue_source, body, content_type="application/cloudevents+json", content_encoding="utf-8")
    consumer()
    dead = Queue(f"{queue_source.config['queue']}.dead", durable=True)(amqp.default_channel)
    letter = wait_for(lambda: dead.get(no_ack=True), timeout=20, message="the dead letter")
    assert "com.example.ticket" in letter.headers[REASON_HEADER] and "accepted types" in letter.headers[REASON_HEADER]
    assert not ReceivedEvent.objects.exists()


def test_a_consumer_killed_before_its_ack_leaves_the_message_to_be_taken_again_once(amqp, queue_source, consumer):
    publish(amqp, queue_source, structured("k-1", upsert_data("t/9", "Recorded, then the consumer died.")),
            content_type="application/cloudevents+json", content_encoding="utf-8")
    # A first consumer takes the message and records it (committed), then dies before acknowledging:
    # its connection closes with the message unacknowledged.
    first = amqp.clone()
    queue = Queue(queue_source.config["queue"], durable=True)(first.default_channel)
    message = wait_for(lambda: queue.get(no_ack=False), timeout=10, message="the message")
    assert message_record(queue_source.pk, message) == ""
    first.release()  # no ack: the broker hands the message to the next consumer

    consumer()
    main = Queue(queue_source.config["queue"], durable=True)(amqp.default_channel)
    wait_for(lambda: main.queue_declare(passive=True).message_count == 0, timeout=20,
             message="the message taken again")
    wait_for(lambda: documents(queue_source), timeout=10, message="the document")
    consumer.stop()  # had it not acknowledged, the message would be ready again now
    assert main.queue_declare(passive=True).message_count == 0
    assert ReceivedEvent.objects.filter(source=queue_source).count() == 1  # the second time was a duplicate
    assert documents(queue_source) == {"t/9": b"Recorded, then the consumer died."}


def _bytes(body) -> bytes:
    return body.encode() if isinstance(body, str) else body


def test_a_broker_outage_loses_nothing_and_takes_nothing_twice(amqp, queue_source, consumer):
    """The consumer reaches RabbitMQ through a TCP forwarder that the test cuts, as a broker
    restart does: its connection drops (with messages delivered and not yet acknowledged, if any)
    and new connections are refused for a while. Events published meanwhile wait in the durable
    queue; once the broker answers again the consumer reconnects and takes them, each once."""
    from tests.faults import TcpForwarder

    forwarder = TcpForwarder(("127.0.0.1", 5672))
    forwarder.restore()
    queue_source.config = {**queue_source.config, "url": f"amqp://guest:guest@127.0.0.1:{forwarder.port}//"}
    queue_source.save(update_fields=["config"])

    def send(numbers):
        for n in numbers:
            publish(amqp, queue_source, structured(f"o-{n}", upsert_data(f"t/{n}", f"Ticket {n}.")),
                    content_type="application/cloudevents+json", content_encoding="utf-8")

    def recorded() -> int:
        return ReceivedEvent.objects.filter(source=queue_source).count()

    try:
        consumer()
        send(range(5))
        wait_for(lambda: recorded() == 5, timeout=30, message="the first five recorded")
        forwarder.cut()
        send(range(5, 15))  # straight to RabbitMQ: the consumer cannot reach it now
        main = Queue(queue_source.config["queue"], durable=True)(amqp.default_channel)
        # Kept by the broker meanwhile; any it pushed to the cut connection before it noticed the
        # cut come back to the queue unacknowledged.
        wait_for(lambda: main.queue_declare(passive=True).message_count == 10, timeout=20,
                 message="the broker keeping the ten published during the outage")
        assert recorded() == 5
        forwarder.restore()
        wait_for(lambda: recorded() == 15, timeout=60, message="the consumer reconnected and took the rest")
        wait_for(lambda: main.queue_declare(passive=True).message_count == 0, timeout=20,
                 message="everything acknowledged")
    finally:
        consumer.stop()
        forwarder.cut()
    assert sorted(ReceivedEvent.objects.filter(source=queue_source).values_list("ce_id", flat=True)) == sorted(
        f"o-{n}" for n in range(15))
    assert documents(queue_source) == {f"t/{n}": f"Ticket {n}.".encode() for n in range(15)}
