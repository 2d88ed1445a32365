"""Fixtures of the connector tests: a real folder under the system's temporary directory (one of
FOLDER_SOURCE_ROOTS by default) and a folder source over it; a real local web server (`website`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestion.connectors import config_clean
from ingestion.models import Document, Source
from tests.conftest import wait_for
from tests.factories import SourceFactory


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "handbook"
    path.mkdir()
    return path


def folder_source(path: Path, **config) -> Source:
    return SourceFactory(kind=Source.Kind.FOLDER, config=config_clean("folder", {"path": str(path), **config}))


def settled(source: Source, *, count: int, timeout: float = 240) -> list[Document]:
    """Wait until `source` has `count` documents, all indexed or failed."""
    def done():
        documents = list(source.documents.all())
        final = (Document.Status.INDEXED, Document.Status.FAILED)
        if len(documents) == count and all(d.status in final for d in documents):
            return documents or [None]
        return None
    found = wait_for(done, timeout=timeout, message=f"{count} documents of {source} to settle")
    return [d for d in found if d is not None]


def changed_events(source: Source) -> int:
    """How many `freshet.document.changed` events (pipeline runs) the source's documents had."""
    from events.models import Event

    return Event.objects.filter(type="freshet.document.changed", data__source_id=source.pk).count()


# --- Web sources (url, sitemap, feed): a real HTTP server on loopback (websites.py) -----------
# The worker started for end-to-end tests inherits this environment: no politeness delay
# between two requests to the test server, short timeouts for the slow-body cases.
os.environ.setdefault("WEB_HOST_DELAY", "0")
os.environ.setdefault("WEB_TIMEOUT", "3")
os.environ.setdefault("WEB_RETRY_WAIT_MAX", "3")


@pytest.fixture
def website(settings):
    """A fresh local web server; robots.txt is read anew (no cache across tests)."""
    from config.redis_client import redis_client
    from ingestion.connectors import http
    from tests.ingestion.connectors.websites import Website

    settings.WEB_HOST_DELAY = 0
    settings.WEB_TIMEOUT = 3
    settings.WEB_RETRY_WAIT_MAX = 3
    http._ROBOTS.clear()
    site = Website()
    yield site
    site.close()
    http._ROBOTS.clear()
    for key in redis_client().scan_iter(f"{settings.REDIS_KEY_PREFIX}web:*"):
        redis_client().delete(key)
