"""Settings of the REST API: Django REST Framework and the OpenAPI schema (a part of
config/settings.py, which imports it)."""

from __future__ import annotations

from config.env import SettingsError, env_str


# --- REST API -------------------------------------------------------------------------------
# https://www.django-rest-framework.org/api-guide/settings/
def _throttle_rate(name: str, default: str) -> str:
    """A DRF rate such as 120/min (s, min, hour, day); a malformed one stops start-up."""
    value = env_str(name, default).strip()
    number, _, period = value.partition("/")
    if not number.isdigit() or int(number) < 1 or not period or period[0] not in "smhd":
        raise SettingsError(f"{name}={value!r} is not a rate like 120/min (per s, min, hour or day).")
    return value


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.authentication.TokenAuthentication",  # DRF's, the token read by one prepared statement
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # A view opts in by naming its scope (throttle_scope = "uploads" / "search" / "chat" /
    # "feedback"); rates are per user and read at request time. Counters live in the default
    # cache (per process unless a shared CACHES backend is configured).
    "DEFAULT_THROTTLE_CLASSES": ["ingestion.throttles.UserScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "uploads": _throttle_rate("THROTTLE_UPLOADS", "120/min"),
        "search": _throttle_rate("THROTTLE_SEARCH", "60/min"),
        "chat": _throttle_rate("THROTTLE_CHAT", "30/min"),
        "feedback": _throttle_rate("THROTTLE_FEEDBACK", "120/min"),
    },
    # Every error is JSON with a `detail` a person can act on.
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
}
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
SPECTACULAR_SETTINGS = {
    "TITLE": "Freshet API",
    "DESCRIPTION": "Keep an LLM's index in step with your sources, and ask it questions.",
    "VERSION": "0.1.0",
    # Swagger UI's assets are served from this server (drf-spectacular-sidecar): no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
