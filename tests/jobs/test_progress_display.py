"""Progress a person trusts: stages in words, elapsed time and time left for each step and for the whole
training, a moving bar where no percentage is known yet, and the log's times (jobs/stages.py,
jobs/timeline.py, avatars/selectors.py ``avatar_pipeline``)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_token_rotate
from avatars.engines.console import STAGE_LABELS
from avatars.engines.registry import ENGINES
from avatars.models import Avatar
from jobs.console import Update
from jobs.models import Job
from jobs.runner import Reporter
from jobs.stages import register_stage_labels, stage_label
from jobs.timeline import MARK_EVERY, MAX_MARKS, LineMarks, job_timeline
from talkforge.asgi import application


def make_avatar(owner, slug: str, status: str = "training") -> Avatar:
    return Avatar.objects.create(
        owner=owner, name=slug.title(), slug=slug, engine="demo", status=status,
        video=f"avatars/{slug}/v.mp4", consent_given_at=timezone.now(), consent_given_by=owner,
        consent_statement="mine",
    )  # fmt: skip


def ran(owner, kind: str, avatar: Avatar, *, seconds: float, parent=None, status="succeeded") -> Job:
    start = parent.finished_at + timedelta(seconds=5) if parent else timezone.now() - timedelta(hours=2)
    return Job.objects.create(
        owner=owner, kind=kind, avatar=avatar, params={"avatar": avatar.pk}, status=status, progress=1.0,
        started_at=start, finished_at=start + timedelta(seconds=seconds), parent=parent,
    )  # fmt: skip


# --- stages in words -------------------------------------------------------------------------------------


def test_every_preprocessing_task_of_every_engine_has_words_of_its_own():
    tables = [engine.preprocess_tasks for engine in ENGINES.values() if engine.preprocess_tasks]
    assert len(tables) >= 2  # GaussianTalker and SyncTalk
    for table in tables:
        for task in table:
            assert task.label and task.label != task.stage, task
            assert stage_label(task.stage) == task.label
    assert stage_label("torso_gt") == "Separating the torso from the real frames"
    assert stage_label("landmarks") == "Finding face landmarks"


def test_parser_stages_chain_steps_and_unknown_stages_read_as_words():
    for key, words in STAGE_LABELS.items():
        assert stage_label(key) == words
    assert stage_label("coarse").startswith("Training, coarse stage")
    assert stage_label("head: train") == "Training the head: training"  # ChainParser's "<step>: <stage>"
    assert stage_label("waiting for a slot") == "Waiting for a free GPU"
    assert stage_label("some_new_step") == "Some new step"  # a key nobody labelled yet
    assert stage_label("waiting to retry: node lost") == "Waiting to retry: node lost"  # already words
    assert stage_label("") == ""


def test_a_stage_key_cannot_be_given_a_second_meaning():
    register_stage_labels({"coarse": STAGE_LABELS["coarse"]})  # the same words again: fine
    with pytest.raises(ValueError, match="already labelled"):
        register_stage_labels({"coarse": "Something else"})


# --- the job page ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_job_page_shows_the_stage_in_words_time_running_and_time_left(client, alice, bob):
    avatar = make_avatar(alice, "ada")
    job = Job.objects.create(
        owner=alice, kind="preprocess", avatar=avatar, params={"avatar": avatar.pk}, status="running",
        stage="torso_gt", progress=0.4, eta_seconds=125, started_at=timezone.now() - timedelta(seconds=70),
    )  # fmt: skip
    client.force_login(alice)
    page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert '<dd data-field="stage">Separating the torso from the real frames</dd>' in page
    assert '<dd data-field="eta">2 min 5 s</dd>' in page
    running = re.search(
        r'<dt>Running for</dt><dd id="duration" data-field="elapsed" data-since="(\d+)">([^<]*)<', page
    )
    assert running and abs(int(running[1]) - job.started_at.timestamp()) < 1 and running[2] == "1 min 10 s"
    client.force_login(bob)
    assert client.get(reverse("job-detail", args=[job.pk])).status_code == 404


@pytest.mark.django_db
def test_a_running_job_without_a_percentage_shows_a_moving_bar_without_a_number(client, alice):
    checking = Job.objects.create(owner=alice, kind="demo_train", params={}, status="running", progress=0.0)
    counting = Job.objects.create(owner=alice, kind="demo_train", params={}, status="running", progress=0.3)
    waiting = Job.objects.create(owner=alice, kind="demo_train", params={}, status="queued", progress=0.0)
    client.force_login(alice)

    def bar(job) -> str:
        page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
        return re.search(r'<div class="progress[^>]*>', page)[0]

    assert 'class="progress indeterminate"' in bar(checking) and "aria-valuenow" not in bar(checking)
    assert "aria-valuetext" in bar(checking)
    assert "indeterminate" not in bar(counting) and 'aria-valuenow="30"' in bar(counting)
    assert "indeterminate" not in bar(waiting)  # queued: waiting, not working


# --- when lines arrived, when the stage began --------------------------------------------------------------


def test_line_marks_keep_one_time_per_interval_and_stay_bounded():
    marks = LineMarks([])
    marks.arrived(1, 100.0)
    marks.arrived(5, 100.0 + MARK_EVERY / 2)  # too soon: line 5 reads line 1's time
    marks.arrived(9, 100.0 + MARK_EVERY)
    assert marks.marks == [[1, 100.0], [9, 100.0 + MARK_EVERY]] and marks.changed
    for n in range(MAX_MARKS):
        marks.arrived(10 + n, 200.0 + n * MARK_EVERY)
    assert len(marks.marks) <= MAX_MARKS and marks.marks[0] == [1, 100.0]
    assert marks.marks == sorted(marks.marks)


@pytest.mark.django_db
def test_the_runner_records_when_lines_arrived_and_when_the_stage_began(alice, redis_db):
    job = Job.objects.create(owner=alice, kind="demo_train", params={}, status="running")
    before = time.time()
    reporter = Reporter(job)
    reporter.lines(["Optimizing /w/out"])
    reporter.update(Update(stage="coarse", progress=0.1))
    reporter.flush()
    timeline = job_timeline(job.pk)
    (line, at), = timeline["lines"]  # fmt: skip
    assert line == 1 and before - 0.1 <= at <= time.time() + 0.1
    stage, since = timeline["stage"]
    assert stage == "coarse" and before - 0.1 <= since <= time.time() + 0.1
    assert reporter.state["stage_since"] == since

    reporter.update(Update(stage="coarse", progress=0.2))  # the same stage: it began when it began
    reporter.flush()
    assert job_timeline(job.pk)["stage"] == ["coarse", since]

    job.refresh_from_db()
    assert Reporter(job).state["stage_since"] == since  # a next attempt in the same stage knows it


@pytest.mark.django_db(transaction=True)
def test_the_job_socket_sends_stage_words_stage_start_and_line_times(alice, bob, redis_db):
    job = Job.objects.create(owner=alice, kind="demo_train", params={}, status="running")
    reporter = Reporter(job)
    reporter.lines(["first line", "second line"])
    reporter.update(Update(stage="fine", progress=0.5))
    reporter.flush()
    timeline = job_timeline(job.pk)

    async def snapshot(user) -> dict | None:
        key = await _token(user)
        communicator = WebsocketCommunicator(
            application, f"/ws/jobs/{job.pk}/", headers=[(b"authorization", f"Token {key}".encode())]
        )
        connected, _ = await communicator.connect()
        message = await communicator.receive_json_from(timeout=10) if connected else None
        await communicator.disconnect()
        return message

    message = async_to_sync(snapshot)(alice)
    assert message["type"] == "snapshot" and message["stage"] == "fine"
    assert message["stage_label"] == STAGE_LABELS["fine"]
    assert message["stage_since"] == timeline["stage"][1]
    assert message["log"] == ["first line", "second line"] and message["log_times"] == timeline["lines"]
    assert async_to_sync(snapshot)(bob) is None  # not hers to see: refused before anything is sent


async def _token(user) -> str:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(api_token_rotate)(user=user)


# --- the whole training -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_avatar_page_shows_each_step_and_the_time_left_for_the_whole_training(client, alice, bob):
    earlier = make_avatar(alice, "earlier", status="trained")
    ran(alice, "render_validation", earlier, seconds=60)
    ran(alice, "evaluate", earlier, seconds=20)
    ran(alice, "evaluate", earlier, seconds=40)  # median of 20 and 40: 30 s
    avatar = make_avatar(alice, "ada")
    preprocess = ran(alice, "preprocess", avatar, seconds=95)
    train = Job.objects.create(
        owner=alice, kind="train", avatar=avatar, params={"avatar": avatar.pk}, status="running",
        parent=preprocess, stage="fine", progress=0.5, eta_seconds=100,
        started_at=timezone.now() - timedelta(seconds=100),
    )  # fmt: skip
    client.force_login(alice)
    page = client.get(reverse("avatar-detail", args=[avatar.pk])).content.decode()
    steps = re.findall(r'<tr (?:class="to-come" )?(?:data-job="\d+" )?data-step="(\w+)"', page)
    assert steps == ["preprocess", "train", "render_validation", "evaluate"]
    assert f'<tr data-job="{train.pk}" data-step="train">' in page
    assert "Training, fine stage" in page and "1 min 35 s" in page  # the stage in words; preprocess took
    assert "usually 1 min 0 s" in page and "usually 30 s" in page
    # 100 s this step says it needs, then 60 + 30 s for the steps after it.
    assert re.search(r'id="pipeline-left" data-after="90(\.0)?">3 min 10 s<', page)

    # Bob's runs say nothing about Alice's: with only his history, her estimate is unknown.
    bobs = make_avatar(bob, "bobs", status="trained")
    ran(bob, "render_validation", bobs, seconds=60)
    ran(bob, "evaluate", bobs, seconds=30)
    Job.objects.filter(owner=alice).exclude(avatar=avatar).delete()
    page = client.get(reverse("avatar-detail", args=[avatar.pk])).content.decode()
    assert "not known yet" in page and 'id="pipeline-left"' not in page
    client.force_login(bob)
    assert client.get(reverse("avatar-detail", args=[avatar.pk])).status_code == 404


@pytest.mark.django_db
def test_an_ended_training_shows_how_long_it_took_and_nothing_to_come(client, alice):
    avatar = make_avatar(alice, "ada", status="trained")
    first = ran(alice, "preprocess", avatar, seconds=60)
    second = ran(alice, "train", avatar, seconds=120, parent=first)
    third = ran(alice, "render_validation", avatar, seconds=30, parent=second)
    ran(alice, "evaluate", avatar, seconds=10, parent=third)
    client.force_login(alice)
    page = client.get(reverse("avatar-detail", args=[avatar.pk])).content.decode()
    assert "The last training, step by step" in page and 'class="to-come"' not in page
    # 60 + 120 + 30 + 10 s of work, 5 s between steps
    assert "Whole training: took <span>3 min 55 s</span>" in page
