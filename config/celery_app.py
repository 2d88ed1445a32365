"""The Celery app. Queues are declared in settings.FRESHET_QUEUES; routing is per task call."""

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("freshet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Not configuration: how a worker's main process tells its pool processes their number. Their
# environment is the one thing every pool process inherits, forked or started afresh.
_POOL_SIZE_VARIABLE = "FRESHET_WORKER_PROCESSES"


def worker_processes() -> int:
    """How many processes of this Celery worker's pool share the machine's cores; 0 outside a
    worker (the web server, a management command)."""
    return int(os.environ.get(_POOL_SIZE_VARIABLE) or 0)


@worker_init.connect
def remember_concurrency(sender=None, **kwargs) -> None:
    """Tell the pool's child processes (forked after this) how many of them share the machine,
    so each gives the embedding model its share of the cores (ingestion.embedding)."""
    concurrency = getattr(sender, "concurrency", None)
    if concurrency:
        os.environ[_POOL_SIZE_VARIABLE] = str(concurrency)


@worker_process_init.connect
def warm_up(**kwargs) -> None:
    """Load the embedding model when a worker process starts, not on its first document, so
    the first change after a start is as fresh as the rest."""
    if settings.FRESHET_WARM_UP:
        from ingestion.embedding import embedder

        model = embedder()
        model.encode(["warm up"])
        model.tokenizer  # noqa: B018
