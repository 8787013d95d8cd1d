"""Live log latency: an engine prints a line → a websocket client receives it, beside Redis pub/sub.

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/progress.py``.

Setup: a local node whose ``nvidia-smi`` is a stand-in listing ``--jobs`` GPUs (so it has that many
slots), daphne serving ``talkforge.asgi``, one idle worker per slot, and ``--jobs`` demo trainings
submitted with ``stamp_lines`` on, sized so that together they print ``--total-lines-per-second``
progress-bar lines for ``--seconds`` (the demo prints one bar line every 10 iterations; default
10 jobs x 100 lines/s = 1,000 lines/s; ``--total-lines-per-second 10000`` is 10 x 1,000, which a
2-core machine cannot keep up with). The jobs wait unplaced (the node is draining) until one
websocket client per job has connected to ``/ws/jobs/<id>/`` with ``Authorization: Token <key>`` and read
its snapshot; then the node goes online and the jobs are dispatched, so every line goes out live and
neither worker nor daphne start-up falls inside the measurement.

Latency of a line = the client's ``time.time()`` when the ``log`` message holding it is handed to the
client's code − the ``t=<time.time()>`` the demo engine (``--stamp_lines``) wrote into the bar's
postfix just before writing the line to its pipe. Engine and client run on this host and read the same
clock. The path measured: engine pipe → runner read and line split → the events thread → channel-layer
PUBLISH → daphne's subscriber → consumer → websocket frame → client.

Reported: ``value`` = p50 over all stamped lines of all jobs (ms), p95, p99 and max; the rate actually
achieved (the demo sleeps once per iteration, so on a busy machine it falls short of the asked rate);
lines printed, stored by the runners and received by the clients; backlog: the p50 of the first and
of the last 10 % of lines by print time (a queue that grows shows as last ≫ first) and ``drain_ms``,
the latency of the slowest job's last line (its bar is followed by a newline at once, so it waits for
nothing but the queue ahead of it: seconds here mean a backlog built up); and the CPU seconds
that daphne, the runners, the engines and the clients used meanwhile, with the runners' and daphne's
CPU milliseconds per line (on a 2-core machine they decide where the backlog starts).

Baseline, same run, before the jobs: Redis pub/sub on loopback, a subscriber subprocess timing
``PUBLISH`` → receipt of ``--baseline-messages`` messages sent at 1 kHz; baseline = its p50.
``ratio`` = value / baseline. Targets: p50 ≤ 10 ms, p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import stat
import time

from _harness import Bench, log, percentile, report

STAMP = re.compile(r"t=(\d+\.\d+)\]")

SUBSCRIBER = """
import json, os, sys, time, redis
client = redis.Redis.from_url(os.environ["REDIS_URL"])
pubsub = client.pubsub(ignore_subscribe_messages=True)
pubsub.subscribe(sys.argv[1])
latencies = []
for message in pubsub.listen():
    received = time.time()
    if message["data"] == b"stop":
        break
    latencies.append(received - float(message["data"]))
print(json.dumps(latencies), flush=True)
"""


def redis_pubsub_floor(bench: Bench, messages: int) -> list[float]:
    """Seconds from PUBLISH to a subscriber (another process) receiving it, on loopback."""
    from core.queues import redis_connection

    channel = f"tfbench{os.getpid()}:pubsub-floor"
    subscriber = bench.start(["-c", SUBSCRIBER, channel], "pubsub-subscriber", service=False)
    client = redis_connection()
    deadline = time.monotonic() + 30
    while client.pubsub_numsub(channel)[0][1] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the pub/sub subscriber did not subscribe within 30 s")
        bench.check_alive()
        time.sleep(0.02)
    for _ in range(messages):
        client.publish(channel, repr(time.time()))
        time.sleep(0.001)
    client.publish(channel, "stop")
    subscriber.wait(30)
    return json.loads(subscriber.log_path.read_text().strip().splitlines()[-1])


def make_node(bench: Bench, gpus: int):
    from gpu_nodes.models import Node
    from gpu_nodes.services import node_probe

    bin_dir = bench.tmp / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    rows = "\n".join(f"{i}, NVIDIA H100 80GB HBM3, 81559, 0, 0" for i in range(gpus))
    script.write_text(f"#!/bin/sh\ncat <<'CSV'\n{rows}\nCSV\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    workdir = bench.tmp / "node"
    workdir.mkdir()
    node = Node.objects.create(name=f"bench-{os.getpid()}", kind=Node.Kind.LOCAL, workdir=str(workdir))
    node = node_probe(node=node)
    if node.status != Node.Status.ONLINE or node.gpus.filter(present=True).count() != gpus:
        raise RuntimeError(f"node probe failed: {node.last_error}")
    return node


async def watch(address: str, key: str, job_id: int, connected: asyncio.Event, deadline: float):
    """Every message of one job's stream with the time it reached us; ends at the job's end."""
    from websockets.asyncio.client import connect

    received: list[tuple[float, str]] = []
    async with connect(
        f"ws://{address}/ws/jobs/{job_id}/",
        origin=f"http://{address}",
        additional_headers={"Authorization": f"Token {key}"},
        proxy=None,
        compression=None,
        max_size=None,
    ) as websocket:
        snapshot = json.loads(await asyncio.wait_for(websocket.recv(), 30))
        if snapshot["type"] != "snapshot":
            raise RuntimeError(f"job {job_id}: expected a snapshot, got {snapshot['type']}")
        connected.set()
        while True:
            raw = await asyncio.wait_for(websocket.recv(), max(0.1, deadline - time.monotonic()))
            received.append((time.time(), raw))
            if '"status"' in raw:  # cheap test first: most messages are log lines
                message = json.loads(raw)
                if message["type"] == "status" and message["status"] in ("succeeded", "failed", "canceled"):
                    if message["status"] != "succeeded":
                        raise RuntimeError(f"job {job_id} {message['status']}: {message['error']}")
                    return received


async def run_clients(address, key, jobs, start, timeout) -> list[list[tuple[float, str]]]:
    """Connect one client per job, then ``start()`` the jobs (in a thread: it uses the ORM)."""
    deadline = time.monotonic() + timeout
    events = [asyncio.Event() for _ in jobs]
    tasks = [
        asyncio.create_task(watch(address, key, job.pk, event, deadline))
        for job, event in zip(jobs, events, strict=True)
    ]
    waiting = asyncio.ensure_future(asyncio.gather(*(event.wait() for event in events)))
    done, _ = await asyncio.wait([waiting, *tasks], return_when="FIRST_COMPLETED")
    for task in tasks:
        if task in done:
            task.result()  # a client that ended before the start raises here
    await asyncio.to_thread(start)
    return await asyncio.gather(*tasks)


def cpu_snapshot(bench: Bench, daphne, workers) -> dict[str, float]:
    """CPU seconds so far: daphne, the runners (workers), the engines (reaped by the runners), us."""
    runners = [bench.cpu_seconds(worker) for worker in workers]
    times = os.times()
    return {
        "daphne": bench.cpu_seconds(daphne)[0],
        "runners": sum(own for own, _ in runners),
        "engines": sum(children for _, children in runners),
        "clients": times.user + times.system,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="concurrent jobs (slots, workers, clients)")
    parser.add_argument(
        "--total-lines-per-second", type=int, default=1000, help="bar lines per second, all jobs together"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each job prints")
    parser.add_argument("--baseline-messages", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    try:
        import websockets  # noqa: F401 - the client library, from the dev extra
    except ImportError:
        raise SystemExit("bench/progress.py needs the websockets package: pip install websockets") from None
    # One bar line per 10 iterations; half the lines in the coarse stage, half in the fine one.
    per_job = args.total_lines_per_second / args.jobs
    stage_iterations = max(10, round(per_job * args.seconds * 10 / 2 / 10) * 10)
    params = {
        "seconds": args.seconds,
        "iterations": stage_iterations,
        "coarse_iterations": stage_iterations,
        "save_every": 100000,
        "stamp_lines": True,
    }

    with Bench("progress") as bench:
        from django.db import connection

        from accounts.models import User
        from accounts.services import api_token_rotate
        from gpu_nodes.models import Node
        from gpu_nodes.services import node_drain
        from jobs.models import JobLogChunk
        from jobs.services import job_submit, jobs_dispatch

        load = bench.load_at_start
        floor = [1000 * value for value in redis_pubsub_floor(bench, args.baseline_messages)]
        log(f"Redis pub/sub floor: p50 {percentile(floor, 50):.3f} ms p99 {percentile(floor, 99):.3f} ms")

        node = make_node(bench, args.jobs)
        address = bench.daphne()
        daphne = bench.processes[-1]
        workers = [bench.worker(node.name, f"worker-{index}") for index in range(args.jobs)]
        bench.wait_workers(node.queue_name, args.jobs)
        owner = User.objects.create_user("bench-owner", password="bench-password-1")
        key = api_token_rotate(user=owner)
        # Jobs wait unplaced on a draining node until every client is connected and every worker idle.
        node_drain(node=node)
        jobs = [job_submit(owner=owner, kind="demo_train", params=params) for _ in range(args.jobs)]
        marks = {}

        def start() -> None:
            marks["cpu"], marks["at"] = cpu_snapshot(bench, daphne, workers), time.monotonic()
            try:
                Node.objects.filter(pk=node.pk).update(status=Node.Status.ONLINE)
                placed = jobs_dispatch()
            finally:
                connection.close()  # this thread's own connection
            if len(placed) != args.jobs:
                raise RuntimeError(f"{len(placed)} of {args.jobs} jobs got a slot")
            log(f"{args.jobs} clients connected; {args.jobs} jobs placed")

        streams = asyncio.run(run_clients(address, key, jobs, start, args.timeout))
        wall = time.monotonic() - marks["at"]
        cpu_end = cpu_snapshot(bench, daphne, workers)
        cpu = {name: round(cpu_end[name] - marks["cpu"][name], 2) for name in cpu_end}
        log(f"{args.jobs} jobs streamed in {wall:.1f} s; CPU seconds meanwhile: {cpu}")
        stored = sum(
            len(STAMP.findall(text))
            for text in JobLogChunk.objects.filter(job__in=jobs).values_list("text", flat=True)
        )

    samples = []  # (stamp, latency ms) over every job
    per_job_rates = []
    last_line_ms = []  # per job: the latency of its last line, i.e. how long the queue took to drain
    for stream in streams:
        job_samples = []
        for received_at, raw in stream:
            message = json.loads(raw)
            if message["type"] != "log":
                continue
            for line in message["lines"]:
                for stamp in STAMP.findall(line):
                    job_samples.append((float(stamp), 1000 * (received_at - float(stamp))))
        samples.extend(job_samples)
        if len(job_samples) > 1:
            stamps = [stamp for stamp, _ in job_samples]
            per_job_rates.append((len(stamps) - 1) / (max(stamps) - min(stamps)))
            last_line_ms.append(max(job_samples)[1])
    if not samples:
        raise SystemExit("no stamped line reached a client")
    samples.sort()
    latencies = [latency for _, latency in samples]
    tenth = max(1, len(samples) // 10)
    first_p50 = percentile(latencies[:tenth], 50)
    last_p50 = percentile(latencies[-tenth:], 50)
    printed = args.jobs * 2 * stage_iterations // 10
    drain = max(last_line_ms)
    value, baseline = percentile(latencies, 50), percentile(floor, 50)
    p99 = percentile(latencies, 99)
    log(
        f"lines printed {printed}, stored {stored}, received {len(samples)} "
        f"({sum(per_job_rates):.0f} lines/s); p50 {value:.2f} ms "
        f"p99 {p99:.2f} ms max {latencies and max(latencies):.2f} ms; first 10% p50 {first_p50:.2f} ms, "
        f"last 10% p50 {last_p50:.2f} ms; slowest job's last line {drain:.2f} ms"
    )
    report(
        bench="progress",
        value=round(value, 3),
        unit="ms",
        baseline=round(baseline, 3),
        baseline_name="redis_pubsub_publish_to_receive_p50",
        ratio=round(value / baseline, 2),
        p95=round(percentile(latencies, 95), 3),
        p99=round(p99, 3),
        max=round(max(latencies), 3),
        target={"p50": 10, "p99": 50},
        baseline_p99=round(percentile(floor, 99), 3),
        jobs=args.jobs,
        lines_per_second_asked=args.total_lines_per_second,
        lines_per_second_achieved=round(sum(per_job_rates), 1),
        lines_printed=printed,
        lines_stored=stored,
        lines_received=len(samples),
        stream_seconds=round(wall, 2),
        cpu_seconds=cpu,
        cpu_ms_per_line={
            name: round(1000 * cpu[name] / len(samples), 3) for name in ("runners", "daphne", "engines")
        },
        load_1m_at_start=load,
        cpus=os.cpu_count(),
        backlog={
            "first_10pct_p50": round(first_p50, 3),
            "last_10pct_p50": round(last_p50, 3),
            "drain_ms": round(drain, 3),
            # A pipeline that kept up delivers each job's last line like any other: no queue to drain.
            "built_up": drain > 100 or last_p50 > 2 * first_p50 + 5,
        },
    )


if __name__ == "__main__":
    main()
