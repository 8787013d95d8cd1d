"""JSON log lines (LOG_FORMAT=json) with the request id, and Sentry started only when SENTRY_DSN is set.

Settings are read once per process, so what depends on the environment runs in a subprocess, as the web
processes and workers would start."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from talkforge.observability.logs import JsonFormatter, RequestIdFilter
from talkforge.settings.env import env_networks

ROOT = Path(__file__).resolve().parent.parent.parent


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "talkforge.settings.test", **env}
    for name in ("LOG_FORMAT", "SENTRY_DSN"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


# --- JSON logs -----------------------------------------------------------------------------------------

LOG_SOME_LINES = """
import logging, django
django.setup()
log = logging.getLogger("talkforge.test")
log.warning("hello %s", "world")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it broke")
"""


def test_json_format_writes_one_object_per_line():
    result = run_python(LOG_SOME_LINES, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line parses
    hello = next(line for line in lines if line["logger"] == "talkforge.test" and line["level"] == "WARNING")
    assert hello["message"] == "hello world"
    assert set(hello) == {"time", "level", "logger", "message"}  # no request: no request id
    assert hello["time"].endswith("+00:00")
    broke = next(line for line in lines if line["message"] == "it broke")
    assert broke["level"] == "ERROR"
    assert "ZeroDivisionError" in broke["exception"]


def test_plain_format_is_the_default():
    result = run_python(LOG_SOME_LINES)
    assert result.returncode == 0, result.stderr
    assert " WARNING talkforge.test hello world" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_a_bad_log_format_stops_start_up_naming_it():
    result = run_python("import talkforge.settings.test", LOG_FORMAT="yaml")
    assert result.returncode != 0
    assert "LOG_FORMAT='yaml'" in result.stderr and "plain or json" in result.stderr


@pytest.fixture
def json_lines():
    """JSON lines of django.request and talkforge.*, formatted as LOG_FORMAT=json formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    loggers = [logging.getLogger("django.request"), logging.getLogger("talkforge")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for logger in loggers:
        logger.removeHandler(handler)


def test_a_requests_log_lines_carry_its_id(client, json_lines):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    [line] = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["level"] == "WARNING"
    assert line["message"] == "Not Found: /no/such/page/"
    assert line["request_id"] == response["X-Request-ID"]


# --- settings ------------------------------------------------------------------------------------------


def test_metrics_networks_are_checked(monkeypatch):
    monkeypatch.setenv("TALKFORGE_TEST_NETWORKS", "10.0.0.0/8, 192.168.1.7,::1")
    assert env_networks("TALKFORGE_TEST_NETWORKS", []) == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    monkeypatch.setenv("TALKFORGE_TEST_NETWORKS", "10.0.0.0/8,intranet")
    with pytest.raises(
        ImproperlyConfigured, match="TALKFORGE_TEST_NETWORKS: 'intranet' is not an IP network"
    ):
        env_networks("TALKFORGE_TEST_NETWORKS", [])


def test_a_short_metrics_token_stops_start_up():
    result = run_python("import talkforge.settings.test", METRICS_TOKEN="secret")
    assert result.returncode != 0
    assert "METRICS_TOKEN is shorter than 24 characters" in result.stderr


# --- Sentry --------------------------------------------------------------------------------------------


@pytest.fixture
def sentry_server():
    """A stand-in Sentry: records each envelope posted to it."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding == "br":
                import brotli

                body = brotli.decompress(body)
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


REPORT = """
import json, django
django.setup()
import sentry_sdk
client = sentry_sdk.get_client()
print(json.dumps({
    "active": client.is_active(),
    "pii": client.options.get("send_default_pii") if client.is_active() else None,
    "integrations": sorted(getattr(client, "integrations", {})),
}))
sentry_sdk.capture_message("hello from the health tests")
sentry_sdk.flush(10)
"""


def test_sentry_starts_with_a_dsn_and_sends_no_personal_data(sentry_server):
    port, received = sentry_server
    result = run_python(REPORT, SENTRY_DSN=f"http://publickey@127.0.0.1:{port}/42")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["active"] is True
    assert report["pii"] is False
    assert {"django", "rq", "logging"} <= set(report["integrations"])
    assert any(
        path.startswith("/api/42/envelope/") and b"hello from the health tests" in body
        for path, body in received
    ), received


# A request full of personal data and secrets, through the whole middleware chain to a view that fails
# with the signed-in person in a local variable. The values come from the environment, so that the source
# lines Sentry quotes around each frame do not hold them.
FAILING_REQUEST = """
import os, sys, types, django
django.setup()
import sentry_sdk
from django.test import Client, override_settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from accounts.models import User

PERSON = User(username=os.environ["PERSON_NAME"], email=os.environ["PERSON_EMAIL"])


@csrf_exempt
def failing(request):
    request.user = PERSON
    user = request.user
    raise ZeroDivisionError("the failing view")


urls = types.ModuleType("failing_urls")
urls.urlpatterns = [path("failing/", failing)]
sys.modules["failing_urls"] = urls
with override_settings(ROOT_URLCONF="failing_urls"):
    client = Client(raise_request_exception=False, HTTP_HOST="127.0.0.1")
    client.cookies["sessionid"] = os.environ["COOKIE"]
    response = client.post(
        "/failing/", data={"text": os.environ["BODY"]}, content_type="application/json",
        HTTP_AUTHORIZATION="Token " + os.environ["API_KEY"], HTTP_X_FORWARDED_FOR="198.51.100.9",
        REMOTE_ADDR="203.0.113.77",
    )
assert response.status_code == 500, response.status_code
sentry_sdk.flush(10)
"""


def test_sentry_gets_the_failure_and_no_personal_data(sentry_server):
    """What Sentry receives about a failing request: the exception and where it happened, not the person
    (name, e-mail, addresses), their cookie or API key, the request's body, nor a frame's local variables
    (a view's ``user`` is written "<User: name>")."""
    port, received = sentry_server
    private = {
        "PERSON_NAME": "alice-private-name",
        "PERSON_EMAIL": "alice@private.example",
        "COOKIE": "private-session-cookie",
        "BODY": "private-request-body",
        "API_KEY": "private-api-key-value",
    }
    result = run_python(FAILING_REQUEST, SENTRY_DSN=f"http://publickey@127.0.0.1:{port}/42", **private)
    assert result.returncode == 0, result.stderr
    sent = b"".join(body for _, body in received)
    assert b"the failing view" in sent and b"ZeroDivisionError" in sent
    for secret in (*private.values(), "203.0.113.77", "198.51.100.9"):
        assert secret.encode() not in sent, secret


def test_sentry_stays_off_without_a_dsn(sentry_server):
    _, received = sentry_server
    result = run_python(REPORT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["active"] is False
    assert received == []
