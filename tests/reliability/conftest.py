"""Fixtures of the reliability tests: the search index of either engine for tests that run in
this process (`index`), and the Elasticsearch-API emulator of the contract suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ingestion.search_index import SearchIndex, search_index, search_index_reset
from tests.contract.conftest import elasticsearch_url  # noqa: F401  (the session's emulator)


@pytest.fixture(params=["lancedb", "elasticsearch"])
def index(request, settings, tmp_path) -> Iterator[SearchIndex]:
    """This process's search index (`search_index()`), of each engine, fresh and empty."""
    if request.param == "elasticsearch":
        settings.ELASTICSEARCH_URL = request.getfixturevalue("elasticsearch_url")
        settings.ELASTICSEARCH_INDEX = f"freshet-reliability-{uuid.uuid4().hex[:8]}"
    else:
        settings.ELASTICSEARCH_URL = ""
        settings.SEARCH_INDEX_DIR = tmp_path / "lancedb"
    search_index_reset()
    engine = search_index()
    yield engine
    engine.drop()
    search_index_reset()
