"""What waits in the broker: each Celery queue's count of messages not yet taken by a worker."""

from __future__ import annotations

from collections.abc import Iterable

from kombu.exceptions import ChannelError


def queue_depths(names: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue (0 for a queue the broker does not know yet); raises the
    broker's error when it does not answer."""
    from config.celery_app import app

    depths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in names:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:  # never declared, or empty (Redis keeps no empty list)
                depths[name] = 0
    return depths
