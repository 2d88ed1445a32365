"""The safety nets that make sure no document waits for ever: a crash, an outage or a broker
that lost its messages delays a document, never strands it.

- `batches_recover`: documents of a batch whose process died (claim expired) go back to their
  stage's pending set, and the stages with documents waiting too long are reported for a drain.
- `documents_sweep`: documents left `pending` or `processing` with no stage moving them on for
  PIPELINE_STUCK_SECONDS (their task was lost: Redis restarted empty, a delivery could not be
  queued) are published again as `freshet.document.changed`. Every stage is safe to run twice,
  so a document swept while its task was only late costs work, not correctness.

Both run from the periodic task `ingestion.tasks.pipeline_sweep` (PIPELINE_SWEEP_SECONDS).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events.queues import queue_depths
from events.services import event_publish
from ingestion.models import Document
from ingestion.pipeline.stages import BATCH_STAGES, member_of

logger = logging.getLogger(__name__)

SWEEP_LIMIT = 500  # documents re-published per sweep at most; the next sweep takes the rest
# The queues whose waiting messages carry documents that are neither in a claim set nor moving:
# while they hold a backlog, a quiet document may only be queued, so it must wait this many
# times longer before it counts as stuck.
BACKLOG_QUEUES = ("parse", "chunk")
BACKLOG_FACTOR = 6
_UNFINISHED = (Document.Status.PENDING, Document.Status.PROCESSING)


def batches_recover(*, older_than: float | None = None) -> dict[str, int]:
    """Put the documents of dead batches back to pending; the stages with documents to drain
    (those, and any pending longer than `older_than` seconds), with how many."""
    stale = {name: spec.claims.recover(older_than=older_than) for name, spec in BATCH_STAGES.items()}
    return {name: waiting for name, waiting in stale.items() if waiting}


def documents_sweep(*, older_than: float | None = None) -> int:
    """Publish `freshet.document.changed` again for documents stuck `pending` or `processing`
    (`older_than` seconds without progress, default PIPELINE_STUCK_SECONDS) that no batch stage
    holds; how many. Each is claimed by a conditional UPDATE of its `updated_at`, so two sweeps
    never publish one document twice, and a swept one waits a whole timeout before the next."""
    stuck_after = settings.PIPELINE_STUCK_SECONDS if older_than is None else older_than
    unfinished = Document.objects.filter(status__in=_UNFINISHED)
    if not unfinished.filter(updated_at__lt=timezone.now() - timedelta(seconds=stuck_after)).exists():
        return 0  # the usual case: no need to ask the broker about its queues
    if any(queue_depths(BACKLOG_QUEUES).values()):
        stuck_after *= BACKLOG_FACTOR
    cutoff = timezone.now() - timedelta(seconds=stuck_after)
    rows = list(unfinished.filter(updated_at__lt=cutoff)
                .order_by("updated_at").values_list("pk", "version", "source_id", "updated_at")[:SWEEP_LIMIT])
    if not rows:
        return 0
    members = [member_of(pk, version) for pk, version, _, _ in rows]
    held = set().union(*(spec.claims.waiting(members) for spec in BATCH_STAGES.values()))
    swept = 0
    for (pk, version, source_id, updated_at), member in zip(rows, members, strict=True):
        if member in held:
            continue  # waiting for a batch: batches_recover answers for it
        with transaction.atomic():
            claimed = Document.objects.filter(pk=pk, version=version, status__in=_UNFINISHED,
                                              updated_at=updated_at).update(updated_at=timezone.now())
            if not claimed:
                continue  # it moved on, or another sweep took it
            event_publish(type="freshet.document.changed", subject=f"documents/{pk}",
                          data={"document_id": pk, "source_id": source_id, "version": version,
                                "created": False, "swept": True})
        swept += 1
    if swept:
        logger.warning("Published %d stuck documents again (no progress for %.0f s)", swept, stuck_after)
    return swept
