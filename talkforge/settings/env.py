"""Reading settings from the environment, failing loudly on values that make no sense.

Modelled on healthchecks' ``envbool``/``envint``: a typo in a deployment's environment must stop the
process at start-up with a message naming the variable, not surface later as odd behaviour.
"""

import ipaddress
import math
import os
import re
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use true or false.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below its minimum of {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below its minimum of {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    """A request rate as Django REST framework reads it: ``<number>/<s|m|h|d…>``, e.g. ``20/min``."""
    value = os.environ.get(name) or default
    if not re.fullmatch(r"[0-9]+/(s|sec|second|m|min|minute|h|hour|d|day)", value.strip()):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate: use a number per s, min, hour or day, like 20/min."
        )
    return value.strip()


SUPPORTED_DATABASES = {"postgres", "postgresql", "sqlite"}


def database_from_url(url: str) -> dict:
    """Turn ``postgres://user:pass@host:port/name`` or ``sqlite:///path`` into a DATABASES entry.

    dj-database-url reads the URL (quoting, ports, ``?sslmode=…`` into OPTIONS); this adds what it lets
    through silently: another database than the two we run on, a URL without a database name, and
    ``sqlite://`` (an in-memory database that every process would see empty)."""
    scheme = urlparse(url).scheme
    if scheme not in SUPPORTED_DATABASES:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {scheme!r} is not supported: use postgres://… or sqlite:///…"
        )
    try:
        config = dj_database_url.parse(url)
    except ValueError as error:
        raise ImproperlyConfigured(f"DATABASE_URL={url!r} cannot be read: {error}") from None
    if scheme == "sqlite":
        if config["NAME"] in {"", ":memory:"}:
            raise ImproperlyConfigured(
                f"DATABASE_URL={url!r} names no SQLite file: use sqlite:////abs/path.db"
            )
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": config["NAME"], "OPTIONS": {"timeout": 20}}
    if not config["NAME"]:
        raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database.")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": config["NAME"],
        "USER": config["USER"] or "",
        "PASSWORD": config["PASSWORD"] or "",
        "HOST": config["HOST"] or "",
        "PORT": str(config["PORT"] or ""),
        "OPTIONS": dict(config.get("OPTIONS", {})),
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
    }


def database_from_environment(default_url: str) -> dict:
    """The ``default`` database: ``DATABASE_URL`` plus how this process holds its connections.

    PostgreSQL goes through psycopg's connection pool (Django's ``OPTIONS["pool"]``): each process keeps
    between ``DATABASE_POOL_MIN_SIZE`` and ``DATABASE_POOL_MAX_SIZE`` connections, a request borrows one
    and gives it back when it ends, and a request that finds every connection busy waits up to
    ``DATABASE_POOL_TIMEOUT`` seconds. Under ASGI each request runs on a thread of its own, so persistent
    per-thread connections (CONN_MAX_AGE > 0) grow with the number of clients until PostgreSQL refuses
    more; the pool bounds them. ``DATABASE_POOL=false`` (behind PgBouncer in transaction mode, which pools
    already) opens a connection per request instead, or keeps it ``DATABASE_CONN_MAX_AGE`` seconds."""
    config = database_from_url(env_str("DATABASE_URL", default_url))
    if config["ENGINE"] != "django.db.backends.postgresql":
        return config
    # PgBouncer in transaction mode cannot keep a server-side cursor (.iterator()) open across statements.
    config["DISABLE_SERVER_SIDE_CURSORS"] = env_bool("DISABLE_SERVER_SIDE_CURSORS", False)
    # The statements every API request runs (core/statements.py) are prepared once they have run this many
    # times on a connection; Django's other queries bind their values on the client and are never prepared.
    # Off (None) behind a PgBouncer older than 1.21 in transaction mode, which cannot keep them.
    prepared = env_bool("DATABASE_PREPARED_STATEMENTS", True)
    config["OPTIONS"]["prepare_threshold"] = 5 if prepared else None
    if not env_bool("DATABASE_POOL", True):
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0)
        return config
    min_size = env_int("DATABASE_POOL_MIN_SIZE", 2, minimum=0)
    max_size = env_int("DATABASE_POOL_MAX_SIZE", 10, minimum=1)
    if max_size < min_size:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_MAX_SIZE={max_size} is below DATABASE_POOL_MIN_SIZE={min_size}: "
            "raise the maximum or lower the minimum."
        )
    config["OPTIONS"]["pool"] = {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 10.0, minimum=0.1),
    }
    # The pool hands out only healthy connections and takes each back at the end of the request:
    # Django refuses CONN_MAX_AGE > 0 with a pool, and its own health check would be a second one.
    config["CONN_MAX_AGE"] = 0
    config["CONN_HEALTH_CHECKS"] = False
    return config


def env_networks(name: str, default: list[str]) -> list[str]:
    """Comma-separated IP networks (``10.0.0.0/8,127.0.0.1``), each checked; kept as strings."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP network like 10.0.0.0/8.") from None
    return networks
