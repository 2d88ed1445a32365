"""The metrics read from the database and the broker when /metrics is scraped: what the rows
already say (documents by status, sync runs, deliveries, votes, the freshness lag from the event
log) is not counted a second time in the processes."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dashboard import selectors


class DatabaseCollector:
    def collect(self):
        now = timezone.now()
        documents = GaugeMetricFamily("freshet_documents", "Documents by source and status.",
                                      labels=["source", "status"])
        for source in selectors.documents_by_source():
            for status, n in source["counts"].items():
                documents.add_metric([source["name"], status], n)
        yield documents

        depth = GaugeMetricFamily("freshet_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
        for queue, n in selectors.queue_depths_read().items():
            if n is not None:
                depth.add_metric([queue], n)
        yield depth

        lags = selectors.freshness_lags(now=now)
        lag = GaugeMetricFamily("freshet_freshness_lag_seconds",
                                "Change to indexed over the last hour's indexed document versions.",
                                labels=["quantile"])
        for q in (0.5, 0.95, 1.0):
            value = selectors.quantile(lags, q)
            if value is not None:
                lag.add_metric([str(q)], value)
        yield lag
        yield GaugeMetricFamily("freshet_freshness_lag_samples", "Indexed document versions the lag is computed over.",
                                value=len(lags))

        failed = GaugeMetricFamily("freshet_documents_failed_last_hour", "Documents failed in the last hour.",
                                   value=selectors.failures_recent(now=now, limit=0)["count"])
        yield failed

        from ingestion.models import SyncRun

        runs = CounterMetricFamily("freshet_sync_runs", "Sync runs by status.", labels=["status"])
        by_status = dict(SyncRun.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status, _ in SyncRun.Status.choices:
            runs.add_metric([status], by_status.get(status, 0))
        yield runs
        items = CounterMetricFamily("freshet_sync_items", "Items synced, by outcome.", labels=["outcome"])
        for outcome, n in selectors.sync_items_total().items():
            items.add_metric([outcome], n)
        yield items

        deliveries = selectors.deliveries_summary(limit=0)
        if deliveries is not None:
            sinks = CounterMetricFamily("freshet_sink_deliveries", "Sink deliveries by status.", labels=["status"])
            for status, n in deliveries["by_status"].items():
                sinks.add_metric([status], n)
            yield sinks

        yield from _feedback()
        yield from _chat(now)


def _feedback():
    from feedback.models import Feedback

    votes = CounterMetricFamily("freshet_feedback_votes", "Votes stored, by rating and reason.",
                                labels=["rating", "reason"])
    for rating, reason, n in Feedback.objects.values_list("rating", "reason").annotate(n=Count("id")).order_by():
        votes.add_metric(["up" if rating > 0 else "down", reason or "none"], n)
    yield votes


def _chat(now):
    """Chat answers over the websocket keep their own timings (chat.Message); their quantiles over
    the last hour. POST /api/chat/ and /api/search/ are also in freshet_request_duration_seconds."""
    from chat.models import Message

    recent = Message.objects.filter(created_at__gte=now - timedelta(hours=1))
    for field, name in (("first_token_ms", "first_token"), ("total_ms", "answer"), ("retrieval_ms", "retrieval")):
        values = sorted(v / 1000 for v in recent.exclude(**{f"{field}__isnull": True}).values_list(field, flat=True))
        family = GaugeMetricFamily(f"freshet_chat_{name}_seconds", f"Chat {name.replace('_', ' ')} latency, last hour.",
                                   labels=["quantile"])
        for q in (0.5, 0.95):
            value = selectors.quantile(values, q)
            if value is not None:
                family.add_metric([str(q)], value)
        yield family
