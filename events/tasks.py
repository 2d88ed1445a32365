"""The delivery task: one recorded event to one subscribed handler, under the error policy of
events/errors.py."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from events.envelope import cloudevent_from_record
from events.errors import RETRYABLE, retry_countdown
from events.models import Event
from events.redeliveries import WorkerLost, deaths_exceeded, delivery_begin, delivery_end
from events.subscriptions import subscription_of

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=None)
def event_deliver(self, event_id: str, handler: str) -> None:
    """Deliver one recorded event to one subscribed handler (safe to run twice).

    A retryable error (events.errors.RETRYABLE) is tried again after an exponential backoff with
    jitter, EVENT_RETRY_MAX times at most; then the handler gives up (a pipeline stage fails its
    document with the reason). A delivery whose worker process died under it is delivered again
    (acknowledged late, rejected on worker loss), EVENT_REDELIVERY_MAX times at most; then the
    handler gives up the same way (events/redeliveries.py). The queue's time limits come with the
    delivery (event_route).
    """
    subscription = subscription_of(handler)
    if subscription is None:
        logger.warning("No subscription for handler %s; dropping event %s", handler, event_id)
        return
    task_id, retries = self.request.id, self.request.retries
    died = delivery_begin(task_id, retries)
    envelope = run = None
    try:
        record = Event.objects.filter(pk=event_id).first()
        if record is None:
            logger.warning("Event %s is gone; nothing to deliver to %s", event_id, handler)
            return
        envelope, run = cloudevent_from_record(record), subscription.resolve()
        if died:
            logger.warning("Delivery of event %s to %s again: its worker died %d times", event_id, handler, died)
            if deaths_exceeded(died):
                _give_up(run, envelope, WorkerLost(died, handler, record.type), tries=died + 1)
                return
        run(envelope)
    except RETRYABLE as error:
        tries = retries + 1
        if tries > settings.EVENT_RETRY_MAX:
            if getattr(run, "give_up", None) is None or envelope is None:
                raise
            _give_up(run, envelope, error, tries=tries)
            return
        countdown = retry_countdown(retries, maximum=settings.EVENT_RETRY_BACKOFF_MAX)
        logger.warning("%s on event %s failed (%s: %s); try %d of %d in %.0f s", handler, event_id,
                       type(error).__name__, error, tries + 1, settings.EVENT_RETRY_MAX + 1, countdown)
        raise self.retry(exc=error, countdown=countdown) from error
    finally:
        delivery_end(task_id, retries)


def _give_up(run, envelope, error: BaseException, *, tries: int) -> None:
    """The handler's last word on an event it will not get (events.handling.event_handler's
    `give_up`: a pipeline stage fails the document with the reason)."""
    give_up = getattr(run, "give_up", None)
    if give_up is None:
        logger.error("Dropping event %s after %d tries: %s", envelope.get_id() if envelope else "?", tries, error)
        return
    give_up(envelope, error, tries)
