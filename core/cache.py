"""The shared cache (Redis) with one client, and so one connection pool, per process.

Django keeps a cache object per thread and per async context, and its ``RedisCache`` builds a new client
(a new connection pool) for each object. Under ASGI every request runs in a context of its own, so every
request that touched the cache (the API's throttles: a get and a set) opened a new TCP connection to Redis,
with its handshake, and left it for the garbage collector. Here every ``RedisCache`` of the process with the
same servers and options shares one client; redis-py's pool is thread-safe and starts afresh in a forked
child.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    @cached_property
    def _cache(self):
        key = (self._class, tuple(self._servers), repr(sorted(self._options.items())))
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
        return client

    def redis(self):
        """This process's Redis client for the cache's server (for the atomic throttle, core/throttling.py);
        its keys take ``make_key`` like the cache's own, so ``clear()`` and ``delete_many`` reach them."""
        return self._cache.get_client(write=True)
