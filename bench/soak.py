"""Soak under faults: 200 short demo trainings from 5 users on 4 nodes (2 local, 2 SSH on a loopback
sshd) while RQ workers are SIGKILLed at random and the SSH server is restarted once: does every job end,
and end once; is a GPU ever given two jobs; how long does the platform take to notice a dead worker?

Run from the repository root with PostgreSQL and Redis up (as root: the sshd logs in the ``tfssh`` user,
as in the test suite): ``.venv/bin/python bench/soak.py`` (2–4 minutes on 2 cores; it stops by itself,
at the latest after ``--hard-limit`` seconds, and the harness cleans up whatever happened).
``--keep-logs DIR`` keeps the workers', housekeeping's and sshd's logs.

Setup: ``_harness.Bench`` (a fresh database, a Redis database, a temp folder) and ``LoopbackSSHD``; two
local nodes and two SSH nodes, each with 2 stand-in GPUs (an ``nvidia-smi`` script in the node's
environment folder), so 8 slots; 2 ``manage.py worker --node`` processes per node (one per slot) and one
``manage.py housekeeping`` (the reconciler: stale heartbeats → requeue or fail, lost queue entries →
re-enqueue, waiting jobs → free slots). The test settings apply: heartbeat every 0.5 s, stale after 4 s,
housekeeping every 0.5 s, kill grace 2 s; ``NODE_PROBE_INTERVAL`` is set to 5 s so that an SSH node a
probe found down during the restart comes back within the run.

The jobs: ``demo_train`` with ``seconds`` uniform in 0.3–1.5, 10+10 iterations and ``max_attempts=2``,
each from one of 5 users at random, drawn once (``--seed``) and run twice, in two phases on the same
workers. Each phase submits through ``job_submit``, topped up so about 3 jobs per slot are active, until
all have ended (or half of ``--run-limit``):

1. clean: no faults (the baseline);
2. faults: every ``--kill-every`` seconds (±50 %) a worker is SIGKILLed — one that is running a job, when
   any is — and a replacement for its node is started. Once half of the jobs have ended, the SSH server
   is restarted with its sessions cut (as if sshd crashed or the host rebooted): the listener stops, every
   per-connection sshd process is SIGKILLed, and after ``--ssh-down`` seconds it listens again on the
   same port with the same host key. Engines on the SSH nodes are left to the platform.

The main loop samples the database and ``/proc`` every 0.2 s.

How to read the figures (``lost``, ``run_twice`` and ``double_booked`` are 0 on a healthy platform; the
bench exits 1 after printing its line if one is not). They cover both phases' jobs.

``lost``
    Jobs not accounted for at the end: still queued or running, canceled (nothing here cancels), or
    FAILED for any reason other than "its attempts ran out because of our faults". A FAILED job is not
    lost only if ``attempts == max_attempts`` (the platform requeues a job only after an interruption, so
    every earlier attempt was interrupted) and its last error is one an interruption gives (its worker
    "stopped responding", the connection to its node "was lost", or "Cannot reach" the node while sshd
    was down); those are ``failed_after_faults``. A job failed with attempts left is lost: the platform
    gave up on it while it had a retry.
``run_twice``
    Jobs whose engine ran to completion more than once: more than one ``Training complete.`` line in the
    job's stored log (``jobs.selectors.job_log_lines``; the runner keeps every attempt's lines). A second
    attempt after a killed first one is fine; two completed runs are not.
``double_booked``
    Observations of one GPU serving two jobs at once, from three checks (``double_booked_by``):
    ``db_samples``, samples where two ``running`` jobs share a ``gpu_id``; ``intervals``, after the run,
    pairs of jobs on one GPU whose ``started_at``–``finished_at`` overlap (each job's last attempt: a
    requeue clears the slot); ``engines``, pairs of jobs whose engine processes were alive at the same
    time on one node with the same ``CUDA_VISIBLE_DEVICES`` (found by the ``TALKFORGE_JOB`` marker) —
    what the hardware sees, including an engine left running after its job was settled.

Also, for the faults phase: ``kills`` (``kills_busy``: the worker was running a job), ``settle_p50_s`` /
``settle_max_s`` (kill → that attempt settled: requeued or ended, as the sampler saw it; with a 4 s stale
heartbeat expect 4–7 s), ``ssh_restart_settle_s`` (server down → every job that was running on an SSH
node settled), ``ssh_restart_recovery_s`` (server back → an engine started on an SSH node again),
``engines_left_running`` (engine processes alive 3 s after every job ended), and what went wrong on the
way: tracebacks in the processes' logs (each one's last line goes to stderr), failed housekeeping rounds,
``submit_errors`` (``job_submit`` raising after it committed the job: its on-commit placement failed),
``deadlocks`` (PostgreSQL aborting a transaction as a deadlock victim, in any process).

``value`` = succeeded jobs per minute in the faults phase, first submit to last end; ``baseline`` = the
same for the clean phase (same jobs, same workers, same process); ``ratio`` = value / baseline, the share
of throughput left under faults. ``ideal_jobs_per_min`` is the jobs' floor: 200 / (sum of their
``seconds`` / 8 slots), with no process start, dispatch or fault costs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from _harness import Bench, LoopbackSSHD, log, percentile, report, sshd_sessions

USERS = 5
GPUS_PER_NODE = 2
TICK = 0.2
# Errors the platform gives a job that one of our faults interrupted (jobs/reconcile.py, jobs/runner.py;
# "Cannot reach": an attempt that started while the SSH server was down).
INTERRUPTION_ERRORS = ("stopped responding", "was lost", "Cannot reach")


def write_fake_nvidia_smi(folder: Path, gpus: int) -> None:
    folder.mkdir(parents=True)
    lines = "\n".join(f"{i}, NVIDIA H100 80GB HBM3, 81559, 0, 0" for i in range(gpus))
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\ncat <<'CSV'\n{lines}\nCSV\n")
    (folder / "nvidia-smi").chmod(0o755)


def make_local_node(bench: Bench, name: str):
    """A local node whose stand-in nvidia-smi sits in its bare environment folder (first on its PATH)."""
    from gpu_nodes.models import Node
    from gpu_nodes.services import node_register_local

    bin_dir = bench.tmp / f"{name}-env"
    write_fake_nvidia_smi(bin_dir, GPUS_PER_NODE)
    node = node_register_local(name=name, workdir=str(bench.tmp / name), environment=str(bin_dir))
    if node.status != Node.Status.ONLINE or node.gpus.filter(present=True).count() != GPUS_PER_NODE:
        raise RuntimeError(f"local node probe failed: {node.last_error}")
    return node


class Fleet:
    """The RQ workers, per node; a killed one is replaced by a fresh process for the same node."""

    def __init__(self, bench: Bench, nodes):
        self.bench = bench
        self.workers: dict[int, tuple[str, object]] = {}  # pid → (node name, Popen)
        self.started = Counter()
        self.host = socket.gethostname()
        for node in nodes:
            for _ in range(GPUS_PER_NODE):
                self.start(node.name)

    def start(self, node_name: str) -> None:
        self.started[node_name] += 1
        process = self.bench.worker(node_name, f"{node_name}-w{self.started[node_name]}")
        self.workers[process.pid] = (node_name, process)

    def by_worker_name(self, worker_name: str):
        """``Job.worker_name`` is ``host:thread id``; a SimpleWorker runs jobs on its main thread (tid is
        the pid)."""
        host, _, tid = worker_name.rpartition(":")
        if host != self.host or not tid.isdigit():
            return None
        return self.workers.get(int(tid))

    def kill(self, pid: int) -> str:
        node_name, process = self.workers.pop(pid)
        process.service = False  # check_alive must not take its death for a failure
        os.kill(pid, signal.SIGKILL)
        process.wait(10)
        self.start(node_name)
        return node_name


def engine_scan(workdirs: dict[str, str]) -> list[tuple[str, str, int, int]]:
    """(node, CUDA_VISIBLE_DEVICES, job id, attempt) of every live engine process of this run's nodes,
    found by its command line (``-s <workdir>/jobs/<id>/…``) and its ``TALKFORGE_JOB`` marker."""
    from gpu_nodes.connections import MARKER_VARIABLE

    marker_prefix = f"{MARKER_VARIABLE}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if b"--model_path" not in argv or b"-s" not in argv:
                continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except (OSError, IndexError):
            continue  # gone meanwhile
        workdir = argv[argv.index(b"-s") + 1].decode(errors="replace").partition("/jobs/")[0]
        node = workdirs.get(workdir)
        marker = next(
            (item[len(marker_prefix) :] for item in environ if item.startswith(marker_prefix)), None
        )
        if node is None or marker is None:
            continue  # another run's engine, or a process that is not an engine attempt
        gpu = next((item[21:].decode() for item in environ if item.startswith(b"CUDA_VISIBLE_DEVICES=")), "?")
        job_id, _, attempt = marker.decode().partition(".")
        found.append((node, gpu, int(job_id), int(attempt)))
    return found


def interval_overlaps(rows: list[dict]) -> list[tuple[int, int, int]]:
    """(gpu, earlier job, later job) for final rows on one GPU whose started_at–finished_at overlap."""
    by_gpu = defaultdict(list)
    for row in rows:
        if row["gpu_id"] and row["started_at"] and row["finished_at"]:
            by_gpu[row["gpu_id"]].append(row)
    overlaps = []
    for gpu_id, jobs in by_gpu.items():
        jobs.sort(key=lambda row: row["started_at"])
        latest = None  # the job that ends last among those seen so far
        for row in jobs:
            if latest is not None and row["started_at"] < latest["finished_at"]:
                overlaps.append((gpu_id, latest["id"], row["id"]))
            if latest is None or row["finished_at"] > latest["finished_at"]:
                latest = row
    return overlaps


class Soak:
    """The nodes, users and jobs of one run, the two phases, and what the sampler saw on the way."""

    def __init__(self, bench: Bench, sshd: LoopbackSSHD, args):
        from accounts.models import User

        self.bench, self.sshd, self.args = bench, sshd, args
        self.rng = random.Random(args.seed)
        self.users = [User.objects.create_user(f"soak-{i}", password="soak-password-1") for i in range(USERS)]
        self.nodes = [make_local_node(bench, "soak-local-a"), make_local_node(bench, "soak-local-b")]
        self.nodes += [
            sshd.register_node("soak-ssh-a", GPUS_PER_NODE),
            sshd.register_node("soak-ssh-b", GPUS_PER_NODE),
        ]
        self.ssh_node_ids = {node.pk for node in self.nodes if node.kind == node.Kind.SSH}
        self.workdirs = {node.workdir.rstrip("/"): node.name for node in self.nodes}
        self.slots = len(self.nodes) * GPUS_PER_NODE

        # The same jobs for both phases: (owner, seconds), drawn once.
        self.specs = [
            (self.rng.choice(self.users), round(self.rng.uniform(0.3, 1.5), 2)) for _ in range(args.jobs)
        ]
        self.submitted: list[int] = []  # the current phase's jobs
        self.phase_floor = 0  # the highest job id before the phase
        self.submit_errors: list[str] = []
        self.phases: dict[str, dict] = {}
        self.kills: list[dict] = []
        # (job, attempt) → the faults (kills, the SSH restart) waiting for that attempt to be settled
        self.pending: defaultdict[tuple[int, int], list[dict]] = defaultdict(list)
        self.db_overlaps: set[tuple] = set()
        self.db_overlap_samples = 0
        self.engine_overlaps: set[tuple] = set()
        self.engine_twins: set[tuple] = set()  # one job's two attempts alive at once
        self.samples = 0
        self.ssh = {"stopped_at": None, "back_at": None, "victims": [], "settle_s": None, "recovery_s": None}

    # --- the parts of one tick --------------------------------------------------------------------

    def top_up(self, active: int) -> None:
        from django.db import DatabaseError

        from jobs.models import Job
        from jobs.services import job_submit

        room = min(len(self.specs) - len(self.submitted), 3 * self.slots - active, 8)
        for owner, seconds in self.specs[len(self.submitted) : len(self.submitted) + max(0, room)]:
            try:
                job = job_submit(
                    owner=owner,
                    kind="demo_train",
                    params={"seconds": seconds, "iterations": 10, "coarse_iterations": 10},
                    max_attempts=2,
                )
            except DatabaseError as error:
                # job_submit commits the job, then places it (on commit): a failed placement reaches us
                # although the job exists. The database says which jobs this phase has.
                self.submit_errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
                log(f"job_submit raised after its commit: {self.submit_errors[-1]}")
                self.submitted = list(
                    Job.objects.filter(pk__gt=self.phase_floor).order_by("pk").values_list("pk", flat=True)
                )
                return
            self.submitted.append(job.pk)

    def sample(self) -> list[tuple]:
        """Running jobs (id, gpu, attempts, worker, node, started_at, pid); notes double booking, settles."""
        from jobs.models import Job

        running = list(
            Job.objects.filter(status=Job.Status.RUNNING).values_list(
                "id", "gpu_id", "attempts", "worker_name", "node_id", "started_at", "pid"
            )
        )
        now = time.monotonic()  # settle times are read against this, not the tick's start
        self.samples += 1
        by_gpu = defaultdict(set)
        for job_id, gpu_id, *_ in running:
            if gpu_id is not None:
                by_gpu[gpu_id].add(job_id)
        shared = {(gpu_id, *sorted(jobs)) for gpu_id, jobs in by_gpu.items() if len(jobs) > 1}
        if shared:
            self.db_overlap_samples += 1
            self.db_overlaps |= shared
            log(f"DOUBLE BOOKED in the database: {shared}")
        engines_by_gpu, attempts_by_job = defaultdict(set), defaultdict(set)
        for node, gpu, job_id, attempt in engine_scan(self.workdirs):
            engines_by_gpu[(node, gpu)].add(job_id)
            attempts_by_job[job_id].add(attempt)
        for key, jobs in engines_by_gpu.items():
            if len(jobs) > 1:
                if (new := (*key, *sorted(jobs))) not in self.engine_overlaps:
                    log(f"DOUBLE BOOKED on the node: engines of jobs {sorted(jobs)} alive on {key}")
                self.engine_overlaps.add(new)
        for job_id, attempts in attempts_by_job.items():
            if len(attempts) > 1:
                self.engine_twins.add((job_id, *sorted(attempts)))
        # A fault's attempt is settled once the job is no longer running under that attempt number.
        current = {(job_id, attempts) for job_id, _, attempts, *_ in running}
        for key in [key for key in self.pending if key not in current]:
            for fault in self.pending.pop(key):
                fault["settle_s"] = round(now - fault["at"], 2)
        if self.ssh["back_at"] and self.ssh["recovery_s"] is None:
            back_wall = self.ssh["back_wall"]
            # An engine started (pid recorded) on an SSH node by an attempt claimed after the server is back.
            again = [row for row in running if row[4] in self.ssh_node_ids and row[6] is not None]
            if any(row[5].timestamp() > back_wall for row in again):
                self.ssh["recovery_s"] = round(now - self.ssh["back_at"], 2)
        victims = self.ssh["victims"]
        if victims and self.ssh["settle_s"] is None and all(v["settle_s"] is not None for v in victims):
            self.ssh["settle_s"] = max(victim["settle_s"] for victim in self.ssh["victims"])
        return running

    def kill_one(self, fleet: Fleet, running: list[tuple]) -> None:
        from jobs.models import Job

        busy = {}
        for job_id, _, attempts, worker_name, *_ in running:
            if (owned := fleet.by_worker_name(worker_name)) is not None:
                busy[owned[1].pid] = (job_id, attempts)
        if running and not busy:
            log("no live worker is running a job (the running ones are dead workers'): killing an idle one")
        pid = self.rng.choice(sorted(busy) or sorted(fleet.workers))
        killed_at = time.monotonic()
        node_name = fleet.kill(pid)
        kill = {"at": killed_at, "node": node_name, "job": None, "settle_s": None}
        if pid in busy:
            job_id, attempts = busy[pid]
            # It may have ended between the sample and the kill: then the kill hit an idle worker.
            row = (
                Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, attempts=attempts)
                .values("stage", "progress", "log_line_count")
                .first()
            )
            if row is not None:
                kill["job"] = job_id
                kill["state"] = row  # how far the attempt had got, as the database knew it
                self.pending[(job_id, attempts)].append(kill)
        self.kills.append(kill)
        log(f"kill {len(self.kills)}: worker {pid} of {node_name}, job {kill['job']}")

    def ssh_down(self, running: list[tuple]) -> None:
        now = time.monotonic()
        self.ssh["stopped_at"] = now
        for job_id, _, attempts, _, node_id, *_ in running:
            if node_id in self.ssh_node_ids:
                victim = {"at": now, "job": job_id, "settle_s": None}
                self.ssh["victims"].append(victim)
                self.pending[(job_id, attempts)].append(victim)
        sessions = sshd_sessions(self.sshd.server.process.pid)
        self.sshd.server.stop()  # the listener …
        for pid in sessions:  # … and every open connection
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        hit = len(self.ssh["victims"])
        log(f"sshd down, {len(sessions)} session processes cut; {hit} job(s) were running on SSH nodes")

    def ssh_up(self) -> None:
        self.sshd.server.start()
        self.ssh["back_at"], self.ssh["back_wall"] = time.monotonic(), time.time()
        log(f"sshd back after {self.ssh['back_at'] - self.ssh['stopped_at']:.1f} s")

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        fleet = Fleet(self.bench, self.nodes)
        self.bench.start(["manage.py", "housekeeping"], "housekeeping")
        for node in self.nodes:
            self.bench.wait_workers(node.queue_name, GPUS_PER_NODE, timeout=90)
        log(f"{len(fleet.workers)} workers and housekeeping up; {len(self.specs)} jobs per phase")
        self.phase("clean", fleet, faults=False)
        self.phase("faults", fleet, faults=True)

    def phase(self, name: str, fleet: Fleet, *, faults: bool) -> None:
        """Submit the jobs, with or without faults, until every one has ended (or the phase's limit)."""
        from jobs.models import Job

        self.submitted = []
        self.phase_floor = Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        started = time.monotonic()
        deadline = started + self.args.run_limit / 2
        next_kill = ssh_back_due = None
        while True:
            now = time.monotonic()
            self.bench.check_alive()
            active = Job.objects.filter(status__in=Job.ACTIVE_STATUSES).count()
            if len(self.submitted) < len(self.specs):
                self.top_up(active)
            elif active == 0:
                break
            if now > deadline:
                log(f"{name}: phase limit of {self.args.run_limit / 2:.0f} s reached, {active} job(s) active")
                break
            running = self.sample()
            if not faults:
                time.sleep(max(0.0, now + TICK - time.monotonic()))
                continue
            ended = len(self.submitted) - active
            if next_kill is None and ended > 0:
                next_kill = now + self.rng.uniform(1, self.args.kill_every)
            if next_kill is not None and now >= next_kill and len(self.kills) < self.args.max_kills:
                self.kill_one(fleet, running)
                next_kill = now + self.rng.uniform(0.5, 1.5) * self.args.kill_every
            if self.ssh["stopped_at"] is None and ended >= len(self.specs) // 2:
                self.ssh_down(running)
                ssh_back_due = self.ssh["stopped_at"] + self.args.ssh_down
            if ssh_back_due is not None and now >= ssh_back_due:
                ssh_back_due = None
                self.ssh_up()
            time.sleep(max(0.0, now + TICK - time.monotonic()))
        if ssh_back_due is not None:
            self.ssh_up()
        self.sample()  # settles what ended since the last tick
        self.phases[name] = {"jobs": list(self.submitted), "elapsed": time.monotonic() - started}
        log(f"{name}: over after {time.monotonic() - started:.1f} s, {len(self.kills)} kills")

    # --- afterwards -------------------------------------------------------------------------------

    def throughput(self, jobs: list) -> tuple[float, float]:
        """Succeeded jobs per minute from the first submit to the last end, and that span in seconds."""
        from jobs.models import Job

        span = [job.created_at for job in jobs] + [job.finished_at for job in jobs if job.finished_at]
        wall_s = (max(span) - min(span)).total_seconds()
        return 60 * sum(job.status == Job.Status.SUCCEEDED for job in jobs) / wall_s, wall_s

    def results(self) -> dict:
        from jobs.models import Job
        from jobs.selectors import job_log_lines

        time.sleep(3)  # engines of settled attempts die at their next write: give them that
        left_running = engine_scan(self.workdirs)
        clean_ids, fault_ids = self.phases["clean"]["jobs"], self.phases["faults"]["jobs"]
        jobs = list(Job.objects.filter(pk__in=clean_ids + fault_ids).order_by("pk"))
        lost, failed_after_faults, run_twice, no_complete_line = [], [], [], []
        for job in jobs:
            completions = sum(line.startswith("Training complete.") for line in job_log_lines(job))
            if completions > 1:
                run_twice.append(job.pk)
            if job.status == Job.Status.SUCCEEDED:
                if completions == 0:
                    no_complete_line.append(job.pk)
            elif (
                job.status == Job.Status.FAILED
                and job.attempts >= job.max_attempts
                and any(words in job.error for words in INTERRUPTION_ERRORS)
            ):
                failed_after_faults.append(job.pk)
            else:
                lost.append(job.pk)
        lost_reasons = Counter()
        for job in jobs:
            if job.pk in lost:
                reason = re.sub(r"[0-9]+|/\S+", "#", job.error.splitlines()[0] if job.error else "")[:70]
                lost_reasons[f"{job.status} {job.attempts}/{job.max_attempts}: {reason}"] += 1
            if job.pk in lost or job.pk in run_twice:
                error = job.error.splitlines()[0][:200] if job.error else ""
                log(f"  job {job.pk} {job.status} attempts {job.attempts}/{job.max_attempts}: {error}")
        rows = [
            {"id": job.pk, "gpu_id": job.gpu_id, "started_at": job.started_at, "finished_at": job.finished_at}
            for job in jobs
        ]
        overlaps = interval_overlaps(rows)
        double_booked_by = {
            "db_samples": self.db_overlap_samples,
            "intervals": len(overlaps),
            "engines": len(self.engine_overlaps),
        }
        fault_jobs = [job for job in jobs if job.pk in set(fault_ids)]
        clean_jobs = [job for job in jobs if job.pk in set(clean_ids)]
        value, wall_s = self.throughput(fault_jobs)
        baseline, clean_wall_s = self.throughput(clean_jobs)
        ideal_s = sum(seconds for _, seconds in self.specs) / self.slots
        statuses = Counter(job.status for job in fault_jobs)
        settles = [kill["settle_s"] for kill in self.kills if kill["settle_s"] is not None]
        unsettled = [kill for kill in self.kills if kill["job"] is not None and kill["settle_s"] is None]
        logs = {path.stem: path.read_text(errors="replace") for path in self.bench.tmp.glob("*.log")}
        for name, text in sorted(logs.items()):
            for match in re.finditer(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*(.*)", text):
                log(f"  traceback in {name}.log: {match.group(1)[:200]}")
        by_id = {job.pk: job for job in jobs}
        faults = [("kill", fault) for fault in self.kills] + [("ssh", fault) for fault in self.ssh["victims"]]
        for what, fault in faults:
            if fault["job"] is not None:
                job = by_id[fault["job"]]
                settled, state = fault["settle_s"], fault.get("state", "")
                log(f"  {what} → job {job.pk}: {job.status}, {job.attempts} tries, settled in {settled} s")
                if state:
                    log(f"    when killed: {state}")
        return {
            "value": round(value, 1),
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "lost": len(lost),
            "run_twice": len(run_twice),
            "double_booked": sum(double_booked_by.values()),
            "double_booked_by": double_booked_by,
            "jobs": len(fault_jobs),
            "succeeded": statuses[Job.Status.SUCCEEDED],
            "failed": statuses[Job.Status.FAILED],
            "failed_after_faults": len(failed_after_faults),
            "retried": sum(job.attempts > 1 for job in fault_jobs),
            "clean_succeeded": sum(job.status == Job.Status.SUCCEEDED for job in clean_jobs),
            "kills": len(self.kills),
            "kills_busy": sum(kill["job"] is not None for kill in self.kills),
            "kills_unsettled": len(unsettled),
            "settle_p50_s": round(percentile(settles, 50), 2) if settles else None,
            "settle_max_s": max(settles) if settles else None,
            "ssh_restart_jobs_hit": len(self.ssh["victims"]),
            "ssh_restart_settle_s": self.ssh["settle_s"],
            "ssh_restart_recovery_s": self.ssh["recovery_s"],
            "ssh_down_s": round(self.ssh["back_at"] - self.ssh["stopped_at"], 2)
            if self.ssh["back_at"]
            else None,
            "engines_left_running": len({(job_id, attempt) for _, _, job_id, attempt in left_running}),
            "engine_attempts_alive_together": len(self.engine_twins),
            "succeeded_without_complete_line": len(no_complete_line),
            "tracebacks_in_logs": sum(
                text.count("Traceback (most recent call last)") for text in logs.values()
            ),
            "reconciler_stop_failures": logs.get("housekeeping", "").count("could not stop what job"),
            "housekeeping_rounds_failed": logs.get("housekeeping", "").count("housekeeping round failed"),
            "submit_errors": len(self.submit_errors),
            "deadlocks": sum(text.count("OperationalError: deadlock detected") for text in logs.values())
            + sum("deadlock detected" in error for error in self.submit_errors),
            "wall_s": round(wall_s, 1),
            "clean_wall_s": round(clean_wall_s, 1),
            "ideal_jobs_per_min": round(60 * len(self.specs) / ideal_s, 1),
            "samples": self.samples,
            "lost_reasons": dict(lost_reasons.most_common(6)),
            "lost_ids": lost[:20],
            "run_twice_ids": run_twice[:20],
            "double_booked_examples": [
                list(x) for x in [*self.db_overlaps, *overlaps, *self.engine_overlaps][:10]
            ],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between worker kills")
    parser.add_argument("--max-kills", type=int, default=40)
    parser.add_argument("--ssh-down", type=float, default=2.0, help="seconds the SSH server stays down")
    parser.add_argument("--run-limit", type=float, default=330, help="seconds the jobs may take in all")
    parser.add_argument("--hard-limit", type=int, default=470, help="seconds before the bench gives up")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", type=Path, help="copy the processes' logs to this folder at the end")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1_000_000)

    def give_up(signum, frame):
        raise TimeoutError(f"the soak bench ran past its hard limit of {args.hard_limit} s")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.hard_limit)  # the harness still cleans up: the exception leaves its with-blocks
    with Bench("soak") as bench, LoopbackSSHD(bench) as sshd:
        load = bench.load_at_start
        # Read by the worker and housekeeping subprocesses (they copy this environment when started).
        os.environ["MEDIA_ROOT"] = str(bench.tmp / "media")
        os.environ["NODE_PROBE_INTERVAL"] = "5"
        soak = Soak(bench, sshd, args)
        try:
            soak.run()
            figures = soak.results()
        finally:
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for path in [*bench.tmp.glob("*.log"), sshd.folder / "sshd.log"]:
                    if path.exists():
                        shutil.copy(path, args.keep_logs / path.name)
    signal.alarm(0)

    report(
        bench="soak",
        value=figures.pop("value"),
        unit="succeeded_jobs_per_min",
        baseline=figures.pop("baseline"),
        baseline_name="clean_run_same_jobs_no_faults_succeeded_per_min",
        ratio=figures.pop("ratio"),
        **figures,
        seed=args.seed,
        load_1m_at_start=load,
        cpus=os.cpu_count(),
    )
    if figures["lost"] or figures["run_twice"] or figures["double_booked"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
