"""What bench/soak.py found under random worker kills and an SSH server restart, each a test: a job must
never run its engine twice, nor fail while it has attempts left because a node was briefly unreachable,
nor stay stuck when a worker died between taking it from RQ and claiming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_nodes.models import Node
from gpu_nodes.services import node_probe
from gpu_nodes.ssh import pool
from jobs import queue
from jobs.models import Job
from jobs.reconcile import jobs_reconcile
from jobs.selectors import job_log_lines
from jobs.services import job_submit
from tests.conftest import free_port, wait_for
from tests.jobs.test_path import QUICK, finished

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent.parent


def test_a_worker_lost_after_the_engine_ended_settles_without_running_it_again(
    alice, make_node, processes, redis_db
):
    make_node()
    doomed = processes.start([str(ROOT / "tests" / "dying_worker.py"), "settle", "--node", "local"], "doomed")
    job = job_submit(owner=alice, kind="demo_train", params=QUICK)  # one attempt allowed
    wait_for(lambda: doomed.poll() is not None, 60, message="the worker to die while settling")
    ended = Job.objects.get(pk=job.pk)
    assert (ended.status, ended.engine_exit_code, ended.stage) == (Job.Status.RUNNING, 0, "finishing")

    # The results are on "local": a second node must not take the settling (it would find nothing).
    make_node("a-first")  # placement takes nodes by name: this one first, were the job free to move
    processes.start(["manage.py", "housekeeping"], "housekeeping")
    processes.worker("local", name="replacement")
    job = finished(job.pk, timeout=60)
    assert job.node.name == "local"
    assert job.status == Job.Status.SUCCEEDED, job.error
    lines = job_log_lines(job)
    assert sum(line.startswith("Optimizing ") for line in lines) == 1  # the engine ran once
    assert sum(line.startswith("Training complete.") for line in lines) == 1
    assert job.result["files"]["console.log"]  # its results were fetched by the second worker
    assert "psnr" in job.result["metrics"]  # the parser read the first attempt's lines again


def test_an_unreachable_node_requeues_the_job_without_using_an_attempt(
    alice, make_ssh_node, processes, redis_db, monkeypatch
):
    node = make_ssh_node(gpus=1)
    port = node.port
    Node.objects.filter(pk=node.pk).update(port=free_port())  # nothing listens there: refused
    pool.drop(node)
    processes.worker(node.name)
    job = job_submit(owner=alice, kind="demo_train", params=QUICK)  # one attempt allowed

    def bounced():
        row = Job.objects.get(pk=job.pk)
        return row.status == Job.Status.QUEUED and row.stage.startswith("waiting to retry") and row

    waiting = wait_for(bounced, 60, message="the job to wait again")
    assert waiting.attempts == 0 and waiting.gpu_id is None
    assert "could not be reached" in waiting.stage
    node.refresh_from_db()
    assert node.status == Node.Status.OFFLINE  # out of placement until a probe finds it back

    Node.objects.filter(pk=node.pk).update(port=port)
    node.refresh_from_db()
    assert node_probe(node=node).status == Node.Status.ONLINE
    jobs_reconcile()  # places it again
    job = finished(job.pk, timeout=60)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 1


def test_a_job_taken_by_a_worker_that_died_before_claiming_it_is_queued_again(
    alice, make_node, redis_db, settings, django_capture_on_commit_callbacks
):
    make_node()
    with django_capture_on_commit_callbacks(execute=True):
        job = job_submit(owner=alice, kind="demo_train", params=QUICK)
    job.refresh_from_db()
    assert job.gpu_id is not None
    # RQ marks the job started as a worker takes it; that worker died before its claim.
    from rq.job import Job as RQJob

    rq_job = RQJob.fetch(str(job.rq_job_id), connection=queue.redis_connection())
    rq_job.set_status("started")
    settings.JOB_HEARTBEAT_TIMEOUT = 0.1
    Job.objects.filter(pk=job.pk).update(placed_at=job.placed_at.replace(year=2020))
    first_id = job.rq_job_id
    report = jobs_reconcile()
    job.refresh_from_db()
    assert job.pk in report.reenqueued
    assert job.rq_job_id != first_id and job.status == Job.Status.QUEUED
    assert queue.rq_state(job.rq_job_id) == "queued"
