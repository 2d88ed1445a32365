"""Celery tasks of the feedback consumer: adapters that call feedback/consumer.py."""

from __future__ import annotations

from celery import shared_task

# A retry is always safe: a flush recounts from the Feedback table.
from events.errors import RETRYABLE

REFETCH_RETRIES = 3


@shared_task(acks_late=True, ignore_result=True, autoretry_for=RETRYABLE, retry_backoff=1, retry_backoff_max=60,
             max_retries=10)
def feedback_flush() -> None:
    """Write the scores of every chunk voted on since the last flush, in one index call."""
    from feedback.consumer import feedback_scores_flush

    feedback_scores_flush()


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=REFETCH_RETRIES)
def document_refetch(self, document_id: int) -> None:
    """Re-fetch a document marked outdated; a source that is down is tried again a few times."""
    from feedback.consumer import document_refetch as refetch
    from feedback.consumer import document_refetch_give_up

    try:
        refetch(document_id=document_id)
    except RETRYABLE as error:
        if self.request.retries >= REFETCH_RETRIES:
            document_refetch_give_up(document_id=document_id,
                                     detail=f"Gave up after {REFETCH_RETRIES + 1} tries: {error}")
            return
        raise self.retry(exc=error, countdown=30 * 2 ** self.request.retries) from error


@shared_task(acks_late=True, ignore_result=True)
def feedback_refresh() -> None:
    """Recount every voted chunk (votes decay) and write the scores that moved (celery beat)."""
    from feedback.consumer import feedback_scores_refresh

    feedback_scores_refresh()
