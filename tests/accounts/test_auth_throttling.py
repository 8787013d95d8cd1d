"""Password guessing is stopped: the portal login and POST /api/token/ lock an account out at one client
address after LOGIN_FAILURE_LIMIT failures (django-axes), the API throttles count per client address in
the shared Redis cache, and the client address comes from TRUSTED_PROXY_COUNT (X-Forwarded-For beyond the
trusted proxies is the client's own writing). /api/token/ answers every refusal alike: it never tells
which usernames exist, and malformed credentials are a 400, never a 500."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from axes.models import AccessAttempt
from django.core.cache import cache
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiToken
from core.proxies import client_address
from tests.conftest import ROOT, subprocess_env

RIGHT = "alice-password-1"
LOCKOUT_WORDS = "Too many failed sign-ins for this account from your address. Wait 15 minutes"


@pytest.fixture(autouse=True)
def fresh_throttle_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def lockout_settings(settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.LOGIN_COOLOFF_MINUTES = 15
    return settings


@pytest.fixture
def proxies(settings):
    """Set TRUSTED_PROXY_COUNT the way the settings module does: for the lockout and for DRF."""

    def trust(count: int) -> None:
        settings.TRUSTED_PROXY_COUNT = count
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}

    return trust


@pytest.fixture
def rates(monkeypatch):
    """Real throttle rates (test settings raise them). DRF reads the rates once, into the class."""

    def set_rates(anon: str = "100000/min", user: str = "100000/min") -> None:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": anon, "user": user})

    return set_rates


def portal_login(client, password: str, username: str = "alice", **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def token_post(client, payload, **extra):
    return client.post("/api/token/", json.dumps(payload), content_type="application/json", **extra)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


# --- the lockout ---------------------------------------------------------------------------------------


def test_portal_login_refuses_the_right_password_after_30_wrong_ones(client, alice, lockout_settings):
    for n in range(30):
        assert portal_login(client, f"guess-{n}").status_code in {200, 429}
    response = portal_login(client, RIGHT)
    assert response.status_code == 429
    assert not signed_in(client)
    # The page says what happened and when to come back, instead of the form's generic error.
    page = response.content.decode()
    assert LOCKOUT_WORDS in page and "each attempt before then restarts the wait" in page
    assert response["Retry-After"] == "900"


def test_token_endpoint_refuses_the_right_password_after_30_wrong_ones(client, alice, lockout_settings):
    codes = [
        token_post(client, {"username": "alice", "password": f"guess-{n}"}).status_code for n in range(30)
    ]
    # The first failures are ordinary refusals; from the limit on, the lockout answers.
    assert codes[:4] == [400] * 4 and set(codes[4:]) == {429}
    response = token_post(client, {"username": "alice", "password": RIGHT})
    assert response.status_code == 429
    assert LOCKOUT_WORDS in response.json()["detail"]
    assert response["Retry-After"] == "900"
    assert not ApiToken.objects.exists()


def test_the_lock_holds_one_account_at_one_address(client, alice, bob, lockout_settings):
    for n in range(5):
        portal_login(client, f"guess-{n}")
    assert portal_login(client, RIGHT).status_code == 429
    # bob at the same address, and alice at her own, still sign in: a stranger cannot lock her out.
    assert portal_login(client, "bob-password-1", username="bob").status_code == 302
    elsewhere = client.__class__()
    assert portal_login(elsewhere, RIGHT, REMOTE_ADDR="192.0.2.44").status_code == 302
    assert (
        token_post(elsewhere, {"username": "alice", "password": RIGHT}, REMOTE_ADDR="192.0.2.45").status_code
        == 201
    )


def test_the_portal_and_the_api_share_one_count(client, alice, lockout_settings):
    for n in range(3):
        portal_login(client, f"guess-{n}")
    for n in range(2):
        token_post(client, {"username": "alice", "password": f"api-guess-{n}"})
    assert token_post(client, {"username": "alice", "password": RIGHT}).status_code == 429
    assert portal_login(client, RIGHT).status_code == 429


def test_a_success_before_the_limit_forgets_the_failures(client, alice, lockout_settings):
    for n in range(4):
        token_post(client, {"username": "alice", "password": f"guess-{n}"})
    assert token_post(client, {"username": "alice", "password": RIGHT}).status_code == 201
    for n in range(4):
        assert token_post(client, {"username": "alice", "password": f"again-{n}"}).status_code == 400
    assert token_post(client, {"username": "alice", "password": RIGHT}).status_code == 201


def test_locked_out_unknown_and_real_users_read_the_same(client, alice, lockout_settings):
    answers = {}
    for username in ("alice", "nobody"):
        for n in range(6):
            response = token_post(client, {"username": username, "password": f"guess-{n}"})
        answers[username] = (response.status_code, response.json())
    assert answers["alice"] == answers["nobody"]
    assert answers["alice"][0] == 429


# --- the client address: only trusted proxies count -----------------------------------------------------


def test_x_forwarded_for_does_not_reset_the_lockout_without_trusted_proxies(client, alice, lockout_settings):
    assert getattr(lockout_settings, "TRUSTED_PROXY_COUNT", 0) == 0  # the default
    for n in range(30):
        portal_login(client, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert portal_login(client, RIGHT, HTTP_X_FORWARDED_FOR="203.0.113.200").status_code == 429
    refused = token_post(
        client, {"username": "alice", "password": RIGHT}, HTTP_X_FORWARDED_FOR="203.0.113.201"
    )
    assert refused.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


def test_x_forwarded_for_does_not_reset_the_api_throttle_without_trusted_proxies(client, db, settings, rates):
    assert getattr(settings, "TRUSTED_PROXY_COUNT", 0) == 0  # the default
    rates(anon="3/min")
    codes = [
        token_post(
            client, {"username": "x", "password": "y"}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"
        ).status_code
        for n in range(5)
    ]
    assert codes == [400, 400, 400, 429, 429]


def test_one_trusted_proxy_gives_the_address_it_saw(client, alice, lockout_settings, proxies, rates):
    proxies(1)
    # The proxy connects from 127.0.0.1 and appends the address it saw; what is left of it, anyone wrote.
    for n in range(6):
        portal_login(client, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"10.9.9.{n}, 203.0.113.7")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}
    spoofed = token_post(
        client, {"username": "alice", "password": RIGHT}, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7"
    )
    assert spoofed.status_code == 429
    # Another client behind the same proxy is not locked out.
    other = token_post(client, {"username": "alice", "password": RIGHT}, HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert other.status_code == 201

    # The API throttle counts the same client.
    rates(anon="2/min")
    cache.clear()
    seen = [
        token_post(
            client, {"username": "x", "password": "y"}, HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 192.0.2.5"
        ).status_code
        for n in range(3)
    ]
    assert seen == [400, 400, 429]
    assert (
        token_post(client, {"username": "x", "password": "y"}, HTTP_X_FORWARDED_FOR="192.0.2.6").status_code
        == 400
    )


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (0, "203.0.113.7", "127.0.0.1"),
        (1, "", "127.0.0.1"),
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "1.2.3.4, 203.0.113.7", "203.0.113.7"),
        (2, "1.2.3.4, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
        (1, "1.2.3.4,  2001:db8::1 ", "2001:db8::1"),
        (1, "1.2.3.4, not-an-address", "127.0.0.1"),
    ],
)
def test_client_address_takes_the_nth_address_from_the_right(settings, count, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    assert client_address(RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", **extra)) == expected


# --- the counters are shared by every process ----------------------------------------------------------


def test_api_throttle_counters_are_shared_between_processes(client, db, rates):
    rates(anon="2/min")
    assert [token_post(client, {"username": "x", "password": "y"}).status_code for _ in range(2)] == [
        400,
        400,
    ]
    # Another web process (same settings, same Redis) sees this address's quota used up.
    probe = textwrap.dedent(
        """
        import django
        django.setup()
        from django.contrib.auth.models import AnonymousUser
        from django.test import RequestFactory
        from core.throttling import AnonRateThrottle
        request = RequestFactory().post("/api/token/", REMOTE_ADDR="127.0.0.1")
        request.user = AnonymousUser()
        print("allowed" if AnonRateThrottle().allow_request(request, None) else "throttled")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=subprocess_env(API_ANON_THROTTLE_RATE="2/min"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "throttled"


def test_signed_in_api_users_are_throttled_per_user(client, alice, bob, rates):
    rates(user="3/min")
    client.force_login(alice)
    assert [client.get("/api/jobs/").status_code for _ in range(4)] == [200, 200, 200, 429]
    client.force_login(bob)
    assert client.get("/api/jobs/").status_code == 200


def test_a_throttled_answer_says_when_the_oldest_counted_request_leaves_the_window(client, alice, rates):
    rates(user="2/min")
    client.force_login(alice)
    assert [client.get("/api/jobs/").status_code for _ in range(2)] == [200, 200]
    response = client.get("/api/jobs/")
    assert response.status_code == 429
    assert 55 <= int(response["Retry-After"]) <= 60  # DRF rounds the wait up
    assert "Expected available in" in response.json()["detail"]


def test_concurrent_requests_of_one_user_are_all_counted(alice, rates):
    """DRF's throttle reads its list of times, then writes it back: two requests at the same moment (two
    web processes) both read the same list and one count is lost. The sorted set is updated by one script
    Redis runs alone, so exactly the rate's number of requests is admitted however many race."""
    import threading

    from django.test import RequestFactory

    from core.throttling import UserRateThrottle

    rates(user="10/min")
    start = threading.Barrier(8)
    admitted = []

    def burst():
        start.wait()
        for _ in range(5):
            request = RequestFactory().get("/api/jobs/", REMOTE_ADDR="127.0.0.1")
            request.user = alice
            admitted.append(UserRateThrottle().allow_request(request, None))

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 10 and admitted.count(False) == 30


def test_requests_in_contexts_of_their_own_share_the_redis_connections(client, alice, rates, monkeypatch):
    """Under ASGI each request runs in a context of its own, where Django makes a new cache object: the
    throttle's counters must still go over the process's pooled connections, not a new TCP connection to
    Redis per request (core/cache.py)."""
    import contextvars

    import redis.connection

    rates(user="3/min")
    client.force_login(alice)
    cache.get("warm-up")  # this process's pool holds a connection now
    opened = []
    connect = redis.connection.Connection._connect
    monkeypatch.setattr(
        redis.connection.Connection, "_connect", lambda self: opened.append(1) or connect(self)
    )
    statuses = []
    for _ in range(4):  # one after another, each in a context of its own, as ASGI runs them
        statuses.append(contextvars.Context().run(client.get, "/api/jobs/").status_code)
    assert statuses == [200, 200, 200, 429]  # still one count per user across the contexts
    assert opened == []


# --- /api/token/ refuses alike, never 500 -------------------------------------------------------------


def unknown_user_answer(client):
    response = token_post(client, {"username": "nobody-here", "password": "whatever-1"})
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "alice", "password": 123},
        {"username": "alice", "password": ["alice-password-1"]},
        {"username": "alice", "password": {"value": "alice-password-1"}},
        {"username": "alice", "password": None},
        {"username": "alice", "password": True},
        {"username": ["alice"], "password": "alice-password-1"},
        {"username": {"name": "alice"}, "password": "alice-password-1"},
        {"username": 7, "password": "alice-password-1"},
        {"username": "alice"},
        {"password": "alice-password-1"},
        {"username": "", "password": ""},
        {"username": "a" * 100_000, "password": "alice-password-1"},
        {"username": "alice", "password": "p" * 1_000_000},
        {"username": "ali\x00ce", "password": "alice-password-1"},
        ["alice", "alice-password-1"],
        "alice:alice-password-1",
        42,
    ],
)
def test_malformed_credentials_get_the_wrong_password_answer(client, alice, payload):
    response = token_post(client, payload)
    assert (response.status_code, response.json()) == unknown_user_answer(client)
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_wrong_credentials_for_real_and_unknown_users_are_indistinguishable(client, alice):
    real = token_post(client, {"username": "alice", "password": "not-her-password"})
    assert (real.status_code, real.json()) == unknown_user_answer(client)
    assert real.content == token_post(client, {"username": "nobody-here", "password": "x"}).content
