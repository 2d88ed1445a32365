"""`manage.py events_consume`: the broker intake of every `queue` source, until stopped."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from events.intake.consumer import consume_forever


class Command(BaseCommand):
    help = ("Consume CloudEvents from the broker queue of every source of kind 'queue' (the AMQP binding), "
            "acknowledging each message after its change is recorded; what can never be taken goes to <queue>.dead.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--seconds", type=float, default=None, help="Stop after this long (default: never).")

    def handle(self, *args, seconds: float | None = None, **options) -> None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write("Consuming the queues of the queue sources; Ctrl-C stops.")
        consume_forever(stop=stop, seconds=seconds)
