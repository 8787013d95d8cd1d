"""Placement: which waiting job gets which free slot. The database alone decides; Redis only carries the
queue entry, so these tests need no worker."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from gpu_nodes.models import Node
from jobs.models import Job
from jobs.services import job_cancel, job_submit, jobs_dispatch

pytestmark = pytest.mark.django_db(transaction=True)
PARAMS = {"seconds": 1}


def release(job: Job) -> None:
    """Stand in for a runner finishing the job."""
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, finished_at=timezone.now())


def test_waiting_jobs_are_placed_fairly_between_owners(alice, bob, make_node, redis_db):
    make_node()
    alice_jobs = [job_submit(owner=alice, kind="demo_train", params=PARAMS) for _ in range(3)]
    bob_job = job_submit(owner=bob, kind="demo_train", params=PARAMS)
    running = Job.objects.get(gpu__isnull=False)
    assert running.pk == alice_jobs[0].pk

    release(running)
    jobs_dispatch()
    # alice already had a turn; bob, who asked later, goes before her second job.
    assert Job.objects.get(status=Job.Status.QUEUED, gpu__isnull=False).pk == bob_job.pk


def test_offline_draining_and_disabled_nodes_get_no_jobs(alice, make_node, redis_db):
    node = make_node()
    for change in ({"status": Node.Status.OFFLINE}, {"status": Node.Status.DRAINING}, {"enabled": False}):
        Node.objects.filter(pk=node.pk).update(**{"status": Node.Status.ONLINE, "enabled": True, **change})
        job = job_submit(owner=alice, kind="demo_train", params=PARAMS)
        assert Job.objects.get(pk=job.pk).gpu_id is None, change
        job_cancel(job=Job.objects.get(pk=job.pk))
    Node.objects.filter(pk=node.pk).update(status=Node.Status.ONLINE, enabled=True)
    job = job_submit(owner=alice, kind="demo_train", params=PARAMS)
    assert Job.objects.get(pk=job.pk).node_id == node.pk


def test_a_job_pinned_to_a_node_waits_for_that_node(alice, make_node, redis_db):
    make_node("first")
    second = make_node("second")
    blocker = job_submit(owner=alice, kind="demo_train", params=PARAMS, node=second)
    pinned = job_submit(owner=alice, kind="demo_train", params=PARAMS, node=second)
    assert Job.objects.get(pk=blocker.pk).node == second
    assert Job.objects.get(pk=pinned.pk).gpu_id is None, "first is free, but the job asked for second"
    release(blocker)
    jobs_dispatch()
    assert Job.objects.get(pk=pinned.pk).node == second


def test_the_database_refuses_two_active_jobs_on_one_gpu(alice, make_node, redis_db):
    node = make_node(gpus=1)
    gpu = node.gpus.get()
    Job.objects.create(owner=alice, kind="demo_train", gpu=gpu, node=node, status=Job.Status.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(owner=alice, kind="demo_train", gpu=gpu, node=node, status=Job.Status.QUEUED)
    # Finished jobs do not hold the slot.
    Job.objects.create(owner=alice, kind="demo_train", gpu=gpu, node=node, status=Job.Status.SUCCEEDED)


def test_cancelling_a_placed_job_frees_its_slot_for_the_next(alice, make_node, redis_db):
    from core.queues import queue_named

    node = make_node()
    first = job_submit(owner=alice, kind="demo_train", params=PARAMS)
    second = job_submit(owner=alice, kind="demo_train", params=PARAMS)
    queue = queue_named(node.queue_name)
    assert queue.job_ids == [str(Job.objects.get(pk=first.pk).rq_job_id)]

    job_cancel(job=Job.objects.get(pk=first.pk))

    first, second = Job.objects.get(pk=first.pk), Job.objects.get(pk=second.pk)
    assert first.status == Job.Status.CANCELED
    assert second.gpu_id == first.gpu_id
    assert queue.job_ids == [str(second.rq_job_id)]


def test_bad_parameters_are_refused_and_nothing_is_created(alice, make_node, redis_db):
    from core.errors import ServiceError

    make_node()
    for params, words in (
        ({"iterations": 5}, "iterations must be a whole number from 10 to 100000; got 5"),
        ({"seconds": "soon"}, "seconds must be a number"),
        ({"colour": "red"}, "Unknown parameter(s) for a demo training: colour"),
    ):
        with pytest.raises(ServiceError, match=words.replace("(", r"\(").replace(")", r"\)")):
            job_submit(owner=alice, kind="demo_train", params=params)
    assert not Job.objects.exists()


def test_an_avatar_s_steps_go_first_to_the_node_that_holds_its_data(
    alice, make_node, videos, redis_db, settings, tmp_path
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from avatars.models import DatasetCopy
    from avatars.services import avatar_create

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 6
    make_node("alpha")
    holder = make_node("beta")  # sorts after alpha: only the preference can put the job there
    video = SimpleUploadedFile("anna.mp4", videos["good"].read_bytes(), content_type="video/mp4")
    avatar = avatar_create(owner=alice, name="Anna", engine="demo", video=video, consent=True)
    DatasetCopy.objects.create(avatar=avatar, node=holder, path="/data/anna", complete=True)
    job = job_submit(owner=alice, kind="train", params={"avatar": avatar.pk}, avatar=avatar)
    assert Job.objects.get(pk=job.pk).node == holder

    # Busy there: the next free slot elsewhere takes it (the training then copies the data over).
    other = job_submit(owner=alice, kind="train", params={"avatar": avatar.pk}, avatar=avatar)
    assert Job.objects.get(pk=other.pk).node.name == "alpha"


def test_training_preprocesses_again_only_when_no_online_node_can_hand_over_the_data(
    alice, make_node, videos, redis_db, settings, tmp_path
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from avatars.models import Avatar, DatasetCopy
    from avatars.pipeline import avatar_train
    from avatars.services import avatar_create

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 6
    holder = make_node("holder")
    video = SimpleUploadedFile("anna.mp4", videos["good"].read_bytes(), content_type="video/mp4")
    avatar = avatar_create(owner=alice, name="Anna", engine="demo", video=video, consent=True)
    DatasetCopy.objects.create(avatar=avatar, node=holder, path="/data/anna", complete=True)

    Node.objects.filter(pk=holder.pk).update(status=Node.Status.OFFLINE)
    assert avatar_train(avatar=avatar, owner=alice).kind == "preprocess"  # the copy is out of reach

    Job.objects.update(status=Job.Status.CANCELED)
    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.READY_TO_TRAIN)
    Node.objects.filter(pk=holder.pk).update(status=Node.Status.DRAINING)  # draining: still hands data over
    avatar.refresh_from_db()
    assert avatar_train(avatar=avatar, owner=alice).kind == "train"


def test_an_avatar_s_preferred_node_takes_its_first_step(
    alice, make_node, videos, redis_db, settings, tmp_path
):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 6
    make_node("alpha")
    make_node("beta")
    client = APIClient()
    client.force_authenticate(alice)
    video = SimpleUploadedFile("anna.mp4", videos["good"].read_bytes(), content_type="video/mp4")
    body = {"name": "Anna", "engine": "demo", "consent": "true", "video": video, "preferred_node": "beta"}
    created = client.post("/api/avatars/", body, format="multipart")
    assert created.status_code == 201 and created.json()["preferred_node"] == "beta", created.json()
    job = client.post(f"/api/avatars/{created.json()['id']}/train/", {}, format="json").json()
    assert Job.objects.get(pk=job["id"]).node.name == "beta"  # alpha sorts first and is free too

    Node.objects.filter(name="beta").update(enabled=False)
    video.seek(0)
    refused = client.post("/api/avatars/", {**body, "name": "Bert"}, format="multipart")
    assert refused.status_code == 400 and "preferred_node" in refused.json()
