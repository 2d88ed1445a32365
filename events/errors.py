"""The one error policy of every event handler and task.

- `TransientError`: a failure worth another try (a service down, a lock held, a timeout, a 429
  or 5xx). The search-index engines and the fetchers raise it for what is worth retrying, and
  let permanent errors (a 400, a document that cannot be parsed) raise as they are.
- `RETRYABLE`: the one tuple of errors that are retried, with exponential backoff and jitter
  (`retry_countdown`), up to `EVENT_RETRY_MAX` tries; after that the document is failed with a
  reason a person can act on (events/handling.py, events/tasks.py). Anything else is permanent:
  the document fails at once, with its reason, and the worker goes on.

Free of Django's settings, so engine modules can import it alone.
"""

from __future__ import annotations

import redis
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.db.utils import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

__all__ = ["RETRYABLE", "SoftTimeLimitExceeded", "TransientError", "retry_countdown"]


class TransientError(Exception):
    """A failure worth retrying: a service was down, a lock was held, a timeout."""


# redis-py's, Django's database and kombu's broker errors are not subclasses of the builtin ConnectionError and
# TimeoutError: each is named here, or a Redis restart or a dropped database connection would
# not be retried.
RETRYABLE: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    redis.RedisError,
    OperationalError,  # the database is down, restarting, or broke the connection; a deadlock
    InterfaceError,  # a connection that was closed under us
    BrokerError,  # kombu could not reach the broker to queue the next step's task
)


def retry_countdown(retries: int, *, maximum: float) -> float:
    """Seconds before try number `retries + 1`: exponential from 1 s, capped at `maximum`, with
    full jitter, so the tasks that a shared outage failed together do not all come back at once."""
    return get_exponential_backoff_interval(factor=1, retries=retries, maximum=int(maximum), full_jitter=True)
