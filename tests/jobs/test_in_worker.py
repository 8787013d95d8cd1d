"""Kinds that run in the worker's own process (``KindSpec.run``, chat replies) get what a node command gets:
the claim, heartbeats, log and progress, cancel, the time limit, and one settled outcome. Run here through
the runner's own entry point (``run_job``) on a placed job."""

from __future__ import annotations

import threading
import time

import pytest

from jobs.kinds import KINDS, KindSpec, register
from jobs.models import Job, JobLogChunk
from jobs.runner import run_job
from jobs.services import job_cancel, job_submit

KIND = "in_worker_test"
# The runner's watcher thread has its own database connection: it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def in_worker_kind(settings):
    """A kind whose work is ``behaviour(job, context)``, set by each test."""
    settings.JOB_HEARTBEAT_INTERVAL = 0.1
    box = {}

    def run(job, context):
        return box["behaviour"](job, context)

    register(KIND, KindSpec(label="test", plan=None, clean=lambda params, owner: params, run=run))
    yield box
    KINDS.pop(KIND)


@pytest.fixture
def placed(alice, make_node, django_capture_on_commit_callbacks, monkeypatch):
    """Submit a job of the test kind; placement takes the local node's slot (the RQ enqueue is skipped:
    the test calls the runner itself)."""
    make_node()
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)

    def submit(**options) -> Job:
        with django_capture_on_commit_callbacks(execute=True):
            job = job_submit(owner=alice, kind=KIND, params={}, **options)
        job.refresh_from_db()
        assert job.gpu_id is not None
        return job

    return submit


def log_of(job: Job) -> str:
    return "\n".join(chunk.text for chunk in JobLogChunk.objects.filter(job=job).order_by("first_line"))


def test_the_work_runs_logs_beats_and_succeeds(in_worker_kind, placed):
    beats = []

    def work(job, context):
        for step in range(3):
            context.log(f"step {step}", stage=f"stage {step}", progress=(step + 1) / 3)
            time.sleep(0.15)
            beats.append(Job.objects.get(pk=job.pk).heartbeat_at)
        return {"answer": 42}

    in_worker_kind["behaviour"] = work
    job = placed()
    assert run_job(job.pk) == "succeeded"
    job.refresh_from_db()
    assert (job.status, job.result, job.progress, job.stage) == (
        Job.Status.SUCCEEDED,
        {"answer": 42},
        1.0,
        "done",
    )
    assert log_of(job) == "step 0\nstep 1\nstep 2"
    assert len(set(beats)) > 1  # the heartbeat moved while the work ran


def test_a_result_with_an_error_fails_the_job_with_it(in_worker_kind, placed):
    in_worker_kind["behaviour"] = lambda job, context: {"error": "The LLM refused the key."}
    job = placed()
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert (job.status, job.error) == (Job.Status.FAILED, "The LLM refused the key.")


def test_a_crash_fails_the_job_and_names_it(in_worker_kind, placed):
    def work(job, context):
        raise RuntimeError("boom")

    in_worker_kind["behaviour"] = work
    job = placed()
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error == "Internal error while running the job: RuntimeError: boom"


def test_cancel_turns_should_stop_true_and_the_job_ends_canceled(in_worker_kind, placed):
    def work(job, context):
        deadline = time.monotonic() + 10
        while not context.should_stop():
            assert time.monotonic() < deadline, "should_stop never turned true"
            time.sleep(0.02)
        return {"stopped": True}

    in_worker_kind["behaviour"] = work
    job = placed()
    threading.Timer(0.3, lambda: job_cancel(job=Job.objects.get(pk=job.pk))).start()
    started = time.monotonic()
    assert run_job(job.pk) == "canceled"
    assert time.monotonic() - started < 3
    job.refresh_from_db()
    assert (job.status, job.result) == (Job.Status.CANCELED, {"stopped": True})


def test_the_time_limit_stops_the_work(in_worker_kind, placed):
    def work(job, context):
        while not context.should_stop():
            time.sleep(0.02)
        return {}

    in_worker_kind["behaviour"] = work
    job = placed(timeout_seconds=1)
    assert run_job(job.pk) == "timed out"
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "time limit of 1 s" in job.error
