"""Live events: job progress and log lines to websockets through the Channels layer.

Groups: ``job_<id>`` (everything about one job, for its page) and ``user_<id>`` (status and progress of
all of a user's jobs, for the dashboard). Event ``type`` values name the consumer handler
(``job.log`` → ``job_log``).

Sync code (RQ workers, views) hands events to one background thread that owns an asyncio loop and a
single sender task: events leave in the order they were published, and the layer's Redis connection is
reused instead of being made anew by ``async_to_sync`` for every line.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)


def job_group(job_id: int) -> str:
    return f"job_{job_id}"


def user_group(user_id: int) -> str:
    return f"user_{user_id}"


class EventPublisher:
    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._pid = None

    def _ensure_started(self) -> None:
        import os

        if self._loop is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                return
            ready = threading.Event()
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                self._queue = asyncio.Queue()
                loop.create_task(self._send_forever())
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="talkforge-events", daemon=True).start()
            ready.wait()
            self._loop, self._pid = loop, os.getpid()

    async def _send_forever(self) -> None:
        layer = get_channel_layer()
        while True:
            group, message, done = await self._queue.get()
            try:
                if group is not None:
                    await layer.group_send(group, message)
            except Exception:  # a lost event must not stop the ones after it
                logger.exception("could not publish %s to %s", message.get("type"), group)
            finally:
                if done is not None:
                    done.set()

    def publish(self, group: str, message: dict) -> None:
        """Queue ``message`` for ``group``; returns at once."""
        self._ensure_started()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (group, message, None))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far has been handed to the layer."""
        if self._loop is None:
            return True
        done = threading.Event()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (None, None, done))
        return done.wait(timeout)


class PubSubPublisher:
    """The fast path for Channels' Redis pub/sub layer on one Redis: a plain synchronous PUBLISH, in the
    layer's own wire format (its serializer, ``<prefix>__group__<group>`` channels), from the calling
    thread. No event-loop hop and no asyncio Redis client per message: the runner's CPU per log line
    dropped by about a third (bench/progress.py), and ordering is simply the caller's."""

    def __init__(self, layer, prefix: str):
        import redis

        self._layer, self._prefix = layer, prefix
        self._redis = redis.Redis.from_url(settings.REDIS_URL)

    def publish(self, group: str, message: dict) -> None:
        try:
            self._redis.publish(f"{self._prefix}__group__{group}", self._layer.serialize(message))
        except Exception:  # a lost live event must never break the job that raised it
            logger.exception("could not publish %s to %s", message.get("type"), group)

    def flush(self, timeout: float = 5.0) -> bool:
        return True


def _publisher():
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = get_channel_layer()
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    if isinstance(layer, RedisPubSubChannelLayer) and config.get("hosts") == [settings.REDIS_URL]:
        return PubSubPublisher(layer, config.get("prefix", "asgi"))
    return EventPublisher()


class _LazyPublisher:
    """Chosen on first use (settings are not ready at import time)."""

    _chosen = None

    def __getattr__(self, name):
        if _LazyPublisher._chosen is None:
            _LazyPublisher._chosen = _publisher()
        return getattr(_LazyPublisher._chosen, name)


publisher = _LazyPublisher()
atexit.register(lambda: publisher.flush(2.0))


def publish(group: str, message: dict) -> None:
    publisher.publish(group, message)


def publish_on_commit(group: str, message: dict) -> None:
    """Events raised inside a transaction leave only once it has committed (and never if it rolls back)."""
    transaction.on_commit(lambda: publisher.publish(group, message))


def job_status_message(job) -> dict:
    return {
        "type": "job.status",
        "job": job.pk,
        "avatar": job.avatar_id,  # pages of an avatar refresh when one of its jobs starts or ends
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "eta_seconds": job.eta_seconds,
        "error": job.error,
        "node": job.node.name if job.node_id else None,
        "gpu": job.gpu.label if job.gpu_id else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def job_status_publish(job, *, on_commit: bool = True) -> None:
    """Tell the job's page and its owner's dashboard about a change of state."""
    message = job_status_message(job)
    send = publish_on_commit if on_commit else publish
    send(job_group(job.pk), message)
    send(user_group(job.owner_id), message)
