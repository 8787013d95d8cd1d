"""The RQ/Redis connection every app shares: one Redis client per process and the queues by name."""

from __future__ import annotations

import functools

import redis
from django.conf import settings
from rq import Queue


@functools.cache
def redis_connection() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def queue_named(name: str) -> Queue:
    return Queue(name, connection=redis_connection(), default_timeout=-1)
