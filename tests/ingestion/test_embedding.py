"""How many CPU threads the embedding model gets in each kind of process."""

import os

from ingestion import embedding
from ingestion.embedding import embedding_threads


def test_a_worker_pool_shares_the_cores_and_the_setting_wins(settings, monkeypatch):
    settings.EMBEDDING_THREADS = 0
    monkeypatch.delenv("FRESHET_WORKER_PROCESSES", raising=False)
    monkeypatch.setattr(embedding, "_serving", False)
    assert embedding_threads() == 0  # a command: the runtime's own choice
    monkeypatch.setattr(embedding, "_serving", True)  # config/asgi.py: a web process embeds queries
    settings.EMBEDDING_WEB_THREADS = 0
    assert embedding_threads() == 0  # the default: every core
    settings.EMBEDDING_WEB_THREADS = 1
    assert embedding_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setenv("FRESHET_WORKER_PROCESSES", "2")
    assert embedding_threads() == 4
    monkeypatch.setenv("FRESHET_WORKER_PROCESSES", "16")
    assert embedding_threads() == 1  # never none
    settings.EMBEDDING_THREADS = 3
    assert embedding_threads() == 3
