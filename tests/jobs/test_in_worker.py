"""Kinds that run in the worker's own process (``KindSpec.run``, chat replies; ``before_plan``, a plan
kind's first step) get what a node command gets: the claim, heartbeats, log and progress, cancel, the time
limit, and one settled outcome. Run here through the runner's own entry point (``run_job``) on a placed
job."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

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


# --- a plan kind's in-worker first step (KindSpec.before_plan: a video from text's speech) --------------

PLAN_KIND = "before_plan_test"


@pytest.fixture
def plan_kind_with_a_first_step(settings, alice, make_node, django_capture_on_commit_callbacks, monkeypatch):
    """A plan kind (the node echoes a line) whose first step is ``box["first"](job, context)``, in the
    worker; ``box["plans"]`` counts the plans built. Returns (box, submit)."""
    from gpu_nodes.runtime import Invocation
    from jobs.console import ConsoleParser
    from jobs.kinds import Plan

    settings.JOB_HEARTBEAT_INTERVAL = 0.1
    box = {"plans": 0}

    def plan(job):
        box["plans"] += 1
        done = Job.objects.get(pk=job.pk).result.get("first")  # what the first step left, read by the plan
        return Plan(invocation=Invocation(argv=["echo", f"node step after {done}"]), parser=ConsoleParser(),
                    outputs={})  # fmt: skip

    register(PLAN_KIND, KindSpec(label="test", plan=plan, clean=lambda params, owner: params,
                                 before_plan=lambda job, context: box["first"](job, context)))  # fmt: skip
    make_node()
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)

    def submit() -> Job:
        with django_capture_on_commit_callbacks(execute=True):
            job = job_submit(owner=alice, kind=PLAN_KIND, params={})
        job.refresh_from_db()
        return job

    yield box, submit
    KINDS.pop(PLAN_KIND)


def test_the_first_step_runs_in_the_worker_then_the_plan_on_the_node(plan_kind_with_a_first_step):
    box, submit = plan_kind_with_a_first_step
    beats = []

    def first(job, context):
        context.log("speaking", stage="speech", progress=0.0)
        time.sleep(0.3)
        beats.append(Job.objects.get(pk=job.pk).heartbeat_at)
        Job.objects.filter(pk=job.pk).update(result={"first": "the speech"})
        context.log("spoken")

    box["first"] = first
    job = submit()
    assert run_job(job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and box["plans"] == 1
    # One log: the first step's lines, then the node's, numbered on.
    assert log_of(job).splitlines() == ["speaking", "spoken", "node step after the speech"]
    assert job.log_line_count == 3 and beats[0] is not None


def test_a_first_step_that_cannot_be_done_fails_the_job_with_its_message_and_builds_no_plan(
    plan_kind_with_a_first_step,
):
    from core.errors import ServiceError

    box, submit = plan_kind_with_a_first_step

    def first(job, context):
        raise ServiceError("The spoken text is 12.00 s long; the limit is 0.2 minutes.")

    box["first"] = first
    job = submit()
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error == "The spoken text is 12.00 s long; the limit is 0.2 minutes." and box["plans"] == 0

    box["first"] = lambda job, context: 1 / 0  # a bug: an internal error, with its kind
    job = submit()
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error == "Internal error while running the job: ZeroDivisionError: division by zero"


def test_a_cancel_during_the_first_step_stops_it_and_the_plan_never_runs(plan_kind_with_a_first_step):
    box, submit = plan_kind_with_a_first_step

    def first(job, context):
        def cancel():  # the person's cancel, from another process's connection
            job_cancel(job=Job.objects.get(pk=job.pk))
            connection.close()

        canceler = threading.Timer(0.2, cancel)
        canceler.start()
        deadline = time.monotonic() + 10
        while not context.should_stop() and time.monotonic() < deadline:
            time.sleep(0.05)
        canceler.join()
        context.log("stopped" if context.should_stop() else "never told")

    box["first"] = first
    job = submit()
    assert run_job(job.pk) == "canceled"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELED and box["plans"] == 0 and log_of(job) == "stopped"
