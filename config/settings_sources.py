"""Settings of what comes in: uploads, outbound requests, connectors and web fetching (a part of
config/settings.py, which imports it)."""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path

from config.env import SettingsError, env_float, env_int, env_list, env_str

# --- Ingestion ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#file-upload-max-memory-size
CHUNK_SIZE_TOKENS = env_int("CHUNK_SIZE_TOKENS", 200, minimum=16)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 32, minimum=0)
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 25 * 1024 * 1024, minimum=1)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
UPLOAD_ALLOWED_TYPES = env_list("UPLOAD_ALLOWED_TYPES", [
    "text/plain", "text/markdown", "text/html", "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
])
BULK_UPLOAD_MAX_FILES = env_int("BULK_UPLOAD_MAX_FILES", 20, minimum=1)
MAX_BULK_UPLOAD_BYTES = env_int("MAX_BULK_UPLOAD_BYTES", 100 * 1024 * 1024, minimum=1)

# --- Outbound requests (config/outbound.py) --------------------------------------------------
# Connectors, sinks and re-fetches never reach link-local or metadata addresses; loopback and
# private addresses only inside these networks (empty: public addresses only).
OUTBOUND_PRIVATE_NETWORKS = env_list(
    "OUTBOUND_PRIVATE_NETWORKS",
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
)
for _network in OUTBOUND_PRIVATE_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise SettingsError(f"OUTBOUND_PRIVATE_NETWORKS: {_network!r} is not a network (like 10.0.0.0/8).") from None
OUTBOUND_USER_AGENT = env_str("OUTBOUND_USER_AGENT", "Freshet/1.0 (+https://github.com/freshet)")

# --- Connectors (ingestion/connectors/) ------------------------------------------------------
# How syncs run (sync.py): each source has at most SYNC_ITEMS_IN_FLIGHT items being fetched, in
# tasks of SYNC_CHUNK_ITEMS on the `sync` queue, so a big source never holds up a small one. A
# running sync with no progress for SYNC_STALE_SECONDS lost its worker; the next request fails it.
# Folder sources may only read below FOLDER_SOURCE_ROOTS; the watcher (manage.py watch_folders)
# waits FOLDER_WATCH_DEBOUNCE_MS for a burst of changes to settle and runs a full sync of every
# folder source every FOLDER_RESYNC_SECONDS as the safety net for what a watcher can miss.
# https://watchfiles.helpmanual.io/api/watch/  https://django-celery-beat.readthedocs.io/
SYNC_ITEMS_IN_FLIGHT = env_int("SYNC_ITEMS_IN_FLIGHT", 16, minimum=1)
SYNC_CHUNK_ITEMS = env_int("SYNC_CHUNK_ITEMS", 8, minimum=1)
SYNC_ITEM_RETRIES = env_int("SYNC_ITEM_RETRIES", 2, minimum=0)
SYNC_STALE_SECONDS = env_int("SYNC_STALE_SECONDS", 900, minimum=10)
FOLDER_SOURCE_ROOTS = env_list("FOLDER_SOURCE_ROOTS", [str(Path.home()), "/srv", tempfile.gettempdir()])
FOLDER_WATCH_DEBOUNCE_MS = env_int("FOLDER_WATCH_DEBOUNCE_MS", 100, minimum=0)
FOLDER_RESYNC_SECONDS = env_int("FOLDER_RESYNC_SECONDS", 3600, minimum=0)  # 0: no periodic full sync

# --- Web fetching (ingestion/connectors/http.py: url, sitemap, feed, re-fetches) ------------
# https://www.python-httpx.org/advanced/timeouts/  https://www.rfc-editor.org/rfc/rfc9309
# Per host, across every process (Redis): at most WEB_HOST_CONCURRENCY requests at once and
# WEB_HOST_DELAY seconds between two starts (robots.txt's Crawl-delay raises it, up to
# WEB_CRAWL_DELAY_MAX). WEB_TIMEOUT bounds one response, body included (a slow body fails);
# 429/5xx are tried WEB_RETRIES more times with backoff, honouring Retry-After, waiting at most
# WEB_RETRY_WAIT_MAX seconds in all. robots.txt is kept WEB_ROBOTS_CACHE_SECONDS per host.
WEB_CONNECT_TIMEOUT = env_float("WEB_CONNECT_TIMEOUT", 5.0)
WEB_TIMEOUT = env_float("WEB_TIMEOUT", 30.0)
WEB_MAX_BYTES = env_int("WEB_MAX_BYTES", 25 * 1024 * 1024, minimum=1)
WEB_MAX_REDIRECTS = env_int("WEB_MAX_REDIRECTS", 5, minimum=0)
WEB_RETRIES = env_int("WEB_RETRIES", 2, minimum=0)
WEB_RETRY_WAIT_MAX = env_float("WEB_RETRY_WAIT_MAX", 30.0)
WEB_HOST_CONCURRENCY = env_int("WEB_HOST_CONCURRENCY", 4, minimum=1)
WEB_HOST_DELAY = env_float("WEB_HOST_DELAY", 0.25)
WEB_CRAWL_DELAY_MAX = env_float("WEB_CRAWL_DELAY_MAX", 10.0)
WEB_ROBOTS_CACHE_SECONDS = env_int("WEB_ROBOTS_CACHE_SECONDS", 3600, minimum=0)
for _name in ("WEB_CONNECT_TIMEOUT", "WEB_TIMEOUT", "WEB_RETRY_WAIT_MAX", "WEB_HOST_DELAY", "WEB_CRAWL_DELAY_MAX"):
    if globals()[_name] < 0 or (_name.endswith("TIMEOUT") and globals()[_name] == 0):
        raise SettingsError(f"{_name}={globals()[_name]:g} must be positive.")
