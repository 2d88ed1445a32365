"""The process's one Redis client for application keys (vector hand-off, embed claims, feedback
dirty sets, coalescing flags); the broker and the channel layer have their own connections."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)
