"""The vectors' claim check between the embed and index stages.

Vectors live in the search index only; between the two stages they wait in Redis under a key
per document version, so events stay small. If they expire before the index stage takes them,
that stage embeds the chunks again: a lost hand-off costs time, never the document.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings

from config.redis_client import redis_client

VECTORS_TTL_SECONDS = 24 * 3600


def _key(document_id: int, version: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}vectors:{document_id}:{version}"


def vectors_put(document_id: int, version: int, vectors: np.ndarray) -> None:
    redis_client().set(_key(document_id, version), vectors.astype(np.float32).tobytes(), ex=VECTORS_TTL_SECONDS)


def vectors_get(document_id: int, version: int, *, rows: int) -> np.ndarray | None:
    """The `rows` vectors left for this document version, or None if they are gone (or do not
    match: another number of chunks)."""
    raw = redis_client().get(_key(document_id, version))
    if not raw or len(raw) % (4 * rows):
        return None
    return np.frombuffer(raw, dtype=np.float32).reshape(rows, -1)


def vectors_waiting(document_id: int, version: int) -> bool:
    return bool(redis_client().exists(_key(document_id, version)))


def vectors_drop(versions: list[tuple[int, int]]) -> None:
    """Forget the vectors of these (document id, version) pairs, once they are in the index."""
    if versions:
        redis_client().delete(*(_key(document_id, version) for document_id, version in versions))
