"""The metrics measured in the processes that do the work (web, workers), in prometheus-client's
multiprocess mode: each process writes its figures under PROMETHEUS_MULTIPROC_DIR (config/
settings.py sets it before this module is imported) and /metrics adds them up, so the workers'
stage durations count although /metrics is served by the web process.

https://prometheus.github.io/client_python/multiprocess/
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

STAGE_SECONDS = Histogram(
    "freshet_stage_duration_seconds", "Time one event delivery took in its handler (a pipeline stage), by handler.",
    ["handler", "queue"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
EVENTS_PUBLISHED = Counter("freshet_events_published_total", "Events committed to the event log, by type.", ["type"])
REQUEST_SECONDS = Histogram(
    "freshet_request_duration_seconds", "HTTP request latency by view (search: ingestion/chat API views).",
    ["view", "method"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_started: dict[str, float] = {}


def event_count(event) -> None:
    """Event observer (dashboard/apps.py)."""
    EVENTS_PUBLISHED.labels(type=event.type).inc()


def _task_started(task_id=None, task=None, args=None, **kwargs) -> None:
    if task is not None and task.name == "events.tasks.event_deliver":
        _started[task_id] = time.perf_counter()


def _task_finished(task_id=None, task=None, args=None, **kwargs) -> None:
    began = _started.pop(task_id, None)
    if began is None or not args or len(args) < 2:
        return
    from events.subscriptions import subscription_of

    handler = str(args[1])
    subscription = subscription_of(handler)
    STAGE_SECONDS.labels(handler=handler.rsplit(".", 1)[-1],
                         queue=subscription.queue if subscription else "").observe(time.perf_counter() - began)


def _process_gone(pid=None, **kwargs) -> None:
    import os

    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())


def task_timing_connect() -> None:
    """Time every event delivery through Celery's task signals (no change to the task itself)."""
    from celery.signals import task_postrun, task_prerun, worker_process_shutdown

    task_prerun.connect(_task_started, weak=False, dispatch_uid="freshet-metrics-prerun")
    task_postrun.connect(_task_finished, weak=False, dispatch_uid="freshet-metrics-postrun")
    worker_process_shutdown.connect(_process_gone, weak=False, dispatch_uid="freshet-metrics-gone")
