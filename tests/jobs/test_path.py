"""The whole job path with real parts: API → PostgreSQL → placement → Redis/RQ → worker subprocess →
demo engine process tree → websocket. Only the GPUs are stand-ins (an nvidia-smi script)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from accounts.services import api_token_rotate
from gpu_nodes.connections import _group_members
from jobs.models import Job
from jobs.selectors import job_log_lines
from jobs.services import job_submit
from talkforge.asgi import application
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = {"seconds": 1.5, "iterations": 200, "coarse_iterations": 100, "save_every": 100}
LONG = {"seconds": 120, "iterations": 20000, "coarse_iterations": 1000, "save_every": 100000}


def api_for(user) -> tuple[APIClient, str]:
    key = api_token_rotate(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client, key


def finished(job_id: int, timeout: float = 60) -> Job:
    return wait_for(
        lambda: (job := Job.objects.get(pk=job_id)).is_terminal and job,
        timeout,
        message=f"job {job_id} to end",
    )


def engine_console_lines(job: Job) -> list[str]:
    """What the engine printed, from its own byte-exact console.log, cut at \\r, \\n and \\r\\n."""
    raw = (Path(job.result["model_path"]) / "console.log").read_bytes().decode()
    lines = re.split(r"\r\n|\r|\n", raw)
    return lines[:-1] if lines and lines[-1] == "" else lines


async def collect_events(key: str, job_id: int, timeout: float = 60) -> list[dict]:
    communicator = WebsocketCommunicator(
        application, f"/ws/jobs/{job_id}/", headers=[(b"authorization", f"Token {key}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    received = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await communicator.receive_json_from(timeout=deadline - asyncio.get_running_loop().time())
        received.append(message)
        if message["type"] in ("status", "snapshot") and message["status"] in Job.TERMINAL_STATUSES:
            break
    await communicator.disconnect()
    return received


def test_job_submitted_through_api_runs_on_local_node_and_streams_every_line_in_order(
    alice, make_node, processes, redis_db
):
    make_node()
    processes.worker("local")
    client, key = api_for(alice)

    response = client.post("/api/jobs/", {"kind": "demo_train", "params": QUICK}, format="json")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    events = async_to_sync(collect_events)(key, job_id)

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert events[0]["type"] == "snapshot"
    assert events[-1]["status"] == "succeeded"

    # Lines arrive numbered, contiguous, each once: snapshot lines, then live ones.
    streamed: list[str] = []
    for event in events:
        if event["type"] == "snapshot":
            assert event["log_first"] == 1
            streamed = list(event["log"])
        elif event["type"] == "log":
            assert event["first"] == len(streamed) + 1
            streamed.extend(event["lines"])
    stored = job_log_lines(job)
    assert stored == engine_console_lines(job)
    assert streamed == stored
    assert job.log_line_count == len(stored)
    assert any(line.startswith("Training progress: 100%") for line in stored)

    # Progress only moves forward and ends complete, with the engine's own figures.
    progress = [e["progress"] for e in events if e["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert job.progress == 1.0 and "psnr" in job.metrics and "loss" in job.metrics
    stages = [e["stage"] for e in events if e["type"] == "progress"]
    assert "coarse" in stages and "fine" in stages and stages.index("coarse") < stages.index("fine")
    assert client.get(f"/api/jobs/{job_id}/log/?format=txt").content.decode() == "\n".join(stored)


def test_two_jobs_on_a_one_gpu_node_never_overlap(alice, make_node, processes, redis_db):
    make_node(gpus=1)
    processes.worker("local", name="w1")
    processes.worker("local", name="w2")
    first = job_submit(owner=alice, kind="demo_train", params=QUICK)
    second = job_submit(owner=alice, kind="demo_train", params=QUICK)
    first, second = finished(first.pk), finished(second.pk)

    assert first.status == second.status == Job.Status.SUCCEEDED
    assert first.gpu_id == second.gpu_id
    earlier, later = sorted([first, second], key=lambda job: job.started_at)
    assert earlier.finished_at <= later.started_at


def test_two_jobs_on_a_two_gpu_node_run_side_by_side(alice, make_node, processes, redis_db):
    make_node(gpus=2)
    processes.worker("local", name="w1")
    processes.worker("local", name="w2")
    slow = {**QUICK, "seconds": 3}
    first = job_submit(owner=alice, kind="demo_train", params=slow)
    second = job_submit(owner=alice, kind="demo_train", params=slow)
    first, second = finished(first.pk), finished(second.pk)

    assert first.status == second.status == Job.Status.SUCCEEDED
    assert {first.gpu.label, second.gpu.label} == {"GPU0", "GPU1"}
    assert first.started_at < second.finished_at and second.started_at < first.finished_at


def running_with_output(job_id: int) -> Job:
    return wait_for(
        lambda: (
            (job := Job.objects.get(pk=job_id)).status == Job.Status.RUNNING
            and job.log_line_count > 5
            and job
        ),
        30,
        message=f"job {job_id} to run and print",
    )


def test_cancel_mid_run_kills_the_process_tree_and_frees_the_slot(alice, make_node, processes, redis_db):
    make_node()
    processes.worker("local")
    client, _ = api_for(alice)
    long_job = job_submit(owner=alice, kind="demo_train", params=LONG)
    waiting = job_submit(owner=alice, kind="demo_train", params=QUICK)
    running = running_with_output(long_job.pk)
    assert _group_members(running.pid, running.marker), "the engine should be running"
    assert Job.objects.get(pk=waiting.pk).gpu_id is None, "the only slot is taken"

    response = client.post(f"/api/jobs/{long_job.pk}/cancel/")
    assert response.status_code == 200

    canceled = finished(long_job.pk, timeout=20)
    assert canceled.status == Job.Status.CANCELED
    assert _group_members(running.pid, running.marker) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(running.pid, 0)
    assert finished(waiting.pk).status == Job.Status.SUCCEEDED
    assert Job.objects.get(pk=waiting.pk).gpu_id == running.gpu_id


def test_worker_killed_mid_job_is_settled_within_30_s_and_its_slot_serves_the_next_job(
    alice, make_node, processes, redis_db
):
    make_node()
    doomed = processes.worker("local", name="doomed")
    victim = job_submit(owner=alice, kind="demo_train", params=LONG)
    running = running_with_output(victim.pk)
    following = job_submit(owner=alice, kind="demo_train", params=QUICK)

    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    processes.start(["manage.py", "housekeeping"], "housekeeping")
    processes.worker("local", name="replacement")

    settled = finished(victim.pk, timeout=30)
    assert time.monotonic() - killed_at < 30
    assert settled.status == Job.Status.FAILED
    assert "stopped responding" in settled.error
    assert _group_members(running.pid, running.marker) == []
    after = finished(following.pk, timeout=30)
    assert after.status == Job.Status.SUCCEEDED
    assert after.gpu_id == running.gpu_id
    assert time.monotonic() - killed_at < 30 + 10


def test_job_with_retries_left_is_requeued_when_its_worker_dies(alice, make_node, processes, redis_db):
    make_node()
    doomed = processes.worker("local", name="doomed")
    job = job_submit(owner=alice, kind="demo_train", params={**QUICK, "seconds": 8}, max_attempts=2)
    first_attempt = running_with_output(job.pk)
    os.kill(doomed.pid, signal.SIGKILL)
    processes.start(["manage.py", "housekeeping"], "housekeeping")
    processes.worker("local", name="replacement")

    job = finished(job.pk, timeout=60)
    assert job.status == Job.Status.SUCCEEDED
    assert job.attempts == 2
    assert _group_members(first_attempt.pid, first_attempt.marker) == []
    lines = job_log_lines(job)
    # The first attempt's lines are kept; the second attempt's follow them.
    assert sum(line.startswith("Optimizing ") for line in lines) == 2
    assert lines[-1].startswith("Training complete.")


def test_jobs_waiting_when_redis_is_emptied_all_run_exactly_once(alice, make_node, processes, redis_db):
    make_node()
    jobs = [job_submit(owner=alice, kind="demo_train", params={**QUICK, "seconds": 0.5}) for _ in range(3)]
    placed = Job.objects.filter(pk__in=[j.pk for j in jobs], gpu__isnull=False)
    assert placed.count() == 1, "one slot: one job placed and enqueued, two waiting in the database"
    redis_db.flushdb()  # Redis restarts empty: the placed job's queue entry is gone

    processes.start(["manage.py", "housekeeping"], "housekeeping")
    processes.worker("local")
    done = [finished(job.pk, timeout=60) for job in jobs]

    assert [job.status for job in done] == [Job.Status.SUCCEEDED] * 3
    assert [job.attempts for job in done] == [1, 1, 1]
    for job in done:
        assert sum(line.startswith("Optimizing ") for line in job_log_lines(job)) == 1


def test_a_job_enqueued_twice_still_runs_once(alice, make_node, processes, redis_db):
    from jobs import queue

    make_node()
    job = job_submit(owner=alice, kind="demo_train", params=QUICK)
    job.refresh_from_db()
    queue.enqueue(job)  # a duplicate entry, as a reconciler racing a slow enqueue could make
    processes.worker("local")

    job = finished(job.pk)
    time.sleep(1)  # let the duplicate be picked up and skipped
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 1
    assert sum(line.startswith("Optimizing ") for line in job_log_lines(job)) == 1


def test_engine_failure_fails_the_job_with_the_engine_s_last_words(alice, make_node, processes, redis_db):
    make_node()
    processes.worker("local")
    job = job_submit(owner=alice, kind="demo_train", params={**QUICK, "fail_at": 50})
    job = finished(job.pk)
    assert job.status == Job.Status.FAILED
    assert "exited with code 1" in job.error
    assert "demo failure requested" in job.error
    assert job.gpu.jobs.filter(status__in=Job.ACTIVE_STATUSES).count() == 0


def test_a_job_past_its_time_limit_is_stopped_with_its_whole_tree(alice, make_node, processes, redis_db):
    make_node()
    processes.worker("local")
    client, _ = api_for(alice)
    response = client.post(
        "/api/jobs/", {"kind": "demo_train", "params": LONG, "timeout_seconds": 3}, format="json"
    )
    assert response.status_code == 201, response.content
    running = running_with_output(response.json()["id"])
    job = finished(running.pk, timeout=20)
    assert job.status == Job.Status.FAILED
    assert "time limit of 3 s" in job.error
    assert (job.finished_at - job.started_at).total_seconds() < 10
    assert _group_members(running.pid, running.marker) == []


def test_a_worker_stopped_by_force_stops_its_engine_and_settles_the_job(
    alice, make_node, processes, redis_db
):
    make_node()
    worker = processes.worker("local")
    job = job_submit(owner=alice, kind="demo_train", params=LONG)
    running = running_with_output(job.pk)

    # The first SIGTERM asks for a warm shutdown (RQ would wait for the job); one that comes 1 s or more
    # after RQ handled the first forces it (rq/worker/base.py request_force_stop ignores one sooner). RQ
    # may handle a signal late on a loaded machine, so it is sent again every 1.5 s until the worker ends.
    deadline = time.monotonic() + 30
    while worker.poll() is None and time.monotonic() < deadline:
        os.kill(worker.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(1.5)
    worker.wait(1)

    job = Job.objects.get(pk=job.pk)
    assert job.status == Job.Status.FAILED
    assert "its worker was stopped" in job.error
    assert _group_members(running.pid, running.marker) == []
