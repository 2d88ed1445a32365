"""What the dashboard and /metrics read: one snapshot of the pipeline, from the database (the
event log, documents, sync runs, sink deliveries, feedback) and the broker (queue depths).

Every figure is one aggregate query, so a snapshot costs the same with ten documents or a million
rows of event log (the event log is read through its index on `time`).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from events.models import Event
from ingestion.models import Document, Source, SyncRun

logger = logging.getLogger(__name__)

# Pipeline events, by the stage they say a document has passed.
STAGES = {
    "freshet.document.changed": "changed",
    "freshet.document.parsed": "parsed",
    "freshet.document.chunked": "chunked",
    "freshet.chunks.embedded": "embedded",
    "freshet.document.indexed": "indexed",
    "freshet.document.failed": "failed",
}
CHANGED, INDEXED, FAILED = "freshet.document.changed", "freshet.document.indexed", "freshet.document.failed"
WINDOW = timedelta(hours=1)
RATE_MINUTES = 30
FRESHNESS_MAX_DOCUMENTS = 5000  # indexed events of the last hour the lag is computed over (newest)


def documents_by_source(*, source_id: int | None = None) -> list[dict[str, Any]]:
    """Each source with its documents counted by status (sources without documents too)."""
    statuses = [status for status, _ in Document.Status.choices]
    sources = Source.objects.order_by("name")
    if source_id is not None:
        sources = sources.filter(pk=source_id)
    rows = sources.annotate(**{
        status: Count("documents", filter=Q(documents__status=status)) for status in statuses
    }).values("pk", "name", "kind", *statuses)
    return [{"id": row["pk"], "name": row["name"], "kind": row["kind"],
             "counts": {status: row[status] for status in statuses}} for row in rows]


def events_per_minute(*, now: datetime, minutes: int = RATE_MINUTES) -> dict[str, Any]:
    """Pipeline events per minute and stage over the last `minutes` (the current one included)."""
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    rows = (Event.objects.filter(time__gte=start, type__in=STAGES).annotate(minute=TruncMinute("time"))
            .values("minute", "type").annotate(n=Count("id")).order_by())
    by_stage = {stage: [0] * minutes for stage in STAGES.values()}
    for row in rows:
        slot = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= slot < minutes:
            by_stage[STAGES[row["type"]]][slot] += row["n"]
    return {"start": start.isoformat(), "minutes": [int((start + timedelta(minutes=i)).timestamp())
                                                     for i in range(minutes)], "stages": by_stage}


def failures_recent(*, now: datetime, limit: int = 20) -> dict[str, Any]:
    """The last hour's failed documents: how many, the newest with their reasons."""
    recent = Event.objects.filter(type=FAILED, time__gte=now - WINDOW)
    newest = list(recent.order_by("-time", "-id").values("id", "time", "subject", "data")[:limit])
    return {"count": recent.count(), "newest": [{
        "event_id": row["id"], "time": row["time"].isoformat(), "subject": row["subject"],
        "document_id": (row["data"] or {}).get("document_id"), "stage": (row["data"] or {}).get("stage", ""),
        "reason": str((row["data"] or {}).get("reason", ""))[:500]} for row in newest]}


def freshness_lags(*, now: datetime) -> list[float]:
    """Seconds from a document's change to its being indexed, for each document version indexed
    in the last hour (the newest FRESHNESS_MAX_DOCUMENTS), read from the event log: the first
    `document.changed` of that version to its `document.indexed`."""
    indexed = list(Event.objects.filter(type=INDEXED, time__gte=now - WINDOW).order_by("-time")
                   .values_list("subject", "time", "data")[:FRESHNESS_MAX_DOCUMENTS])
    if not indexed:
        return []
    changed: dict[tuple[str, Any], datetime] = {}
    subjects = sorted({subject for subject, _, _ in indexed})
    # A change indexed within the hour happened at most a day before (a stuck document fails).
    oldest = min(time for _, time, _ in indexed) - timedelta(days=1)
    for start in range(0, len(subjects), 500):
        rows = (Event.objects.filter(type=CHANGED, subject__in=subjects[start:start + 500], time__gte=oldest)
                .values_list("subject", "time", "data"))
        for subject, time, data in rows:
            key = (subject, (data or {}).get("version"))
            if key not in changed or time < changed[key]:
                changed[key] = time
    lags = []
    for subject, time, data in indexed:
        began = changed.get((subject, (data or {}).get("version")))
        if began is not None and time >= began:
            lags.append((time - began).total_seconds())
    return sorted(lags)


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile of sorted `values` (nearest rank), None for none."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def freshness_summary(*, now: datetime) -> dict[str, Any]:
    lags = freshness_lags(now=now)
    return {"count": len(lags), "p50": quantile(lags, 0.5), "p95": quantile(lags, 0.95),
            "max": lags[-1] if lags else None}


def queue_depths_read() -> dict[str, int | None]:
    """Messages waiting per Celery queue; None for each when the broker does not answer."""
    from events.queues import queue_depths

    try:
        return queue_depths(settings.FRESHET_QUEUES)
    except Exception as error:  # the broker down is a figure on this page, not a crash
        logger.warning("Queue depths unavailable: %s", error)
        return {queue: None for queue in settings.FRESHET_QUEUES}


def sync_runs_recent(*, limit: int = 10) -> dict[str, Any]:
    runs = SyncRun.objects.select_related("source").order_by("-started_at", "-id")[:limit]
    by_status = dict(SyncRun.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {"by_status": by_status, "newest": [{
        "id": run.pk, "source": run.source.name, "trigger": run.trigger, "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "seen": run.items_seen, "new": run.items_new, "changed": run.items_changed, "deleted": run.items_deleted,
        "failed": run.items_failed, "error": run.error[:300]} for run in runs]}


def sync_items_total() -> dict[str, int]:
    sums = SyncRun.objects.aggregate(**{name: Sum(f"items_{name}") for name in
                                        ("seen", "new", "changed", "unchanged", "deleted", "failed")})
    return {name: value or 0 for name, value in sums.items()}


def delivery_model():
    """The sink delivery model (events.Delivery) once it exists, else None: the dashboard and the
    metrics show sinks only where they are built."""
    global _delivery_table_seen
    try:
        model = apps.get_model("events", "Delivery")
    except LookupError:
        return None
    if not _delivery_table_seen:  # the model may come before its migration is applied
        _delivery_table_seen = model._meta.db_table in connection.introspection.table_names()
    return model if _delivery_table_seen else None


_delivery_table_seen = False


def deliveries_summary(*, limit: int = 10) -> dict[str, Any] | None:
    model = delivery_model()
    if model is None:
        return None
    fields = {field.name for field in model._meta.get_fields()}
    by_status = (dict(model.objects.values_list("status").annotate(n=Count("pk")).order_by())
                 if "status" in fields else {})
    related = [name for name in ("sink",) if name in fields]
    newest = model.objects.select_related(*related).order_by("-pk")[:limit]
    return {"by_status": {str(key): value for key, value in by_status.items()}, "total": model.objects.count(),
            "newest": [{"id": row.pk, "text": str(row)[:200], "status": str(getattr(row, "status", ""))}
                       for row in newest]}


def feedback_trend(*, now: datetime, hours: int = 24) -> dict[str, Any]:
    """Votes per hour over the last `hours`, up and down."""
    from feedback.models import Feedback

    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = (Feedback.objects.filter(updated_at__gte=start).annotate(hour=TruncHour("updated_at"))
            .values("hour", "rating").annotate(n=Count("id")).order_by())
    up, down = [0] * hours, [0] * hours
    for row in rows:
        slot = int((row["hour"] - start).total_seconds() // 3600)
        if 0 <= slot < hours:
            (up if row["rating"] > 0 else down)[slot] += row["n"]
    return {"hours": [int((start + timedelta(hours=i)).timestamp()) for i in range(hours)], "up": up, "down": down,
            "total": Feedback.objects.count()}


def dashboard_snapshot() -> dict[str, Any]:
    """Everything /dashboard/ shows, as JSON-ready data."""
    now = timezone.now()
    by_source = documents_by_source()
    totals: dict[str, int] = defaultdict(int)
    for source in by_source:
        for status, n in source["counts"].items():
            totals[status] += n
    return {
        "time": now.isoformat(),
        "documents": {"by_source": by_source, "totals": dict(totals)},
        "rates": events_per_minute(now=now),
        "queues": queue_depths_read(),
        "failures": failures_recent(now=now),
        "freshness": freshness_summary(now=now),
        "sync_runs": sync_runs_recent(),
        "deliveries": deliveries_summary(),
        "feedback": feedback_trend(now=now),
    }
