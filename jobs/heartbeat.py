"""The housekeeping process's heartbeat: a timestamp in Redis, written every round, read by ``/readyz``.

A key with an expiry rather than a database row: it is written every few seconds, and losing it (Redis
flushed or restarted) only makes readiness report housekeeping as missing until the next round.
"""

from __future__ import annotations

import time

import redis
from django.conf import settings

HOUSEKEEPING_HEARTBEAT_KEY = "talkforge:housekeeping:heartbeat"


def housekeeping_beat(connection: redis.Redis) -> None:
    """Note that housekeeping is alive now. The key outlives the staleness limit a little, no more."""
    connection.set(
        HOUSEKEEPING_HEARTBEAT_KEY, f"{time.time():.3f}", ex=int(settings.HOUSEKEEPING_STALE_AFTER * 2) + 1
    )


def housekeeping_last_beat(connection: redis.Redis) -> float | None:
    """Unix time of the last round, or None when no housekeeping has beaten recently."""
    raw = connection.get(HOUSEKEEPING_HEARTBEAT_KEY)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
