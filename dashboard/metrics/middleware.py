"""Request latency by view, for /metrics (search and chat latency among them)."""

from __future__ import annotations

import time

from dashboard.metrics.instruments import REQUEST_SECONDS


class RequestTimingMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        began = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.view_name and match.view_name != "metrics":
            REQUEST_SECONDS.labels(view=match.view_name, method=request.method).observe(time.perf_counter() - began)
        return response
