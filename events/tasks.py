"""The delivery task: one recorded event to one subscribed handler, under the error policy of
events/errors.py."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from events.envelope import cloudevent_from_record
from events.errors import RETRYABLE, retry_countdown
from events.models import Event
from events.subscriptions import subscription_of

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def event_deliver(self, event_id: str, handler: str) -> None:
    """Deliver one recorded event to one subscribed handler (safe to run twice).

    A retryable error (events.errors.RETRYABLE) is tried again after an exponential backoff with
    jitter, EVENT_RETRY_MAX times at most; then the handler gives up (a pipeline stage fails its
    document with the reason). The queue's time limits come with the delivery (event_route).
    """
    subscription = subscription_of(handler)
    if subscription is None:
        logger.warning("No subscription for handler %s; dropping event %s", handler, event_id)
        return
    envelope = run = None
    try:
        record = Event.objects.filter(pk=event_id).first()
        if record is None:
            logger.warning("Event %s is gone; nothing to deliver to %s", event_id, handler)
            return
        envelope, run = cloudevent_from_record(record), subscription.resolve()
        run(envelope)
    except RETRYABLE as error:
        tries = self.request.retries + 1
        if tries > settings.EVENT_RETRY_MAX:
            give_up = getattr(run, "give_up", None)
            if give_up is None or envelope is None:
                raise
            give_up(envelope, error, tries)
            return
        countdown = retry_countdown(self.request.retries, maximum=settings.EVENT_RETRY_BACKOFF_MAX)
        logger.warning("%s on event %s failed (%s: %s); try %d of %d in %.0f s", handler, event_id,
                       type(error).__name__, error, tries + 1, settings.EVENT_RETRY_MAX + 1, countdown)
        raise self.retry(exc=error, countdown=countdown) from error
