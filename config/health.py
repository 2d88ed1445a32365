"""GET /api/health/: is every part Freshet needs answering?"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from config.celery_app import app as celery_app
from ingestion.search_index import search_index


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"engine": connection.vendor}


def _broker() -> dict:
    redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    return {}


def _search_index() -> dict:
    index = search_index()
    index.ping()
    return {"engine": index.name}


def _workers() -> dict:
    with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as connection:
        replies = celery_app.control.ping(timeout=1.0, connection=connection)
    if not replies:
        raise RuntimeError("no Celery worker answered; start one (make run, or celery -A config worker)")
    return {"count": len(replies), "names": sorted(name for reply in replies for name in reply)}


CHECKS: dict[str, Callable[[], dict]] = {
    "database": _database,
    "broker": _broker,
    "search_index": _search_index,
    "workers": _workers,
}


@require_GET
def health(request):
    components: dict[str, dict] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            details = check()
            components[name] = {"status": "ok", **details}
        except Exception as error:  # a health check reports every failure, whatever its kind
            components[name] = {"status": "down", "error": f"{type(error).__name__}: {error}"}
        components[name]["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
    down = [name for name, c in components.items() if c["status"] != "ok"]
    body = {"status": "ok" if not down else "down", "components": components}
    if down:
        body["down"] = down
    return JsonResponse(body, status=503 if down else 200)
