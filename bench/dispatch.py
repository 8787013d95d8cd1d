"""Dispatch latency: ``job_submit`` → the engine process started on a local node, beside RQ's own floor.

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/dispatch.py``.

What "engine process started" means here
    The moment ``Popen`` has returned in the runner, i.e. the engine process exists (forked and exec'd).
    Nothing in the product records that instant by itself, and the candidates are poor: ``/proc/<pid>/stat``
    start time has 10 ms granularity; ``Job.started_at`` is taken at the claim, *before* the plan, the
    job folder and ``Popen``; polling the database for ``Job.pid`` adds the poll interval and loads the
    2 cores the worker needs. So the benchmark installs, in its own throw-away database only, an
    ``AFTER UPDATE`` trigger on ``jobs_job`` that records ``clock_timestamp()`` when ``pid`` goes from
    NULL to a value. The runner issues that UPDATE (autocommit) as the very next statement after
    ``Popen`` returns, so the trigger time is ``Popen`` returned + one loopback round trip to PostgreSQL
    (well under 1 ms). PostgreSQL runs on this host, so its ``clock_timestamp()`` and our ``time.time()``
    read the same clock (the offset is measured and reported as ``pg_clock_offset_ms``).

    ``value`` = p50 of (trigger time of ``pid`` set − ``time.time()`` just before ``job_submit``).
    Also reported: p95, and the p50 of submit → ``Job.started_at`` (the claim), plus a per-hop
    breakdown (insert, placement, RQ enqueue, RQ pickup, claim, Popen) from the same trigger and from
    RQ's own ``enqueued_at``/``started_at``, to show where the time goes.

Each job is ``demo_train`` with ``seconds=0`` and 10+10 iterations; the benchmark waits for it to finish
(a NOTIFY from the trigger) and for RQ to record it finished before the next submit, so every sample
starts with an idle worker blocked in RQ's dequeue.

Baseline: RQ's floor in the same run, interleaved sample by sample with ours: ``Queue.enqueue`` of a
trivial function (``_harness.rq_floor_probe``, which pushes ``time.time()`` to a Redis list as its first
act) served by an RQ ``SimpleWorker`` subprocess (the same worker class as ``manage.py worker``);
baseline = p50 of enqueue → function start. ``ratio`` = value / baseline. Target: p50 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC
from pathlib import Path

from _harness import Bench, log, percentile, report

FLOOR_QUEUE = "bench-floor"
JOB_PARAMS = {"seconds": 0, "iterations": 10, "coarse_iterations": 10, "save_every": 100000}

TRIGGER_SQL = """
CREATE TABLE bench_job_event (job_id bigint NOT NULL, what text NOT NULL, at double precision NOT NULL);
CREATE FUNCTION bench_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_s double precision := extract(epoch FROM clock_timestamp())::double precision;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bench_job_event VALUES (NEW.id, 'created', now_s);
        RETURN NEW;
    END IF;
    IF OLD.gpu_id IS NULL AND NEW.gpu_id IS NOT NULL THEN
        INSERT INTO bench_job_event VALUES (NEW.id, 'placed', now_s);
    END IF;
    IF OLD.status <> 'running' AND NEW.status = 'running' THEN
        INSERT INTO bench_job_event VALUES (NEW.id, 'claimed', now_s);
    END IF;
    IF OLD.pid IS NULL AND NEW.pid IS NOT NULL THEN
        INSERT INTO bench_job_event VALUES (NEW.id, 'pid', now_s);
    END IF;
    IF OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running') THEN
        INSERT INTO bench_job_event VALUES (NEW.id, 'finished', now_s);
        PERFORM pg_notify('bench_job_done', NEW.id::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_job_event AFTER INSERT OR UPDATE ON jobs_job
    FOR EACH ROW EXECUTE FUNCTION bench_job_event();
"""

FLOOR_WORKER = """
import os, redis
from rq import Queue, SimpleWorker
connection = redis.Redis.from_url(os.environ["REDIS_URL"])
worker = SimpleWorker([Queue(%r, connection=connection)], connection=connection, name="bench-floor")
worker.work(with_scheduler=False, logging_level="WARNING")
""" % (FLOOR_QUEUE,)  # noqa: UP031 - the code is itself Python source with braces


def epoch(moment) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def wait_rq_finished(rq_job_id: str, timeout: float = 10) -> None:
    """Until RQ has recorded the job as ended: its worker is then back on its way to the dequeue."""
    from jobs.queue import RQ_ENDED, rq_state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rq_state(rq_job_id) in RQ_ENDED:
            return
        time.sleep(0.005)
    raise RuntimeError(f"RQ job {rq_job_id} did not end within {timeout:.0f} s")


def make_node(bench: Bench):
    from gpu_nodes.models import Node
    from gpu_nodes.services import node_probe

    # No nvidia-smi on PATH: the node gets its single CPU slot.
    os.environ["PATH"] = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()
    )
    workdir = bench.tmp / "node"
    workdir.mkdir()
    node = Node.objects.create(name=f"bench-{os.getpid()}", kind=Node.Kind.LOCAL, workdir=str(workdir))
    node = node_probe(node=node)
    if node.status != Node.Status.ONLINE or node.gpus.count() != 1:
        raise RuntimeError(f"node probe failed: {node.last_error}")
    return node


class Ours:
    def __init__(self, bench: Bench, owner, listener):
        self.bench, self.owner, self.listener = bench, owner, listener

    def sample(self) -> dict:
        from django.db import connection

        from core.queues import redis_connection
        from jobs.models import Job
        from jobs.queue import RQJob
        from jobs.services import job_submit

        t0 = time.time()
        job = job_submit(owner=self.owner, kind="demo_train", params=JOB_PARAMS)
        t_returned = time.time()
        for notify in self.listener.notifies(timeout=30):
            if notify.payload == str(job.pk):
                break
        else:
            self.bench.check_alive()
            raise RuntimeError(f"job {job.pk} did not finish within 30 s:\n{self.bench.log_tail('worker')}")
        wait_rq_finished(str(job.rq_job_id))
        job.refresh_from_db()
        if job.status != Job.Status.SUCCEEDED:
            raise RuntimeError(f"job {job.pk} {job.status}: {job.error}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT what, at FROM bench_job_event WHERE job_id = %s", [job.pk])
            at = dict(cursor.fetchall())
        rq_job = RQJob.fetch(str(job.rq_job_id), connection=redis_connection())
        return {
            "t0": t0,
            "returned": t_returned,
            **at,
            "started_at": epoch(job.started_at),
            "rq_enqueued": epoch(rq_job.enqueued_at),
            "rq_started": epoch(rq_job.started_at),
        }


class Floor:
    def __init__(self):
        from rq import Queue

        from core.queues import redis_connection

        self.redis = redis_connection()
        self.queue = Queue(FLOOR_QUEUE, connection=self.redis)
        self.count = 0

    def sample(self) -> dict:
        self.count += 1
        key = f"bench-floor:{self.count}"
        t0 = time.time()
        rq_job = self.queue.enqueue("_harness.rq_floor_probe", key, result_ttl=600)
        reply = self.redis.blpop([key], timeout=30)
        if reply is None:
            raise RuntimeError("the RQ floor probe did not run within 30 s")
        wait_rq_finished(rq_job.id)
        return {"t0": t0, "started": float(reply[1])}


def pg_clock_offset_ms() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        offsets = []
        for _ in range(5):
            before = time.time()
            cursor.execute("SELECT extract(epoch FROM clock_timestamp())::double precision")
            (pg_now,) = cursor.fetchone()
            after = time.time()
            offsets.append(pg_now - (before + after) / 2)
    return 1000 * percentile(offsets, 50)


def ms(samples: list[dict], start: str, end: str, pct: float = 50) -> float:
    values = [1000 * (s[end] - s[start]) for s in samples if s.get(start) and s.get(end)]
    return round(percentile(values, pct), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0.05, help="idle seconds before each sample")
    args = parser.parse_args()

    with Bench("dispatch") as bench:
        import psycopg
        from django.db import connection

        from accounts.models import User

        load = bench.load_at_start
        with connection.cursor() as cursor:
            cursor.execute(TRIGGER_SQL)
        offset = pg_clock_offset_ms()
        owner = User.objects.create_user("bench-owner", password="bench-password-1")
        node = make_node(bench)
        bench.worker(node.name, "worker")
        bench.start(["-c", FLOOR_WORKER], "floor-worker")
        bench.wait_workers(node.queue_name, 1)
        bench.wait_workers(FLOOR_QUEUE, 1)

        db = connection.settings_dict
        listener = psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
        )
        try:
            listener.execute("LISTEN bench_job_done")
            ours, floor = Ours(bench, owner, listener), Floor()
            our_samples, floor_samples = [], []
            started = time.monotonic()
            for index in range(args.warmup + args.samples):
                # Interleaved, so both sides see the same noise.
                time.sleep(args.settle)
                our_sample = ours.sample()
                time.sleep(args.settle)
                floor_sample = floor.sample()
                if index >= args.warmup:
                    our_samples.append(our_sample)
                    floor_samples.append(floor_sample)
            log(f"{len(our_samples)} samples each in {time.monotonic() - started:.1f} s")
        finally:
            listener.close()

    ours_ms = [1000 * (s["pid"] - s["t0"]) for s in our_samples]
    floor_ms = [1000 * (s["started"] - s["t0"]) for s in floor_samples]
    value, baseline = percentile(ours_ms, 50), percentile(floor_ms, 50)
    breakdown = {
        "submit_returned": ms(our_samples, "t0", "returned"),
        "submit_to_insert": ms(our_samples, "t0", "created"),
        "insert_to_placed": ms(our_samples, "created", "placed"),
        "placed_to_rq_enqueued": ms(our_samples, "placed", "rq_enqueued"),
        "rq_enqueued_to_rq_started": ms(our_samples, "rq_enqueued", "rq_started"),
        "rq_started_to_claimed": ms(our_samples, "rq_started", "claimed"),
        "claimed_to_popen_returned": ms(our_samples, "claimed", "pid"),
    }
    for name, p50 in breakdown.items():
        log(f"  p50 {name:28s} {p50:8.2f} ms")
    log(f"  ours p50 {value:.2f} ms p95 {percentile(ours_ms, 95):.2f} ms; RQ floor p50 {baseline:.2f} ms")
    report(
        bench="dispatch",
        value=round(value, 2),
        unit="ms",
        baseline=round(baseline, 2),
        baseline_name="rq_simpleworker_enqueue_to_function_start_p50",
        ratio=round(value / baseline, 2),
        p95=round(percentile(ours_ms, 95), 2),
        p99=round(percentile(ours_ms, 99), 2),
        target=50,
        metric="submit_to_engine_popen_returned_p50",
        submit_to_claim_started_at_p50=ms(our_samples, "t0", "started_at"),
        baseline_p95=round(percentile(floor_ms, 95), 2),
        breakdown_p50_ms=breakdown,
        samples=len(ours_ms),
        pg_clock_offset_ms=round(offset, 3),
        load_1m_at_start=load,
        cpus=os.cpu_count(),
    )


if __name__ == "__main__":
    main()
