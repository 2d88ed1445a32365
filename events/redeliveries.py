"""How many times a message has been delivered: the cap on redeliveries after a worker died.

Tasks are acknowledged late and rejected (requeued) when their worker process dies
(CELERY_TASK_ACKS_LATE, CELERY_TASK_REJECT_ON_WORKER_LOST), so a crash never loses one. But a
message that kills its worker every time (a file that crashes a parser's C code, a model that
runs out of memory on it) would come back for ever. So each delivery of a message is counted in
Redis, keyed by the task id and its retry number (a `self.retry()` is a new message with the same
id; it is counted apart), and forgotten when the delivery ends, however it ends. A count that
finds earlier deliveries means each of them died mid-task.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings

from config.redis_client import redis_client

logger = logging.getLogger(__name__)


def _key(task_id: str, retries: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}deliveries:{task_id}:{int(retries)}"


def _ttl() -> int:
    # A whole worker killed leaves its messages unacknowledged until the visibility timeout
    # expires; the count must outlive every such wait.
    return int(settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]) * (settings.EVENT_REDELIVERY_MAX + 2)


def delivery_begin(task_id: str | None, retries: int) -> int:
    """Count this delivery of the message; how many earlier deliveries of it died (0 when this is
    the first, or when Redis cannot say: a crash count is no reason to hold back the work)."""
    if not task_id:
        return 0
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(_key(task_id, retries))
        pipe.expire(_key(task_id, retries), _ttl())
        count, _ = pipe.execute()
    except redis.RedisError as error:
        logger.warning("Delivery of %s not counted (%s)", task_id, error)
        return 0
    return max(0, int(count) - 1)


def delivery_end(task_id: str | None, retries: int) -> None:
    """The delivery ended in this process (done, failed or retried): forget its count."""
    if not task_id:
        return
    try:
        redis_client().delete(_key(task_id, retries))
    except redis.RedisError as error:
        logger.warning("Delivery count of %s not cleared (%s); it expires", task_id, error)


def deaths_exceeded(died: int) -> bool:
    """Whether a message whose worker died `died` times must not run again."""
    return died >= settings.EVENT_REDELIVERY_MAX


class WorkerLost(Exception):  # noqa: N818 (what happened, as billiard's WorkerLostError)
    """The worker process died under a delivery EVENT_REDELIVERY_MAX times."""

    def __init__(self, died: int, handler: str, event_type: str) -> None:
        self.died = died
        super().__init__(f"the worker died {died} times while {handler} handled {event_type} "
                         "(EVENT_REDELIVERY_MAX); see the worker's log for why")
