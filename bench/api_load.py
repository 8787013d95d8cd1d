"""API under load: many clients asking for their job list from the production web stack, beside the same
view called in-process.

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/api_load.py``
(``--before`` also measures the stack this replaced: one daphne, CONN_MAX_AGE=60, no pool).

Setup: a database of the bench's own holding 10,000 jobs over 50 users (200 each, a third placed on a
node's GPU, with params, metrics and results as real jobs carry), each user with an API token. The
server is started the way production starts it: ``docker/web.sh`` (gunicorn, one uvicorn worker per
core, ``talkforge.settings.production`` with the pool's defaults; only HTTPS redirects and secure cookies
are off, since the bench speaks plain HTTP on loopback, and access lines are not logged). The bench
database gets ``CONNECTION LIMIT`` 60 so a stack that opens too many connections fails here
("too many connections for database", the same refusal the old stack met) instead of taking the shared
server's last connections from other work on the machine.

Load: ``N`` clients (``--clients``, default 50 and 200), each one keep-alive HTTP/1.1 connection on an
asyncio loop in this process, each signed in as one of the users by token, asking
``GET /api/jobs/`` (a page of 50 of that user's jobs) back to back for ``--seconds`` (default 12) after a
2-second warm-up that is not counted. Reported per phase: requests/s, p50 and p99 latency (request
written → whole response read), errors = every non-2xx answer and every request that failed (refused,
reset, timed out after 30 s), and the machine's CPU over the counted seconds (``machine_cpu``: busy and
stolen shares, /proc/stat). The clients share the 2 cores with the server, as a proxy would.

Floor, same run, before the server starts: the same view (``JobViewSet`` list, token authentication,
throttling, pagination, JSON rendering) called in this process through Django's test client with the
same tokens, one request after another for ``--floor-seconds``; floor requests/s = 1 / mean time.
``value`` = requests/s at 50 clients; ``ratio`` = value / floor (above 1: the extra processes and cores
pay for the server's own overhead). Targets on the 2-core machine: 0 errors at 200 clients, p99 ≤
300 ms at 50 clients, ≥ 150 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time

from _harness import ROOT, Bench, cpu_counters, cpu_shares, free_port, log, percentile, report

USERS = 50
JOBS_PER_USER = 200
WARMUP_SECONDS = 2.0
REQUEST_TIMEOUT = 30.0
CONNECTION_LIMIT = 60
PATH = "/api/jobs/"


def seed() -> list[str]:
    """50 users with 200 jobs each; the users' API keys, in order."""
    import random

    from django.utils import timezone

    from accounts.models import User
    from accounts.services import api_token_rotate
    from gpu_nodes.models import Gpu, Node
    from jobs.models import Job

    rng = random.Random(15)
    node = Node.objects.create(name="bench", kind=Node.Kind.LOCAL, workdir="/tmp/talkforge-bench-node")
    gpus = [Gpu.objects.create(node=node, index=i, name="NVIDIA H100 80GB HBM3") for i in range(8)]
    keys, jobs = [], []
    now = timezone.now()
    for number in range(USERS):
        user = User.objects.create_user(f"user{number:02d}", password=secrets.token_urlsafe(12))
        keys.append(api_token_rotate(user=user))
        for i in range(JOBS_PER_USER):
            placed = i % 3 == 0
            finished = i % 2 == 0
            jobs.append(
                Job(
                    owner=user,
                    kind="demo_train",
                    status="succeeded" if finished else ("running" if placed else "queued"),
                    stage="done" if finished else ("train" if placed else ""),
                    progress=1.0 if finished else rng.random(),
                    eta_seconds=None if finished else rng.uniform(1, 3600),
                    params={"seconds": 1, "iterations": 1000 + i, "coarse_iterations": 500},
                    metrics={"loss": rng.random(), "psnr": rng.uniform(20, 35)} if placed else {},
                    result={"checkpoints": [f"chkpnt{k}.pth" for k in range(3)]} if finished else {},
                    node=node if placed else None,
                    gpu=gpus[i % len(gpus)] if placed else None,
                    log_line_count=rng.randrange(0, 5000),
                    placed_at=now if placed else None,
                    started_at=now if placed else None,
                    finished_at=now if finished else None,
                    heartbeat_at=now if placed and not finished else None,
                )
            )
    # Running jobs would collide with the one-job-per-GPU index: only the finished ones keep their GPU.
    for job in jobs:
        if job.status == "running":
            job.status, job.gpu = "queued", None
    Job.objects.bulk_create(jobs, batch_size=2000)
    return keys


def floor(keys: list[str], seconds: float) -> dict:
    """The view in-process: Django's test client, one request after another."""
    from django.test import Client

    client = Client()
    times, statuses, index = [], set(), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        key = keys[index % len(keys)]
        index += 1
        started = time.perf_counter()
        response = client.get(PATH, HTTP_AUTHORIZATION=f"Token {key}", HTTP_HOST="127.0.0.1")
        times.append(time.perf_counter() - started)
        statuses.add(response.status_code)
    assert statuses == {200}, statuses
    mean = sum(times) / len(times)
    return {
        "requests": len(times),
        "rps": round(1 / mean, 1),
        "p50_ms": round(percentile(times, 50) * 1000, 2),
    }


# --- the load -------------------------------------------------------------------------------------------


async def one_client(port: int, key: str, stop_at: float, count_from: float, samples: list, errors: list):
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {key}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    reader = writer = None
    while time.monotonic() < stop_at:
        started = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, keep_alive = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            if started >= count_from:
                errors.append(type(error).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        if started >= count_from:
            if 200 <= status < 300:
                samples.append(time.monotonic() - started)
            else:
                errors.append(str(status))
        if not keep_alive:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() != "close"


async def drive(port: int, keys: list[str], clients: int, seconds: float) -> dict:
    samples: list[float] = []
    errors: list[str] = []
    count_from = time.monotonic() + WARMUP_SECONDS
    stop_at = count_from + seconds
    counters = []

    async def machine_cpu():
        for moment in (count_from, stop_at):
            await asyncio.sleep(max(0.0, moment - time.monotonic()))
            counters.append(cpu_counters())

    users = (keys[i % len(keys)] for i in range(clients))
    await asyncio.gather(
        machine_cpu(), *(one_client(port, key, stop_at, count_from, samples, errors) for key in users)
    )
    kinds: dict[str, int] = {}
    for error in errors:
        kinds[error] = kinds.get(error, 0) + 1
    return {
        "clients": clients,
        "requests": len(samples) + len(errors),
        "rps": round(len(samples) / seconds, 1),
        "p50_ms": round(percentile(samples, 50) * 1000, 1),
        "p90_ms": round(percentile(samples, 90) * 1000, 1),
        "p99_ms": round(percentile(samples, 99) * 1000, 1),
        "max_ms": round(max(samples, default=0) * 1000, 1),
        "errors": len(errors),
        "error_kinds": kinds,
        # The whole machine while the phase was counted: bench and server together, and what other guests
        # of the host took (steal); a run where steal_pct is high ran on less than two cores.
        "machine_cpu": cpu_shares(*counters),
    }


# --- the stacks -----------------------------------------------------------------------------------------


def production_env(**extra) -> dict[str, str]:
    # The bench's process carries the test settings' defaults (generous API rates among them): the server
    # gets production's own.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_", "API_", "QUOTA_", "JOB_", "HOUSEKEEPING_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="talkforge.settings.production",
        DATABASE_URL=os.environ["DATABASE_URL"],
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        SECURE_HSTS_SECONDS="0",
        PYTHON=sys.executable,
    )
    env.update(extra)
    return env


def start_stack(bench: Bench, name: str, port: int, old_tree: str | None = None) -> subprocess.Popen:
    if name == "new":
        argv = ["sh", str(ROOT / "docker" / "web.sh")]
        env = production_env(WEB_BIND=f"127.0.0.1:{port}")
    else:  # what served production before: one daphne, a persistent connection per thread
        argv = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "talkforge.asgi:application",
        ]
        env = production_env(DATABASE_POOL="false", DATABASE_CONN_MAX_AGE="60")
    log_file = open(bench.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    cwd = old_tree if name == "old" and old_tree else ROOT
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    process.log_path, process.log_file, process.service = bench.tmp / f"{name}.log", log_file, True
    bench.processes.append(process)
    wait_until_it_answers(bench, port, name)
    return process


def wait_until_it_answers(bench: Bench, port: int, name: str) -> None:
    """Until the API answers (every worker process may still be importing Django when the port opens)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        bench.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{PATH}", timeout=5) as response:
                response.read()
            return
        except urllib.error.HTTPError:  # 401 without a token: Django answered
            return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} stack did not answer within 60 s:\n{bench.log_tail(name)}")


def stop_stack(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    process.service = False


def forget_throttles() -> None:
    """Each stack starts with the users' API rate counters at zero."""
    from django.core.cache import cache

    from accounts.models import User

    cache.delete_many([f"throttle_user_{pk}" for pk in User.objects.values_list("pk", flat=True)])


def measure(
    bench: Bench, name: str, keys: list[str], clients: list[int], seconds: float, old_tree: str | None = None
) -> list[dict]:
    forget_throttles()
    port = free_port()
    process = start_stack(bench, name, port, old_tree)
    phases = []
    try:
        for count in clients:
            phase = asyncio.run(drive(port, keys, count, seconds))
            phase["stack"] = name
            log(f"{name}: {phase}")
            phases.append(phase)
            bench.check_alive()
    finally:
        stop_stack(process)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--floor-seconds", type=float, default=5.0)
    parser.add_argument("--before", action="store_true", help="also measure the old stack (daphne)")
    parser.add_argument(
        "--old-tree",
        help="with --before: run the old stack from this checkout (git archive <commit> | tar -x -C DIR), "
        "so the old job list code is measured too; default: today's code with the old server settings",
    )
    args = parser.parse_args()

    with Bench("api_load") as bench:
        import psycopg
        from _harness import PG_ADMIN_DSN

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{bench.db_name}" CONNECTION LIMIT {CONNECTION_LIMIT}')
        started = time.monotonic()
        keys = seed()
        log(f"seeded {USERS * JOBS_PER_USER} jobs over {USERS} users in {time.monotonic() - started:.1f} s")
        baseline = floor(keys, args.floor_seconds)
        log(f"floor (in-process): {baseline}")
        from django.db import connections

        connections.close_all()
        phases = measure(bench, "new", keys, args.clients, args.seconds)
        before = measure(bench, "old", keys, args.clients, args.seconds, args.old_tree) if args.before else []
        at_50 = next((p for p in phases if p["clients"] == 50), phases[0])
        report(
            bench="api_load",
            value=at_50["rps"],
            unit="requests/s",
            baseline=baseline["rps"],
            baseline_name="the job list view in-process (Django test client), one request at a time",
            ratio=round(at_50["rps"] / baseline["rps"], 2),
            phases=phases,
            before=before,
            before_code="old checkout" if args.old_tree else "this checkout, old server settings",
            floor=baseline,
            seconds=args.seconds,
            workers=os.cpu_count(),
            load_at_start=bench.load_at_start,
        )


if __name__ == "__main__":
    main()
