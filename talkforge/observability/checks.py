"""Readiness checks for ``/readyz``: the database, Redis, media storage, the node queues' workers and the
housekeeping heartbeat.

Each check runs in a daemon thread of its own and gets ``READINESS_TIMEOUT`` seconds: a database or
shared disk that hangs makes its check fail in time instead of hanging the probe. While a timed-out check
is still stuck, the next probe does not start another one of it (it fails at once), so a dead dependency
never piles up threads. Results carry only the check's name, ok and seconds, and a short fixed reason:
never an exception's text, which could name hosts or credentials.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connections

from jobs.heartbeat import housekeeping_last_beat


class CheckFailed(Exception):
    """A check's dependency answered, wrongly; the message is a short reason safe to show anyone."""


@dataclass
class CheckResult:
    ok: bool
    seconds: float
    reason: str = ""

    def as_dict(self) -> dict:
        result = {"ok": self.ok, "seconds": round(self.seconds, 4)}
        if self.reason:
            result["reason"] = self.reason
        return result


def health_redis() -> redis.Redis:
    """A Redis client that gives up within the readiness timeout (the shared one waits forever)."""
    timeout = settings.READINESS_TIMEOUT
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
    )


def check_database() -> None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connections["default"].close()  # this thread ends: so does its connection


def check_redis() -> None:
    client = health_redis()
    try:
        if not client.ping():
            raise CheckFailed("no PONG")
    finally:
        client.close()


def check_media() -> None:
    """Write, read back and delete a small file where uploads and results go."""
    payload = uuid.uuid4().hex.encode()
    name = default_storage.save(f".readyz/{payload.decode()}.txt", ContentFile(payload))
    try:
        with default_storage.open(name, "rb") as handle:
            if handle.read() != payload:
                raise CheckFailed("read back something else")
    finally:
        default_storage.delete(name)


def queue_workers(client: redis.Redis, queue_names: list[str]) -> dict[str, int]:
    """Live RQ workers registered for each queue: members of ``rq:workers:<queue>`` whose worker key still
    exists (a worker's key expires when it stops beating, RQ's worker_ttl)."""
    from rq.worker_registration import WORKERS_BY_QUEUE_KEY

    pipe = client.pipeline(transaction=False)
    for name in queue_names:
        pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
    members = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for keys in members:
        for key in keys:
            pipe.exists(key)
    alive = iter(pipe.execute())
    return {
        name: sum(bool(next(alive)) for _ in keys) for name, keys in zip(queue_names, members, strict=True)
    }


def enabled_queue_names() -> list[str]:
    from gpu_nodes.models import Node

    try:
        return [
            Node(name=name).queue_name
            for name in Node.objects.filter(enabled=True).values_list("name", flat=True)
        ]
    finally:
        connections["default"].close()


def check_workers() -> None:
    """Every enabled node's queue has at least one live worker (nothing to check without nodes)."""
    names = enabled_queue_names()
    if not names:
        return
    client = health_redis()
    try:
        counts = queue_workers(client, names)
    finally:
        client.close()
    if not all(counts.values()):
        raise CheckFailed("a node's queue has no worker")


def check_housekeeping() -> None:
    client = health_redis()
    try:
        beat = housekeeping_last_beat(client)
    finally:
        client.close()
    if beat is None:
        raise CheckFailed("no heartbeat")
    if time.time() - beat > settings.HOUSEKEEPING_STALE_AFTER:
        raise CheckFailed("heartbeat is stale")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "media": check_media,
    "workers": check_workers,
    "housekeeping": check_housekeeping,
}

_running: dict[str, threading.Thread] = {}
_running_lock = threading.Lock()


def _start(name: str, check: Callable[[], None], results: dict[str, CheckResult]) -> threading.Thread | None:
    """Run one check in a daemon thread; None when the previous run of this check is still stuck."""

    def run() -> None:
        started = time.monotonic()
        try:
            check()
        except CheckFailed as failure:
            results[name] = CheckResult(False, time.monotonic() - started, str(failure))
        except Exception as error:
            results[name] = CheckResult(False, time.monotonic() - started, type(error).__name__)
        else:
            results[name] = CheckResult(True, time.monotonic() - started)

    with _running_lock:
        previous = _running.get(name)
        if previous is not None and previous.is_alive():
            return None
        thread = threading.Thread(target=run, name=f"readyz-{name}", daemon=True)
        _running[name] = thread
        thread.start()
    return thread


def readiness(names: list[str] | None = None) -> dict[str, CheckResult]:
    """Run the named checks (all by default) side by side; each gets READINESS_TIMEOUT seconds."""
    wanted = names if names is not None else list(CHECKS)
    results: dict[str, CheckResult] = {}
    started = time.monotonic()
    threads = {name: _start(name, CHECKS[name], results) for name in wanted}
    answer = {}
    for name in wanted:
        thread = threads[name]
        if thread is None:
            answer[name] = CheckResult(False, 0.0, "timeout (still stuck since an earlier probe)")
            continue
        thread.join(max(0.0, settings.READINESS_TIMEOUT - (time.monotonic() - started)))
        # Copied out: a check that timed out may still write its result later.
        answer[name] = results.get(name) or CheckResult(False, time.monotonic() - started, "timeout")
    return answer
