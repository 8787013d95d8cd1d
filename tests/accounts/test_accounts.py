"""People and their API tokens: sign-up, log in and out, a token shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.urls import reverse

from accounts.models import ApiToken, User

JOBS_API = "/api/jobs/"


def api_get(client, key: str, path: str = JOBS_API, scheme: str = "Token"):
    return client.get(path, HTTP_AUTHORIZATION=f"{scheme} {key}")


def rotate_and_read_key(client) -> str:
    """Press "Create/Rotate token" on the profile page and read the key off the page it leads to."""
    response = client.post(reverse("token-rotate"), follow=True)
    assert response.status_code == 200
    match = re.search(r'<code id="new-token">([^<]+)</code>', response.content.decode())
    assert match, "the new key is shown on the page after rotating"
    return match.group(1)


# --- sign-up, log in, log out --------------------------------------------------------------------------


def test_signup_creates_the_user_and_logs_them_in(client, db):
    response = client.post(
        reverse("signup"),
        {
            "username": "carol",
            "email": "carol@example.org",
            "password1": "a-long-enough-password-9",
            "password2": "a-long-enough-password-9",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    user = User.objects.get(username="carol")
    assert user.email == "carol@example.org"
    assert user.check_password("a-long-enough-password-9")
    assert not user.is_staff
    dashboard = client.get(reverse("dashboard"))
    assert dashboard.status_code == 200
    assert dashboard.context["user"] == user
    assert b"Welcome to Talkforge, carol." in dashboard.content


def test_signup_with_mismatched_passwords_creates_nobody(client, db):
    response = client.post(
        reverse("signup"),
        {"username": "carol", "password1": "a-long-enough-password-9", "password2": "another-password-9"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["password2"]
    assert not User.objects.filter(username="carol").exists()


def test_signup_refuses_a_taken_username(client, alice):
    response = client.post(
        reverse("signup"),
        {
            "username": "alice",
            "password1": "a-long-enough-password-9",
            "password2": "a-long-enough-password-9",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors["username"]
    assert User.objects.filter(username="alice").count() == 1


def is_landing(response) -> bool:
    """``/`` for a visitor: the page that says what Talkforge is, with sign-up and log-in."""
    html = response.content.decode()
    return response.status_code == 200 and "Your own talking avatar" in html and reverse("signup") in html


def test_login_then_logout(client, alice):
    assert is_landing(client.get(reverse("dashboard")))
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200

    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert is_landing(client.get(reverse("dashboard")))
    response = client.get(reverse("job-list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_with_a_wrong_password_stays_logged_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert b"Please enter a correct username and password" in response.content
    assert is_landing(client.get(reverse("dashboard")))


def test_login_follows_next(client, alice):
    response = client.post(
        reverse("login") + "?next=/jobs/",
        {"username": "alice", "password": "alice-password-1", "next": "/jobs/"},
    )
    assert response["Location"] == "/jobs/"


# --- API tokens on the profile page --------------------------------------------------------------------


def test_profile_needs_login(client, db):
    response = client.get(reverse("profile"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_profile_without_token_shows_none(client, alice):
    client.force_login(alice)
    response = client.get(reverse("profile"))
    assert response.status_code == 200
    assert b"You have no API token." in response.content
    assert b'id="new-token"' not in response.content
    assert b"Create token" in response.content


def test_rotated_key_is_shown_once_and_only_its_hash_is_stored(client, alice):
    client.force_login(alice)
    key = rotate_and_read_key(client)
    assert len(key) >= 40

    token = ApiToken.objects.get(user=alice)
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert token.prefix == key[:8]
    for field in ApiToken._meta.concrete_fields:
        value = str(field.value_from_object(token))
        assert key not in value, f"the key is stored in ApiToken.{field.name}"

    again = client.get(reverse("profile")).content.decode()
    assert key not in again
    assert f"<code>{key[:8]}…</code>" in again
    # The session carried the key to one page view; it does not keep it.
    for session in Session.objects.all():
        assert key not in str(session.get_decoded())


def test_rotate_replaces_the_old_key(client, alice):
    client.force_login(alice)
    old = rotate_and_read_key(client)
    new = rotate_and_read_key(client)
    assert old != new
    assert ApiToken.objects.filter(user=alice).count() == 1
    api = client.__class__()
    assert api_get(api, old).status_code == 401
    assert api_get(api, new).status_code == 200


def test_rotate_and_revoke_accept_only_post(client, alice):
    client.force_login(alice)
    assert client.get(reverse("token-rotate")).status_code == 405
    assert client.get(reverse("token-revoke")).status_code == 405
    assert not ApiToken.objects.exists()


def test_revoke_removes_the_token(client, alice):
    client.force_login(alice)
    key = rotate_and_read_key(client)
    response = client.post(reverse("token-revoke"), follow=True)
    assert b"API token revoked." in response.content
    assert b"You have no API token." in response.content
    assert not ApiToken.objects.filter(user=alice).exists()
    assert api_get(client.__class__(), key).status_code == 401


# --- tokens over the API -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_throttle_cache():
    cache.clear()
    yield
    cache.clear()


def test_token_endpoint_gives_a_working_token(client, alice):
    response = client.post("/api/token/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 201
    key = response.json()["token"]
    response = api_get(client, key)
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert ApiToken.objects.get(user=alice).key_hash == ApiToken.hash_key(key)


def test_token_endpoint_replaces_the_previous_token(client, alice):
    first = client.post("/api/token/", {"username": "alice", "password": "alice-password-1"}).json()["token"]
    second = client.post("/api/token/", {"username": "alice", "password": "alice-password-1"}).json()["token"]
    assert api_get(client, first).status_code == 401
    assert api_get(client, second).status_code == 200


@pytest.mark.parametrize(
    "data",
    [{"username": "alice", "password": "wrong"}, {"username": "nobody", "password": "x"}, {}],
    ids=["wrong-password", "unknown-user", "nothing"],
)
def test_token_endpoint_refuses_bad_credentials_with_a_message(client, alice, data):
    response = client.post("/api/token/", data)
    assert response.status_code == 400
    assert response.json() == {"detail": "Wrong username or password."}
    assert not ApiToken.objects.exists()


def test_token_endpoint_throttles_password_guessing(client, alice):
    codes = [
        client.post("/api/token/", {"username": "alice", "password": f"guess-{n}"}).status_code
        for n in range(200)
    ]
    assert 429 in codes


def test_inactive_users_token_is_rejected(client, alice):
    key = client.post("/api/token/", {"username": "alice", "password": "alice-password-1"}).json()["token"]
    User.objects.filter(pk=alice.pk).update(is_active=False)
    response = api_get(client, key)
    assert response.status_code == 401
    assert "Invalid or revoked API token" in response.json()["detail"]
    # ...and an inactive user cannot get a new one either.
    response = client.post("/api/token/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 400


def test_bearer_scheme_is_accepted_and_last_use_is_recorded(client, alice):
    key = client.post("/api/token/", {"username": "alice", "password": "alice-password-1"}).json()["token"]
    assert ApiToken.objects.get(user=alice).last_used_at is None
    assert api_get(client, key, scheme="Bearer").status_code == 200
    assert ApiToken.objects.get(user=alice).last_used_at is not None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token", "Use the header 'Authorization: Token <your API token>'."),
        ("Basic YWxpY2U6eA==", "Use the header 'Authorization: Token <your API token>'."),
        ("Token not-a-key", "Invalid or revoked API token: make a new one on your profile page."),
    ],
)
def test_bad_authorization_headers_get_401_with_a_message(client, db, header, message):
    response = client.get(JOBS_API, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["detail"] == message
    assert response["WWW-Authenticate"] == "Token"


def test_api_without_credentials_is_401(client, db):
    assert client.get(JOBS_API).status_code == 401
