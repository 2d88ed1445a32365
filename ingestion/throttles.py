"""Per-user request throttling for the REST API (scopes `uploads` and `search`).

Kept apart from the views on purpose: settings name this class, and DRF imports it while
building `APIView`, so it must not import any view.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle


class UserScopedRateThrottle(ScopedRateThrottle):
    """DRF's ScopedRateThrottle (per user, per IP for anonymous callers), reading the rate at
    request time: the stock class freezes the rates when it is imported, so a changed setting
    (tests, a reload) would be ignored. A view without `throttle_scope` is not throttled; a rate
    of None in the settings switches a scope off."""

    def get_rate(self) -> str | None:
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            # A misspelt scope must not silently switch throttling off.
            raise ImproperlyConfigured(
                f"No throttle rate for scope {self.scope!r} in DEFAULT_THROTTLE_RATES."
            ) from None
