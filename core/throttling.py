"""The API's rate throttles (DRF's ``AnonRateThrottle`` and ``UserRateThrottle``), counted in Redis in one
atomic step.

DRF's ``SimpleRateThrottle`` keeps each client's recent request times as a list in the cache: it reads the
list, trims it, decides, and writes it back (rest_framework/throttling.py ``allow_request`` and
``throttle_success``). That is two round trips to Redis and a pickled list of up to the rate's number of
floats each way, per request; and two requests of one client in two web processes at the same moment
both read the same list, so one of the two counts is lost (DRF's docs on throttling: "the built-in
throttle implementations are open to race conditions"). Here the same sliding window lives in a sorted
set of request times, trimmed, counted and added to by one Lua script that Redis runs atomically: one
round trip, nothing lost between processes. Same rates, same keys, same ``Retry-After`` as DRF.
"""

from __future__ import annotations

import functools
import secrets

from django.core.cache import cache
from rest_framework import throttling

# KEYS[1]: the client's key; ARGV: now (s), window (s), allowed requests per window, a unique member.
# Drops the times at or before now - window (as DRF pops them from its list), then admits the request if
# fewer than the limit remain. Answers {1} for an admitted request, {0, oldest time} for a refused one.
SLIDING_WINDOW = """
local key = KEYS[1]
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return {1}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, oldest[2] or ARGV[1]}
"""


@functools.cache
def _sliding_window():
    """SLIDING_WINDOW as a redis-py Script: run by its SHA, sent whole only when Redis lacks it."""
    return cache.redis().register_script(SLIDING_WINDOW)


class AtomicRateThrottleMixin:
    """``allow_request`` and ``wait`` of a ``SimpleRateThrottle`` over SLIDING_WINDOW."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        answer = _sliding_window()(
            keys=[cache.make_key(self.key)],
            args=[repr(self.now), self.duration, self.num_requests, f"{self.now!r}:{secrets.token_hex(4)}"],
            client=cache.redis(),
        )
        self.oldest = float(answer[1]) if len(answer) > 1 else None
        return bool(answer[0])

    def wait(self):
        """Seconds until the oldest counted request leaves the window: DRF's figure when one request is over
        the limit (``SimpleRateThrottle.wait`` with one request available)."""
        if self.oldest is None:
            return None
        return max(0.0, self.duration - (self.now - self.oldest))


class AnonRateThrottle(AtomicRateThrottleMixin, throttling.AnonRateThrottle):
    """Per client address (TRUSTED_PROXY_COUNT, core/proxies.py), for requests without a signed-in user."""


class UserRateThrottle(AtomicRateThrottleMixin, throttling.UserRateThrottle):
    """Per signed-in user (per client address without one)."""
