"""SSH dispatch: a remote exec round trip on our pooled transport, and ``job_submit`` → the engine process
started on an SSH node, beside OpenSSH's own exec floor on the same loopback sshd.

Run from the repository root with PostgreSQL and Redis up (as root: the sshd logs in the ``tfssh`` user,
as in the test suite): ``.venv/bin/python bench/ssh_dispatch.py``.

Setup: an OpenSSH server on a free loopback port (``_harness.LoopbackSSHD``: the suite's config, a
throwaway host key, key login as ``tfssh``), an SSH node on it registered and confirmed as a staff user
would (``node_register_ssh`` + ``node_confirm_host_key``, a stand-in ``nvidia-smi`` first on the node's
environment PATH), and one ``manage.py worker --node <name>`` subprocess.

a. Exec round trip, interleaved call by call (``--exec-samples`` each, after warm-up):
   - ours: ``SSHConnection(node).run(["true"])`` on the pooled transport (a new channel per call);
   - OpenSSH, fresh: ``ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<pinned>
     -i <key> -p PORT tfssh@127.0.0.1 true``, a new connection (handshake, key login) every time;
   - OpenSSH, reused: the same with ``ControlMaster=auto ControlPath=<sock> ControlPersist=60`` (the
     first call, a warm-up, sets the master up): a new channel on one connection, like ours;
   - then ours again, ``--exec-samples`` calls back to back, as the runner makes them (mkdir, df, stat…).
     Interleaved, each of our calls follows ≥ 9 ms of OpenSSH calls; back to back, a call that starts
     while the server's ACK of the previous one is still delayed waits for it (Nagle) unless the
     socket has ``TCP_NODELAY``.

b. ``job_submit`` → engine started, as ``bench/dispatch.py`` measures it for a local node: a trigger in
   this run's throw-away database records ``clock_timestamp()`` when the runner writes ``Job.pid``, which
   it does right after ``SSHConnection.start`` has read the remote starter's ``TALKFORGE_PID`` line (the
   remote shell that ``exec``s the engine is running). ``--samples`` demo trainings (``seconds=0``, 10+10
   iterations), one at a time, each after the previous one has finished and RQ recorded it.

   Breakdown: the worker is ``manage.py worker`` started through a small wrapper that times, in memory,
   the runner's SSH calls (each exec round trip by command, the local hash, the upload channel,
   ``put``, ``start``) and hands them over after each job (the timing adds microseconds); ``--plain``
   runs the bare ``manage.py worker`` instead (no breakdown). The runner calls ``put`` for the demo
   engine file before every start (``make_dirs``, ``df``, ``stat`` ×2, local SHA-256, the ``cat``
   upload, remote ``sha256sum``, ``mv``): its share is reported as ``put_p50_ms`` / ``put_share``.

``value`` = p50 submit → engine started (ms); ``baseline`` = p50 of OpenSSH's reused-connection exec of
``true``; ``ratio`` = value / baseline. Target: ratio ≤ 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from _harness import Bench, LoopbackSSHD, log, percentile, report
from dispatch import TRIGGER_SQL, Ours, ms, pg_clock_offset_ms

SPANS_KEY = "bench-ssh:spans"

# manage.py worker, with the runner's SSH calls timed in memory and pushed to Redis after each job.
WORKER = """
import json, os, sys, time
import django
django.setup()
from django.core.management import call_command
import jobs.tasks
from gpu_nodes import ssh
from core.queues import redis_connection

spans = []

def timed(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        started = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            spans.append([label(args), started, time.time()])
    setattr(owner, name, wrapper)

def command_word(args):
    command = args[1].rsplit("; ", 1)[-1].split()
    return "exec " + (command[1] if command[0] == "exec" else command[0])

timed(ssh.SSHConnection, "_exec", command_word)
timed(ssh.SSHConnection, "_upload_from", lambda args: "upload")
timed(ssh.SSHConnection, "put", lambda args: "put")
timed(ssh.SSHConnection, "start", lambda args: "start")
timed(ssh, "_sha256_file", lambda args: "hash_local")
run_job = jobs.tasks.run_job

def timed_run_job(job_id):
    try:
        return run_job(job_id)
    finally:
        redis_connection().rpush(%r, json.dumps(spans))
        spans.clear()

jobs.tasks.run_job = timed_run_job
call_command("worker", "--node", sys.argv[1], "--name", sys.argv[2])
""" % (SPANS_KEY,)  # noqa: UP031 - the code is itself Python source with braces


def timed_call(function) -> float:
    started = time.perf_counter()
    function()
    return 1000 * (time.perf_counter() - started)


def exec_round_trips(node, sshd: LoopbackSSHD, samples: int, warmup: int) -> dict[str, list[float]]:
    from gpu_nodes.ssh import SSHConnection

    conn = SSHConnection(node)
    control = sshd.folder / "control.sock"

    def ours():
        result = conn.run(["true"])
        if result.returncode != 0:
            raise RuntimeError(f"true failed over our transport: {result.output}")

    def openssh(control_path=None):
        def call():
            subprocess.run(sshd.ssh_argv("true", control=control_path), check=True, capture_output=True,
                           timeout=30)  # fmt: skip

        return call

    sides = {"pooled": ours, "ssh_reused": openssh(control), "ssh_fresh": openssh()}
    times = {name: [] for name in sides}
    for index in range(warmup + samples):
        for name, call in sides.items():  # interleaved, so all three see the same noise
            elapsed = timed_call(call)
            if index >= warmup:
                times[name].append(elapsed)
    # The runner's calls follow each other at once (mkdir, df, stat, ...): time ours that way too.
    times["pooled_back_to_back"] = [timed_call(ours) for _ in range(samples)]
    return times


def span_breakdown(sample: dict, spans: list) -> dict:
    """Per-sample figures (ms) from the worker's spans before the engine start, and the trigger times."""
    figures = {}
    before = []
    for label, started, ended in spans:
        before.append((label, started, ended))
        if label == "start":
            break
    if not before or before[-1][0] != "start":
        return figures
    first_start, start_span = before[0][1], before[-1]
    figures["claimed_to_first_ssh_call"] = 1000 * (first_start - sample["claimed"])
    figures["start_call"] = 1000 * (start_span[2] - start_span[1])
    figures["start_returned_to_pid_recorded"] = 1000 * (sample["pid"] - start_span[2])
    for label, started, ended in before:
        if label == "put":
            figures["put"] = 1000 * (ended - started)
    puts = [s for s in before if s[0] == "put"]
    inside = [s for s in before if puts and puts[0][1] <= s[1] and s[2] <= puts[0][2] and s[0] != "put"]
    outside = [s for s in before if s not in inside and s[0] not in ("put", "start")]
    for label, started, ended in inside:
        key = f"put.{label.replace(' ', '_')}"
        figures[key] = figures.get(key, 0.0) + 1000 * (ended - started)
    for label, started, ended in outside:
        key = f"{label.replace(' ', '_')}_before_put"
        figures[key] = figures.get(key, 0.0) + 1000 * (ended - started)
    figures["channels_before_pid"] = sum(1 for s in before if s[0].startswith(("exec", "upload", "start")))
    return figures


def p50_of(rows: list[dict], key: str) -> float:
    return round(percentile([row[key] for row in rows if key in row], 50), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30, help="jobs submitted (part b)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--exec-samples", type=int, default=100, help="exec round trips per side (part a)")
    parser.add_argument("--settle", type=float, default=0.05, help="idle seconds before each job")
    parser.add_argument("--plain", action="store_true", help="bare manage.py worker: no breakdown")
    args = parser.parse_args()

    with Bench("ssh_dispatch") as bench, LoopbackSSHD(bench) as sshd:
        import psycopg
        from django.db import connection

        from accounts.models import User
        from core.queues import redis_connection

        load = bench.load_at_start
        os.environ["MEDIA_ROOT"] = str(bench.tmp / "media")  # collected files stay inside the run
        with connection.cursor() as cursor:
            cursor.execute(TRIGGER_SQL)
        offset = pg_clock_offset_ms()
        owner = User.objects.create_user("bench-owner", password="bench-password-1")
        node = sshd.register_node(f"bench-ssh-{os.getpid()}")

        started = time.monotonic()
        exec_ms = exec_round_trips(node, sshd, args.exec_samples, warmup=3)
        log(f"exec round trips: {args.exec_samples} x 4 in {time.monotonic() - started:.1f} s")

        if args.plain:
            bench.worker(node.name, "worker")
        else:
            bench.start(["-c", WORKER, node.name, "worker"], "worker")
        bench.wait_workers(node.queue_name, 1)

        db = connection.settings_dict
        listener = psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
        )
        redis = redis_connection()
        samples, rows = [], []
        try:
            listener.execute("LISTEN bench_job_done")
            ours = Ours(bench, owner, listener)
            started = time.monotonic()
            for index in range(args.warmup + args.samples):
                time.sleep(args.settle)
                sample = ours.sample()
                spans = [] if args.plain else json.loads(redis.blpop([SPANS_KEY], timeout=10)[1])
                if index >= args.warmup:
                    samples.append(sample)
                    rows.append(span_breakdown(sample, spans))
            log(f"{len(samples)} SSH jobs in {time.monotonic() - started:.1f} s")
        finally:
            listener.close()

    ours_ms = [1000 * (s["pid"] - s["t0"]) for s in samples]
    value, baseline = percentile(ours_ms, 50), percentile(exec_ms["ssh_reused"], 50)
    breakdown = {
        "submit_to_claimed": ms(samples, "t0", "claimed"),
        "claimed_to_pid_recorded": ms(samples, "claimed", "pid"),
    }
    if not args.plain:
        keys = sorted({key for row in rows for key in row}, key=lambda k: (not k.startswith("claimed"), k))
        breakdown.update({key: p50_of(rows, key) for key in keys})
    for name, p50 in breakdown.items():
        log(f"  p50 {name:36s} {p50:8.2f}")
    exec_p50 = {name: round(percentile(values, 50), 2) for name, values in exec_ms.items()}
    exec_p95 = {name: round(percentile(values, 95), 2) for name, values in exec_ms.items()}
    log(f"  exec p50 ms {exec_p50}; p95 {exec_p95}")
    log(f"  submit→started p50 {value:.2f} ms p95 {percentile(ours_ms, 95):.2f} ms")
    put_p50 = breakdown.get("put")
    report(
        bench="ssh_dispatch",
        value=round(value, 2),
        unit="ms",
        baseline=round(baseline, 2),
        baseline_name="openssh_controlmaster_exec_true_p50",
        ratio=round(value / baseline, 2),
        target_ratio=1.5,
        metric="submit_to_ssh_engine_started_p50",
        p95=round(percentile(ours_ms, 95), 2),
        pooled_exec_p50=exec_p50["pooled"],
        pooled_exec_p95=exec_p95["pooled"],
        pooled_exec_back_to_back_p50=exec_p50["pooled_back_to_back"],
        pooled_exec_back_to_back_p95=exec_p95["pooled_back_to_back"],
        ssh_reused_exec_p95=exec_p95["ssh_reused"],
        ssh_fresh_exec_p50=exec_p50["ssh_fresh"],
        ssh_fresh_exec_p95=exec_p95["ssh_fresh"],
        put_p50_ms=put_p50,
        put_share=round(put_p50 / value, 3) if put_p50 else None,
        breakdown_p50_ms=breakdown,
        samples=len(ours_ms),
        exec_samples=args.exec_samples,
        pg_clock_offset_ms=round(offset, 3),
        load_1m_at_start=load,
        cpus=os.cpu_count(),
    )


if __name__ == "__main__":
    main()
