"""Celery tasks of the feedback consumer, and the queueing of them: adapters that call
feedback/consumer.py. The work there never queues anything; it returns what is to be queued
(consumer.FollowUp), and this module does it after commit."""

from __future__ import annotations

from collections.abc import Iterable

from celery import shared_task
from django.conf import settings
from django.db import transaction

# A retry is always safe: a flush recounts from the Feedback table.
from events.errors import RETRYABLE
from feedback.consumer import (
    FollowUp,
    chunks_voted,
    dirty_add,
    dirty_take,
    document_refetch_give_up,
    feedback_scores_write,
    flush_claim,
)
from feedback.consumer import document_refetch as refetch

REFETCH_RETRIES = 3


# --- Queueing, after commit -------------------------------------------------------------------
def followup_queue(followup: FollowUp) -> None:
    """After commit, queue what a piece of consumer work asked for: its chunks and documents
    marked dirty for the next flush, then the re-fetches it claimed."""
    feedback_mark_dirty(chunk_ids=followup.chunk_ids, document_ids=followup.document_ids)
    for document_id in followup.refetch_ids:
        transaction.on_commit(lambda d=document_id: document_refetch.apply_async(args=[d], queue="feedback"))


def feedback_mark_dirty(*, chunk_ids: Iterable[str] = (), document_ids: Iterable[int] = ()) -> None:
    """After commit, add chunks and documents to the dirty sets and make sure a flush is coming."""
    chunks, documents = sorted(set(chunk_ids)), sorted(set(document_ids))
    if chunks or documents:
        transaction.on_commit(lambda: _dirty_add(chunks, documents))


def _dirty_add(chunk_ids: list[str], document_ids: list[int]) -> None:
    dirty_add(chunk_ids, document_ids)
    flush_schedule()


def flush_schedule() -> None:
    """Queue one flush in FEEDBACK_FLUSH_SECONDS unless one is pending (consumer.flush_claim)."""
    if flush_claim():
        feedback_flush.apply_async(countdown=settings.FEEDBACK_FLUSH_SECONDS, queue="feedback")


def feedback_scores_flush() -> int:
    """Recount the dirty chunks and documents and write the chunks' scores to the search index
    in one call; returns how many chunks were written."""
    batch = dirty_take()
    if batch.backlog:
        flush_schedule()  # a backlog larger than one batch: the rest in the next window
    return feedback_scores_write(batch)


def feedback_scores_refresh() -> int:
    """Mark every chunk with votes dirty, so the flushes recount them (votes decay with age) and
    rewrite their scores; returns how many."""
    ids = chunks_voted()
    with transaction.atomic():
        feedback_mark_dirty(chunk_ids=ids)
    return len(ids)


# --- Tasks ------------------------------------------------------------------------------------
@shared_task(acks_late=True, ignore_result=True, autoretry_for=RETRYABLE, retry_backoff=1, retry_backoff_max=60,
             max_retries=10)
def feedback_flush() -> None:
    """Write the scores of every chunk voted on since the last flush, in one index call."""
    feedback_scores_flush()


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=REFETCH_RETRIES)
def document_refetch(self, document_id: int) -> None:
    """Re-fetch a document marked outdated; a source that is down is tried again a few times."""
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
    feedback_scores_refresh()
