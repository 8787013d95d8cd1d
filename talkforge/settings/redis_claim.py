"""A Redis database that only this test run uses.

Runs on one machine share one Redis server, and the suite empties its database before each test that uses
it; so each run claims one of databases 1–15 that no other run holds: an atomic ``SET NX`` of a lock key
in database 0 (``talkforge:test-redis-claim:<n>``) with an expiry, refreshed while the run lives and
deleted when it exits. A run killed without its exit handlers frees its database when the key expires.
The test settings claim one when ``REDIS_URL`` is not given (the processes the suite starts get the
run's ``REDIS_URL`` explicitly, and so use the same database).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import uuid

import redis

KEY = "talkforge:test-redis-claim:{}"
TTL_SECONDS = 60
# Compare-and-act on the lock key, so a run only ever refreshes or frees its own claim.
_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Claim:
    """Database ``number`` of the server at ``server`` (``redis://host:port``), held by this process."""

    def __init__(self, client: redis.Redis, server: str, number: int, token: str):
        self.client, self.server, self.number, self.token = client, server, number, token
        self.owner_pid = os.getpid()
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"{self.server}/{self.number}"

    def refresh(self) -> bool:
        """Extend the claim; False when it is no longer ours (it expired and another run took it)."""
        return bool(self.client.eval(_REFRESH, 1, KEY.format(self.number), self.token, TTL_SECONDS))

    def keep(self) -> Claim:
        """Refresh the claim in the background until :meth:`release` (or the process ends)."""

        def beat() -> None:
            while not self._stop.wait(TTL_SECONDS / 3):
                # Redis briefly away: the next beat tries again, well before the expiry.
                with contextlib.suppress(redis.RedisError):
                    self.refresh()

        threading.Thread(target=beat, name=f"redis-claim-{self.number}", daemon=True).start()
        atexit.register(self.release)
        return self

    def release(self) -> None:
        """Free the database, from the process that claimed it only (a forked child exiting does not)."""
        self._stop.set()
        if os.getpid() != self.owner_pid:
            return
        with contextlib.suppress(redis.RedisError):  # else the key expires on its own
            self.client.eval(_RELEASE, 1, KEY.format(self.number), self.token)


def claim(server: str = "redis://127.0.0.1:6379", databases: range = range(1, 16)) -> Claim:
    """Claim the first of ``databases`` that no other live run holds; RuntimeError when all are held."""
    client = redis.Redis.from_url(f"{server}/0", socket_timeout=5)
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    for number in databases:
        if client.set(KEY.format(number), token, nx=True, ex=TTL_SECONDS):
            return Claim(client, server, number, token)
    raise RuntimeError(
        f"Every Redis test database ({databases.start}–{databases.stop - 1}) is held by another test run "
        f"on {server}: wait for one to finish, or give this run its own REDIS_URL."
    )
