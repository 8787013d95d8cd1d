"""The job path on an SSH node: the same guarantees as on a local node, across a real SSH connection."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings

from gpu_nodes.connections import _group_members
from jobs.models import Job
from jobs.selectors import job_log_lines
from jobs.services import job_cancel, job_submit
from tests.jobs.test_path import LONG, QUICK, api_for, collect_events, finished, running_with_output

pytestmark = pytest.mark.django_db(transaction=True)


def test_job_on_an_ssh_node_streams_live_and_its_files_come_back_intact(
    alice, make_ssh_node, processes, redis_db
):
    node = make_ssh_node(gpus=1)
    processes.worker(node.name)
    client, key = api_for(alice)
    response = client.post("/api/jobs/", {"kind": "demo_train", "params": QUICK}, format="json")
    assert response.status_code == 201, response.content
    events = async_to_sync(collect_events)(key, response.json()["id"])

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.node == node and job.gpu.label == "GPU0"
    streamed = []
    for event in events:
        if event["type"] == "snapshot":
            streamed = list(event["log"])
        elif event["type"] == "log":
            assert event["first"] == len(streamed) + 1
            streamed.extend(event["lines"])
    stored = job_log_lines(job)
    fetched = (Path(settings.MEDIA_ROOT) / job.result["files"]["console.log"]).read_text()
    remote = Path(job.result["model_path"]) / "console.log"  # the same machine: compare with the original
    assert fetched == remote.read_text()
    assert stored == fetched.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    assert streamed == stored
    assert any(e["type"] == "progress" and e["stage"] == "fine" for e in events)


def test_cancel_on_an_ssh_node_kills_the_remote_process_tree(alice, make_ssh_node, processes, redis_db):
    node = make_ssh_node()
    processes.worker(node.name)
    job = job_submit(owner=alice, kind="demo_train", params=LONG)
    running = running_with_output(job.pk)
    assert _group_members(running.pid, running.marker), "the remote engine runs (same machine: visible here)"

    job_cancel(job=running)
    canceled = finished(job.pk, timeout=20)
    assert canceled.status == Job.Status.CANCELED
    assert _group_members(running.pid, running.marker) == []


def test_a_connection_lost_mid_job_fails_it_frees_the_slot_and_leaves_nothing_running(
    alice, make_ssh_node, processes, redis_db, ssh_server
):
    node = make_ssh_node()
    processes.worker(node.name)
    job = job_submit(owner=alice, kind="demo_train", params=LONG)
    running = running_with_output(job.pk)

    # Kill the sshd processes serving the worker's connection; the listening server stays up.
    subprocess.run(["pkill", "-f", f"sshd: {ssh_server.user}"], check=False)

    lost = finished(job.pk, timeout=30)
    assert lost.status == Job.Status.FAILED
    assert "connection to node" in lost.error and "lost" in lost.error
    assert _group_members(running.pid, running.marker) == []
    follow_up = job_submit(owner=alice, kind="demo_train", params=QUICK)
    assert finished(follow_up.pk).status == Job.Status.SUCCEEDED


def test_a_connection_lost_mid_job_with_retries_left_runs_the_job_again(
    alice, make_ssh_node, processes, redis_db, ssh_server
):
    node = make_ssh_node()
    processes.worker(node.name)
    job = job_submit(owner=alice, kind="demo_train", params={**QUICK, "seconds": 6}, max_attempts=2)
    first = running_with_output(job.pk)
    subprocess.run(["pkill", "-f", f"sshd: {ssh_server.user}"], check=False)

    job = finished(job.pk, timeout=60)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 2
    assert _group_members(first.pid, first.marker) == []
