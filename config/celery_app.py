"""The Celery app. Queues are declared in settings.FRESHET_QUEUES; routing is per task call."""

import logging
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init
from django.conf import settings
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)


class _RedisChannel(kombu_redis.Channel):
    def __init__(self, connection, **kwargs):
        self._conninfo = connection.client  # connection: the channel's transport
        super().__init__(connection, **kwargs)

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            logger.warning("Reconnecting a collected broker channel to Redis, to acknowledge or restore the "
                           "messages it still holds.")
            self.connection.client = self._conninfo
        return super()._connparams(asynchronous=asynchronous)


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport (settings.CELERY_BROKER_TRANSPORT), with one fix. A worker that lost
    Redis while a BRPOP was outstanding and it held unacknowledged (acks_late) messages crashed on
    its way to reconnecting: "Unrecoverable error: AttributeError: 'NoneType' object has no
    attribute 'hostname'", and its queues went unconsumed. Celery's consumer collects the lost
    connection, which detaches the transport (`transport.client = None`) but leaves the channel
    whose close the connection error cut short; the close that follows rebuilds the channel's
    connection pool, to restore those messages, from `transport.client`. Here the channel keeps
    its own reference, so it reaches Redis as it did before (restores, and acknowledges the tasks
    that were running), or fails with a connection error, which kombu and Celery handle."""

    Channel = _RedisChannel


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


@task_prerun.connect
@task_postrun.connect
def database_connections_checked(sender=None, **kwargs) -> None:
    """Before and after each task, Django's own check of the process's database connections: a
    broken one, or one older than DATABASE_CONN_MAX_AGE, is closed (a server database's 0: one
    connection a task, as before). Celery's Django fixup would close every connection before and
    after every task instead (settings.CELERY_DB_REUSE_MAX turns that off): with SQLite, whose
    connections the settings keep, that was a connection opened, and its PRAGMAs run, twice a task.
    Not for an eager task, which runs inside its caller's transaction."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
