"""GET /metrics: Prometheus' text format, for loopback callers or a bearer token (METRICS_TOKEN).

Behind a reverse proxy every request comes from loopback, so a request carrying X-Forwarded-For
or Forwarded is not taken for a local one: it needs the token.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from dashboard.metrics.collectors import DatabaseCollector


def metrics_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@require_GET
def metrics(request):
    if not metrics_allowed(request):
        hint = "with `Authorization: Bearer <METRICS_TOKEN>`" if settings.METRICS_TOKEN else \
            "from loopback only (set METRICS_TOKEN to allow others with a bearer token)"
        response = HttpResponse(f"Metrics are served {hint}.\n", status=403, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.PROMETHEUS_MULTIPROC_DIR))
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
