"""The web tier as production starts it (docker/web.sh: gunicorn, two uvicorn workers, production
settings, the database pool): 50 clients at once get their job lists without one error, websockets work,
and a graceful restart (SIGHUP) drops no request."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect as websocket_connect

from accounts.models import User
from accounts.services import api_token_rotate
from jobs.models import Job
from tests.conftest import ROOT, free_port, subprocess_env, wait_for

CLIENTS = 50
# Settings the test environment carries for in-process tests that production must not inherit.
TEST_ONLY = ("API_", "QUOTA_", "JOB_", "HOUSEKEEPING_", "DATABASE_POOL", "SECURE_", "DJANGO_")


@pytest.fixture
def production_server(transactional_db, redis_db, tmp_path):
    """docker/web.sh on a free loopback port; yields (base URL, the master's Popen)."""
    port = free_port()
    env = {key: value for key, value in subprocess_env().items() if not key.startswith(TEST_ONLY)}
    env.update(
        DJANGO_SETTINGS_MODULE="talkforge.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        SECURE_HSTS_SECONDS="0",
        WEB_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        WEB_GRACEFUL_TIMEOUT="10",
        DATABASE_POOL_MAX_SIZE="4",
        PYTHON=sys.executable,
    )
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed below
    master = subprocess.Popen(
        ["sh", str(ROOT / "docker" / "web.sh")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base, master, tmp_path), timeout=60, message="docker/web.sh to answer")
        yield base, master
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGTERM)
            try:
                master.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(master.pid, signal.SIGKILL)
                master.wait(5)
        log.close()


def _answers(base: str, master: subprocess.Popen, tmp_path) -> bool:
    assert master.poll() is None, (tmp_path / "web.log").read_text(errors="replace")[-3000:]
    try:
        urllib.request.urlopen(f"{base}/api/jobs/", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # 401 without a token: Django answered
    except OSError:
        return False
    return True


def users_with_jobs(count: int, jobs_each: int) -> list[str]:
    keys = []
    for number in range(count):
        user = User.objects.create_user(f"user{number}", password="irrelevant-password-1")
        Job.objects.bulk_create(
            Job(owner=user, kind="demo_train", params={"i": i}, status="succeeded") for i in range(jobs_each)
        )
        keys.append(api_token_rotate(user=user))
    return keys


def job_list(base: str, key: str) -> int | str:
    """The status of one job-list request, or the name of the error when there was no answer."""
    request = urllib.request.Request(f"{base}/api/jobs/", headers={"Authorization": f"Token {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
            assert body["count"] == len(body["results"]) > 0
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return type(error).__name__


def hammer(base: str, keys: list[str], requests_each: int, during=None) -> list:
    """``CLIENTS`` threads, each sending ``requests_each`` requests back to back; every outcome."""
    started = threading.Barrier(CLIENTS + 1)

    def client(number: int) -> list:
        started.wait()
        return [job_list(base, keys[number % len(keys)]) for _ in range(requests_each)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, number) for number in range(CLIENTS)]
        started.wait()
        if during is not None:
            during()
        return [outcome for future in futures for outcome in future.result()]


def test_fifty_concurrent_clients_get_their_job_lists_without_an_error(production_server):
    base, _ = production_server
    keys = users_with_jobs(CLIENTS, 5)
    outcomes = hammer(base, keys, requests_each=6)
    assert len(outcomes) == CLIENTS * 6
    assert [o for o in outcomes if o != 200] == []


def test_websockets_work_through_the_production_server(production_server, alice):
    base, _ = production_server
    job = Job.objects.create(owner=alice, kind="demo_train", params={}, status="queued")
    key = api_token_rotate(user=alice)
    url = base.replace("http://", "ws://") + f"/ws/jobs/{job.pk}/"
    with websocket_connect(url, additional_headers={"Authorization": f"Token {key}"}, open_timeout=10) as ws:
        snapshot = json.loads(ws.recv(timeout=10))
    assert snapshot["type"] == "snapshot"
    assert (snapshot["job"], snapshot["status"]) == (job.pk, "queued")


def test_a_graceful_restart_drops_no_request(production_server):
    """Every request sent during a restart is answered, even one whose connection an old worker had
    accepted but not read yet when it was told to stop (talkforge/serving.py GracefulHttpToolsProtocol:
    before it, such a client got a reset about once per restart under load). Two restarts under 50
    clients."""
    base, master = production_server
    keys = users_with_jobs(10, 3)
    for _ in range(2):
        workers_before = set(_children(master))

        def restart():
            time.sleep(0.3)
            os.kill(_gunicorn_master(master), signal.SIGHUP)

        outcomes = hammer(base, keys, requests_each=8, during=restart)
        assert [o for o in outcomes if o != 200] == []
        # New workers replaced the old ones.
        wait_for(lambda: set(_children(master)) and not (set(_children(master)) & workers_before), timeout=30)


def _gunicorn_master(master: subprocess.Popen) -> int:
    return master.pid  # web.sh execs gunicorn: the shell's pid is the master's


def _children(master: subprocess.Popen) -> list[int]:
    path = f"/proc/{master.pid}/task/{master.pid}/children"
    try:
        with open(path) as handle:
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        return []


def asgi_get(app, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes, int]:
    """One GET through an ASGI application in this process: status, headers, body, and how many times the
    request crossed from the event loop to a thread (``sync_to_async``)."""
    import asyncio
    from unittest import mock

    from asgiref.sync import SyncToAsync

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    messages, hops = [], []
    real_call = SyncToAsync.__call__

    async def main():
        request_sent, never = False, asyncio.Event()

        async def receive():
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()

        async def send(message):
            messages.append(message)

        def counted(self, *args, **kwargs):
            hops.append(getattr(self.func, "__qualname__", repr(self.func)))
            return real_call(self, *args, **kwargs)

        with mock.patch.object(SyncToAsync, "__call__", counted):
            await app(scope, receive, send)

    asyncio.run(main())
    start = messages[0]
    body = b"".join(message.get("body", b"") for message in messages[1:])
    return start["status"], dict(start["headers"]), body, len(hops)


def test_an_api_request_crosses_to_its_thread_once(transactional_db, client):
    """The request's synchronous work runs in one hand-off to its thread (talkforge/asgi.py), not one per
    middleware method and signal, and answers exactly what Django's own handler answers."""
    from django.core.handlers.asgi import ASGIHandler

    from talkforge.asgi import django_asgi_app

    [key] = users_with_jobs(1, 3)
    headers = {"Host": "testserver", "Authorization": f"Token {key}", "Accept": "application/json"}
    status, response_headers, body, hops = asgi_get(django_asgi_app, "/api/jobs/", headers)
    assert status == 200
    assert json.loads(body) == client.get("/api/jobs/", HTTP_AUTHORIZATION=f"Token {key}").json()
    assert json.loads(body)["count"] == 3
    # request_started's receivers, the chain and the view, closing the response (request_finished's
    # receivers): all in one hand-off
    assert hops == 1
    django_status, django_headers, django_body, django_hops = asgi_get(ASGIHandler(), "/api/jobs/", headers)
    assert django_hops > 10  # Django's own: each middleware method hands off on its own
    assert (django_status, django_body) == (status, body)
    assert set(django_headers) == set(response_headers)


def test_keep_alive_connections_spread_evenly_over_the_workers(production_server):
    """Keep-alive clients that connect in a burst end up split evenly over the two workers
    (talkforge/serving.py BalancedServer and the rebalancing close): without it one worker could hold all
    of them while the other idled."""
    import http.client

    base, master = production_server
    keys = users_with_jobs(4, 2)
    port = int(base.rsplit(":", 1)[1])
    count, seconds = 40, 3.0
    start, snapshot_taken = threading.Barrier(count + 1), threading.Event()
    done = threading.Barrier(count + 1)

    def client(number: int) -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Token {keys[number % len(keys)]}"}
        statuses = []
        start.wait()
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            connection.request("GET", "/api/jobs/", headers=headers)  # reconnects after "Connection: close"
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        if connection.sock is None:  # the last answer closed it: be counted where the next one lands
            connection.connect()
        done.wait()
        snapshot_taken.wait(30)
        connection.close()
        return statuses

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(client, number) for number in range(count)]
        start.wait()
        done.wait()
        held = {pid: _established(pid, port) for pid in _children(master)}
        snapshot_taken.set()
        statuses = [status for future in futures for status in future.result()]
    assert set(statuses) == {200}
    assert len(held) == 2 and sum(held.values()) == count, held
    assert max(held.values()) - min(held.values()) <= 4, held


def _established(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
            held += local_port == port and state == "01" and inode in inodes
    return held
