from __future__ import annotations

import logging

import redis
from celery import shared_task
from django.db import InterfaceError, OperationalError

from events.envelope import cloudevent_from_record
from events.errors import TransientError
from events.models import Event
from events.subscriptions import subscriptions_all

__all__ = ["RETRYABLE", "TransientError", "event_deliver"]

logger = logging.getLogger(__name__)

# Failures worth another try in any task or stage: a service down, a lock held, a timeout.
RETRYABLE = (TransientError, ConnectionError, TimeoutError, redis.RedisError, OperationalError, InterfaceError)


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(TransientError, ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=None,
)
def event_deliver(self, event_id: str, handler: str) -> None:
    """Deliver one recorded event to one subscribed handler (safe to run twice)."""
    subscription = next((s for s in subscriptions_all() if s.handler == handler), None)
    if subscription is None:
        logger.warning("No subscription for handler %s; dropping event %s", handler, event_id)
        return
    try:
        record = Event.objects.get(pk=event_id)
    except Event.DoesNotExist:
        logger.warning("Event %s is gone; nothing to deliver to %s", event_id, handler)
        return
    subscription.resolve()(cloudevent_from_record(record))
