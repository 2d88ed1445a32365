"""The broker intake: one kombu consumer per `queue` source, in threads of one long-running
process (`manage.py events_consume`).

Each message is read in the AMQP binding (binding.amqp_event) and recorded as the HTTP intake
records its events (services.events_record); it is acknowledged only after that commit, so a
consumer killed before its ack leaves the message to be taken again (and the second time is a
duplicate: a no-op). The queue is durable and messages are acknowledged one by one, so a broker
restart loses nothing: the consumer reconnects and the broker hands back what was not acked.
A message that can never be taken (not a valid CloudEvent, a type the source does not take)
goes to the durable queue `<queue>.dead`, with the reason in its `x-freshet-reason` header.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection
from kombu import Connection, Exchange, Queue
from kombu.mixins import ConsumerMixin

from config.exceptions import ApplicationError
from events.errors import RETRYABLE
from events.intake.binding import amqp_event
from events.intake.services import events_record

logger = logging.getLogger(__name__)

REASON_HEADER = "x-freshet-reason"


def dead_letter_name(queue: str) -> str:
    return f"{queue}.dead"


def source_queues(config: dict) -> tuple[Queue, Queue]:
    """(the source's queue, bound to its exchange if it names one; its dead-letter queue)."""
    exchange = Exchange(config["exchange"], type="topic", durable=True) if config.get("exchange") else None
    if exchange is not None:
        queue = Queue(config["queue"], exchange=exchange, routing_key=config.get("binding_key") or "#", durable=True)
    else:
        queue = Queue(config["queue"], durable=True)
    return queue, Queue(dead_letter_name(config["queue"]), durable=True)


def message_record(source_id: int, message) -> str:
    """Record the message's event for the source: "" when done (recorded, or a duplicate), else
    the reason it can never be taken. Retryable errors (the database down) are raised."""
    from ingestion.models import Source

    source = Source.objects.filter(pk=source_id, kind=Source.Kind.QUEUE).first()
    if source is None:
        return "the queue source is gone."
    body = message.body
    if isinstance(body, str):  # kombu decodes a body sent with a text content_encoding
        body = body.encode(message.content_encoding or "utf-8")
    try:
        event = amqp_event(headers=message.headers, content_type=message.content_type, body=body)
        events_record(source=source, events=[event], via="queue")
    except ApplicationError as error:  # EventInvalid, TypeNotAccepted
        return error.message
    return ""


class SourceConsumer(ConsumerMixin):
    """Consumes one queue source's queue until `should_stop`."""

    def __init__(self, source_id: int, config: dict) -> None:
        self.source_id, self.config = source_id, config
        self.queue, self.dead = source_queues(config)
        # Publisher confirms: a dead letter is on the broker before its original is acknowledged.
        self.connection = Connection(config["url"], heartbeat=30, transport_options={"confirm_publish": True})

    def get_consumers(self, Consumer, channel):
        self.dead.bind(channel).declare()
        self.producer = channel.connection.client.Producer(channel)
        return [Consumer(queues=[self.queue], on_message=self.on_message,
                         prefetch_count=settings.EVENTS_CONSUME_PREFETCH)]

    def on_message(self, message) -> None:
        close_old_connections()
        try:
            reason = message_record(self.source_id, message)
        except RETRYABLE as error:
            logger.warning("Queue source %s: could not record a message (%s); it goes back to the queue",
                           self.source_id, error)
            message.requeue()
            time.sleep(1)  # the database is down: do not spin on the same message
            return
        if reason:
            headers = {**(message.headers or {}), REASON_HEADER: reason[:1000]}
            self.producer.publish(message.body, exchange="", routing_key=self.dead.name, headers=headers,
                                  content_type=message.content_type, content_encoding=message.content_encoding,
                                  delivery_mode=2, retry=True)
            logger.warning("Queue source %s: message dead-lettered to %s: %s", self.source_id, self.dead.name, reason)
        message.ack()

    def on_connection_error(self, exc, interval) -> None:
        logger.warning("Queue source %s: broker unreachable (%s); retrying in %s s", self.source_id, exc, interval)

    def run_closing(self) -> None:
        try:
            self.run()
        finally:
            connection.close()
            self.connection.release()


def consume_forever(*, stop: threading.Event, seconds: float | None = None) -> None:
    """Consume every queue source until `stop` is set (or `seconds` pass), starting and stopping
    consumers as queue sources come, change and go."""
    from ingestion.models import Source

    running: dict[int, tuple[dict, SourceConsumer, threading.Thread]] = {}
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            close_old_connections()
            wanted = {source.pk: source.config for source in Source.objects.filter(kind=Source.Kind.QUEUE)}
            for source_id, (config, consumer, thread) in list(running.items()):
                if wanted.get(source_id) != config or not thread.is_alive():
                    consumer.should_stop = True
                    thread.join(timeout=10)
                    del running[source_id]
            for source_id, config in wanted.items():
                if source_id not in running:
                    consumer = SourceConsumer(source_id, config)
                    thread = threading.Thread(target=consumer.run_closing, name=f"queue-source-{source_id}",
                                              daemon=True)
                    thread.start()
                    running[source_id] = (config, consumer, thread)
                    logger.info("Consuming queue %s for source %s", config.get("queue"), source_id)
            wait = settings.EVENTS_CONSUME_RELOAD_SECONDS
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            stop.wait(wait)
    finally:
        for _, consumer, _ in running.values():
            consumer.should_stop = True
        for _, _, thread in running.values():
            thread.join(timeout=10)
        connection.close()
