"""The pytest suite: real PostgreSQL and Redis, as in production.

Each test session uses its own Redis database (claimed in redis_claim.py, so no other run holds it) and
channel-layer prefix, so runs never touch another's keys.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/talkforge")
# A Redis database and channel prefix of this run's own; subprocesses (workers, the ASGI server) get the
# same values passed explicitly by the fixtures. The database is claimed (redis_claim.py), so two runs on
# one machine never share one.
if "REDIS_URL" not in os.environ:
    from .redis_claim import claim

    os.environ["REDIS_URL"] = claim().keep().url
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"tftest{os.getpid()}")
os.environ.setdefault(
    "MEDIA_ROOT", os.path.join(tempfile.gettempdir(), f"talkforge-test-{os.getpid()}", "media")
)
# One connection per thread, opened when needed and closed at the end of each request, as before the
# pool: pytest-django's transactions and the many short-lived servers and workers the suite starts stay
# simple. Tests of the production stack pass DATABASE_POOL=true to what they start (and
# `DATABASE_POOL=true pytest …` runs a file with the pool everywhere).
os.environ.setdefault("DATABASE_POOL", "false")
os.environ.setdefault("JOB_HEARTBEAT_INTERVAL", "0.5")
os.environ.setdefault("JOB_HEARTBEAT_TIMEOUT", "4")
os.environ.setdefault("JOB_KILL_GRACE", "2")
os.environ.setdefault("HOUSEKEEPING_INTERVAL", "0.5")
# The suite submits many jobs at once (fairness, soak); the quota tests set their own limits.
os.environ.setdefault("QUOTA_CONCURRENT_JOBS", "1000")
os.environ.setdefault("QUOTA_QUEUED_JOBS", "1000")
# The throttle counters live in Redis across tests: the suite's many API calls must not trip them.
# tests/accounts/test_auth_throttling.py sets real rates to test them.
os.environ.setdefault("API_ANON_THROTTLE_RATE", "100000/min")
os.environ.setdefault("API_USER_THROTTLE_RATE", "100000/min")

from .base import *  # noqa: E402, F403

DEBUG = False
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Concurrent test runs on one machine must not share (and destroy) each other's test database.
DATABASES["default"]["TEST"] = {"NAME": f"test_talkforge_{os.getpid()}"}  # noqa: F405
