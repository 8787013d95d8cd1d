"""RQ_QUEUES for django-rq's dashboard (/admin/django-rq/), which lists only the queues in that setting.

Jobs run on per-node queues (``node-<name>``, jobs/queue.py) that come and go with the nodes, so this
mapping adds, whenever it is read, every queue RQ has registered in Redis (its ``rq:queues`` set): the
dashboard then shows each node's queue with its jobs and workers. Nothing else reads RQ_QUEUES (the
platform's own code opens its queues directly), so the Redis call costs one dashboard page one SMEMBERS.
"""

from __future__ import annotations

QUEUE_KEY_PREFIX = "rq:queue:"  # rq/queue.py: Queue.redis_queue_namespace_prefix
QUEUES_SET = "rq:queues"  # rq/queue.py: Queue.redis_queues_keys


class KnownQueues(dict):
    def __init__(self, url: str, static: dict):
        super().__init__(static)
        self.url = url

    def _registered(self) -> dict:
        import redis

        try:
            keys = redis.Redis.from_url(self.url, socket_timeout=2).smembers(QUEUES_SET)
        except redis.RedisError:
            return {}  # the dashboard still shows the static ones (and says Redis is down on its own)
        names = (key.decode().removeprefix(QUEUE_KEY_PREFIX) for key in keys)
        return {
            name: {"URL": self.url, "DEFAULT_TIMEOUT": -1}
            for name in names
            if not dict.__contains__(self, name)
        }

    def items(self):
        return {**self._registered(), **dict(super().items())}.items()

    def keys(self):
        return dict(self.items()).keys()

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name) -> bool:
        return super().__contains__(name) or name in self._registered()

    def __getitem__(self, name):
        if super().__contains__(name):
            return super().__getitem__(name)
        return self._registered()[name]

    def get(self, name, default=None):
        return self[name] if name in self else default  # noqa: SIM401 - dict.get would skip __getitem__
