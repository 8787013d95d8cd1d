"""Production settings pass Django's deploy check with a proper environment and refuse a secret key that
anyone could know; the websocket handshake accepts only this site's own origin (scheme, host and port
exactly) or one listed in CSRF_TRUSTED_ORIGINS."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection

from talkforge.asgi import application
from talkforge.settings.secret_key import secret_key_problem
from tests.conftest import ROOT

GOOD_KEY = secrets.token_urlsafe(50)


def production_env(**env) -> dict[str, str]:
    """A proper production environment: PostgreSQL, a real key, the site's host name."""
    db = connection.settings_dict
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DJANGO_", "SECRET_KEY", "DEBUG", "SECURE_", "ALLOWED_HOSTS", "CSRF_", "DATABASE_")
        )
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="talkforge.settings.production",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        SECRET_KEY=GOOD_KEY,
        ALLOWED_HOSTS="talkforge.example.com",
        CSRF_TRUSTED_ORIGINS="https://talkforge.example.com",
    )
    environment.update(env)
    return environment


def manage(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=production_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- manage.py check --deploy --------------------------------------------------------------------------


def test_deploy_check_is_clean_with_a_proper_environment(db):
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_https_settings_can_be_turned_off_for_a_plain_http_stack(db):
    # docker/.env.example before a TLS proxy is in front: the deploy check then says what is missing.
    result = manage("check", "--deploy", SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="0")
    assert result.returncode == 0, result.stderr
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


def test_a_bad_https_setting_stops_start_up_naming_it(db):
    result = manage("check", SECURE_HSTS_SECONDS="a year")
    assert result.returncode != 0
    assert "SECURE_HSTS_SECONDS='a year' is not an integer." in result.stderr


def test_an_early_turn_that_would_come_after_the_turn_ends_stops_start_up(db):
    result = manage("check", CHAT_EARLY_TURN_MS="500")
    assert result.returncode != 0
    assert "CHAT_EARLY_TURN_MS=500 must be below the 500 ms that end a turn (or 0: off)." in result.stderr


def test_more_request_threads_than_pooled_connections_stops_start_up(db):
    result = manage("check", WEB_THREADS="12", DATABASE_POOL_MAX_SIZE="8")
    assert result.returncode != 0
    assert "WEB_THREADS=12 is above DATABASE_POOL_MAX_SIZE=8" in result.stderr


# --- the secret key ------------------------------------------------------------------------------------


def env_example_key() -> str:
    for line in (ROOT / "docker" / ".env.example").read_text().splitlines():
        if line.startswith("SECRET_KEY="):
            return line.split("=", 1)[1]
    raise AssertionError("docker/.env.example sets no SECRET_KEY")


@pytest.mark.parametrize(
    "key",
    [env_example_key(), "a-short-but-random-key-7f3k", "x" * 80],
    ids=["env-example-placeholder", "short", "few-characters"],
)
def test_production_refuses_a_weak_key_saying_how_to_make_one(key):
    result = manage("check", SECRET_KEY=key)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY " in result.stderr
    assert "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'" in result.stderr
    assert key not in result.stderr, "the refusal must not print the key"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("change-me-long-random-string", "placeholder"),
        (GOOD_KEY + "-CHANGE-ME", "placeholder"),
        ("django-insecure-" + secrets.token_urlsafe(50), "django-admin startproject"),
        ("dev-only-insecure-key-never-used-in-production-0123456789", "placeholder"),
        ("test-only-secret-key-not-for-production-use-0123456789", "placeholder"),
        (GOOD_KEY[:49], "49 characters long; production needs at least 50"),
        ("abcd" * 20, "fewer than 5 different characters"),
    ],
)
def test_weak_keys_are_named_for_what_is_wrong(key, reason):
    problem = secret_key_problem(key)
    assert problem is not None and reason in problem
    assert key not in problem


def test_a_long_random_key_is_accepted():
    assert secret_key_problem(GOOD_KEY) is None
    assert secret_key_problem(secrets.token_hex(32)) is None


def test_every_key_written_in_the_repository_is_refused():
    """Example files, development and test settings: whatever key the repository spells out is public."""
    quoted = re.compile(r"""["']([^"'\s]{16,})["']""")
    assigned = re.compile(r"SECRET_KEY=([A-Za-z0-9_\-]{8,})(?:\s|$)")
    found = {}
    for path in [*ROOT.glob("docker/*"), *ROOT.glob("docker/.env*"), *ROOT.glob("talkforge/settings/*.py"),
                 *ROOT.glob("bench/*.py"), *ROOT.glob("scripts/*"), ROOT / "README.md"]:  # fmt: skip
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "SECRET_KEY" in line:
                found |= {key: path.name for key in quoted.findall(line) + assigned.findall(line)}
    # The scan reads what it should: the example's placeholder, the development, test and bench keys.
    assert {"change-me-long-random-string", "dev.py", "test.py", "_harness.py"} <= {*found, *found.values()}
    for key, where in found.items():
        assert secret_key_problem(key) is not None, f"{where} spells out a key production would accept"


# --- the websocket origin ------------------------------------------------------------------------------


def handshake(client, user, origin: str | None, host: str = "localhost:8000", **headers) -> bool:
    """Open the user socket as a browser signed in as ``user`` would; True when it was accepted."""
    client.force_login(user)
    sent = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), (b"host", host.encode())]
    if origin is not None:
        sent.append((b"origin", origin.encode()))
    sent += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]

    async def run():
        communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=sent)
        connected, _ = await communicator.connect(timeout=5)
        if connected:
            await communicator.disconnect()
        return connected

    return async_to_sync(run)()


@pytest.fixture
def site(settings):
    settings.ALLOWED_HOSTS = ["localhost", "talkforge.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []
    settings.SECURE_PROXY_SSL_HEADER = None
    return settings


@pytest.mark.django_db(transaction=True)
def test_the_sites_own_origin_is_accepted(client, alice, site):
    assert handshake(client, alice, "http://localhost:8000") is True
    assert handshake(client, alice, "http://LOCALHOST:8000") is True
    assert (
        handshake(client, alice, "http://localhost", host="localhost:80") is True
    )  # default port spelled out


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:9000",  # another port of the same host: another service there
        "http://localhost",  # port 80, not 8000
        "https://localhost:8000",  # another scheme
        "http://talkforge.example.com:8000",  # another allowed host, but not the one asked
        "http://evil.example:8000",
        "null",
        "http://localhost:8000/path",
        "localhost:8000",
    ],
)
def test_any_other_origin_is_refused(client, alice, site, origin):
    assert handshake(client, alice, origin) is False


@pytest.mark.django_db(transaction=True)
def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_page(client, alice, site):
    # A rebound DNS name pointing at us: its page's origin equals the Host it sends, but we do not serve it.
    assert handshake(client, alice, "http://rebound.example:8000", host="rebound.example:8000") is False


@pytest.mark.django_db(transaction=True)
def test_csrf_trusted_origins_are_accepted_exactly(client, alice, site):
    site.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.example.org"]
    assert handshake(client, alice, "https://app.example.com") is True
    assert handshake(client, alice, "https://app.example.com:443") is True
    assert handshake(client, alice, "https://app.example.com:8443") is False
    assert handshake(client, alice, "http://app.example.com") is False
    assert handshake(client, alice, "https://www.example.org") is False  # no wildcards here


@pytest.mark.django_db(transaction=True)
def test_the_proxys_scheme_counts_only_when_configured(client, alice, site):
    behind_proxy = {"host": "talkforge.example.com", "x_forwarded_proto": "https"}
    # Without SECURE_PROXY_SSL_HEADER the connection is what it is: plain ws, so the origin is http://.
    assert handshake(client, alice, "https://talkforge.example.com", **behind_proxy) is False
    assert handshake(client, alice, "http://talkforge.example.com", **behind_proxy) is True
    site.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert handshake(client, alice, "https://talkforge.example.com", **behind_proxy) is True
    assert handshake(client, alice, "http://talkforge.example.com", **behind_proxy) is False


@pytest.mark.django_db(transaction=True)
def test_programs_without_an_origin_still_connect(client, alice, site):
    assert handshake(client, alice, None) is True
