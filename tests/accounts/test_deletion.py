"""Deletion that deletes: an avatar's dataset, model and checkpoints go from every node that holds them
(local and SSH; offline nodes when they are back), with its media files, videos, conversations and
evaluations, while its jobs stay as history; voices take their cached latents along; an account takes
everything of the person and nothing of anyone else's."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken, User
from accounts.services import api_token_rotate
from avatars.demo_kind import DEMO_TRAIN
from avatars.layout import dataset_dir, model_dir
from avatars.models import Avatar, Checkpoint, DatasetCopy, Evaluation
from avatars.pipeline import RENDER_VALIDATION, TRAIN, avatar_train
from avatars.services import avatar_create, avatar_delete
from chat.models import Chunk, Conversation, Message, Voice
from chat.services import CHAT_REPLY, voice_delete
from core.errors import ServiceError
from gpu_nodes.cleanup import node_cleanups_run, path_inside_workdir
from gpu_nodes.connect import connection_for
from gpu_nodes.models import Node, NodeCleanup
from jobs.models import Job
from tests.conftest import wait_for
from videos.models import Video
from videos.services import GENERATE_VIDEO


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 6
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def media_file(relative: str, content: bytes = b"data") -> str:
    path = Path(settings.MEDIA_ROOT) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return relative


def on_node(node: Node, path: PurePosixPath | str, name: str = "file.bin") -> str:
    """A folder with a file in it on ``node``, made through its connection (as the node's own user)."""
    conn = connection_for(node)
    result = conn.run(["sh", "-c", 'mkdir -p "$1" && echo frame > "$1/$2"', "sh", str(path), name])
    assert result.returncode == 0, result.output
    return str(path)


def node_has(node: Node, path: str) -> bool:
    return connection_for(node).exists(str(path))


class Belongings:
    """Everything one person can have, made directly (rows, media files, folders on ``node``)."""

    def __init__(self, owner: User, node: Node, name: str):
        self.owner, self.node = owner, node
        slug = f"{name}-{owner.pk}"
        media_file(f"avatars/{slug}/{slug}.mp4")
        self.avatar = Avatar.objects.create(
            owner=owner, name=name, slug=slug, engine=Avatar.Engine.DEMO, status=Avatar.Status.TRAINED,
            video=f"avatars/{slug}/{slug}.mp4", consent_given_at=timezone.now(), consent_given_by=owner,
            consent_statement="ok",
        )  # fmt: skip
        workdir = node.workdir
        data = on_node(node, dataset_dir(self.avatar, workdir) / "ori_imgs", "0.jpg")
        model = model_dir(self.avatar, workdir)
        point_cloud = on_node(node, model / "point_cloud" / "iteration_40", "point_cloud.ply")
        on_node(node, model / "test" / "ours_40" / "renders", "00000.png")
        DatasetCopy.objects.create(
            avatar=self.avatar, node=node, path=str(PurePosixPath(data).parent), complete=True
        )
        checkpoint = Checkpoint.objects.create(
            avatar=self.avatar, node=node, stage="fine", iteration=40, path=point_cloud, size_bytes=6
        )
        self.render = Job.objects.create(
            owner=owner, kind=RENDER_VALIDATION, avatar=self.avatar, node=node,
            status=Job.Status.SUCCEEDED, params={"avatar": self.avatar.pk},
        )  # fmt: skip
        self.render.result = {
            "files": {"validation.mov": media_file(f"jobs/{self.render.pk}/validation.mov")}
        }
        self.render.save(update_fields=["result"])
        on_node(node, PurePosixPath(workdir) / "jobs" / str(self.render.pk))
        Evaluation.objects.create(avatar=self.avatar, checkpoint=checkpoint, iteration=40, psnr=30, ssim=0.9)
        video_job = Job.objects.create(
            owner=owner, kind=GENERATE_VIDEO, avatar=self.avatar, node=node,
            status=Job.Status.SUCCEEDED,
        )  # fmt: skip
        self.video = Video.objects.create(
            owner=owner, avatar=self.avatar, checkpoint=checkpoint, job=video_job, source="audio",
            folder=f"videos/{slug}", audio=media_file(f"videos/{slug}/audio.wav"), audio_duration=1,
            pose_mode="ping_pong", result=media_file(f"jobs/{video_job.pk}/result.mp4"),
            poster=media_file(f"jobs/{video_job.pk}/poster.jpg"),
        )  # fmt: skip
        self.voice = Voice.objects.create(
            owner=owner, name=name, slug=f"voice-{slug}",
            reference=media_file(f"voices/voice-{slug}/ref.wav"),
            latents=media_file(f"voices/voice-{slug}/xtts-latents-0123456789abcdef.pt"),
            consent_given_at=timezone.now(), consent_given_by=owner, consent_statement="ok",
        )  # fmt: skip
        self.conversation = Conversation.objects.create(owner=owner, avatar=self.avatar, voice=self.voice)
        turn = Message.objects.create(
            conversation=self.conversation, role="user", text="hi",
            audio=media_file(f"{self.conversation.folder}/1/turn.wav"),
        )  # fmt: skip
        Chunk.objects.create(
            message=turn, index=0, text="hi", audio=media_file(f"{self.conversation.folder}/2/chunk-000.wav"),
            video=media_file(f"{self.conversation.folder}/2/chunk-000.mp4"),
        )  # fmt: skip
        api_token_rotate(user=owner)

    @property
    def media(self) -> list[Path]:
        root = Path(settings.MEDIA_ROOT)
        return [
            root / self.avatar.folder, root / "jobs" / str(self.render.pk), root / self.video.folder,
            root / "jobs" / str(self.video.job_id), root / self.voice.folder, root / self.conversation.folder,
        ]  # fmt: skip

    @property
    def node_paths(self) -> list[str]:
        workdir = self.node.workdir
        return [
            str(dataset_dir(self.avatar, workdir)), str(model_dir(self.avatar, workdir)),
            str(PurePosixPath(workdir) / "jobs" / str(self.render.pk)),
        ]  # fmt: skip


# --- an avatar ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_trained_avatar_is_deleted_from_the_local_node_and_media_and_its_jobs_stay(
    alice, videos, make_node, processes, redis_db, caplog
):
    node = make_node()
    processes.worker(node.name)
    video = SimpleUploadedFile("anna.mp4", videos["good"].read_bytes(), content_type="video/mp4")
    avatar = avatar_create(owner=alice, name="Anna", engine="demo", video=video, consent=True)
    avatar_train(avatar=avatar, owner=alice, iterations=40, seconds=1)

    def trained():
        settled = Avatar.objects.filter(pk=avatar.pk, status=Avatar.Status.TRAINED).exists()
        idle = not Job.objects.filter(avatar=avatar, status__in=Job.ACTIVE_STATUSES).exists()
        # The evaluation's figures are stored by its `after` hook, just after its status settles.
        return settled and idle and Evaluation.objects.filter(avatar=avatar).exists()

    wait_for(trained, 120, interval=0.2, message="the pipeline to end")
    jobs = list(Job.objects.filter(avatar=avatar).order_by("id"))
    assert [job.status for job in jobs] == ["succeeded"] * 4, [job.error for job in jobs]
    data, model = Path(dataset_dir(avatar, node.workdir)), Path(model_dir(avatar, node.workdir))
    render = next(job for job in jobs if job.kind == RENDER_VALIDATION)
    validation = Path(settings.MEDIA_ROOT) / render.result["files"]["validation.mov"]
    upload = Path(settings.MEDIA_ROOT) / avatar.video
    train = next(job for job in jobs if job.kind == TRAIN)
    assert (data / "ori_imgs").is_dir() and (model / f"run-{train.pk}" / "point_cloud").is_dir()
    assert validation.is_file() and upload.is_file()
    assert Checkpoint.objects.filter(avatar=avatar).exists() and Evaluation.objects.filter(avatar=avatar)

    caplog.set_level(logging.INFO, logger="talkforge.erasure")
    assert api(alice).delete(f"/api/avatars/{avatar.pk}/").status_code == 204

    assert not data.exists() and not model.exists()  # every frame of the face, and every run's model
    assert (Path(node.workdir) / "data").is_dir()  # the node's shared folders stay
    assert not validation.exists() and not upload.parent.exists()
    assert not NodeCleanup.objects.exists()
    assert not DatasetCopy.objects.exists() and not Checkpoint.objects.exists()
    assert not Evaluation.objects.exists()
    listed = api(alice).get("/api/jobs/").json()["results"]
    assert sorted(job["id"] for job in listed) == [job.pk for job in jobs]  # history kept
    assert {job["avatar"] for job in listed} == {None}
    assert all("files" not in job.result for job in Job.objects.all())  # none names a removed file
    logged = [r.getMessage() for r in caplog.records if r.name == "talkforge.erasure"]
    assert any(f"avatar {avatar.slug}" in m and "by alice" in m and f"{node.name} removed" in m
               for m in logged), logged  # fmt: skip


def test_an_avatar_is_deleted_from_an_ssh_node(alice, bob, make_ssh_node, django_capture_on_commit_callbacks):
    node = make_ssh_node(name="remote")
    alices, bobs = Belongings(alice, node, "anna"), Belongings(bob, node, "bert")
    assert all(node_has(node, path) for path in alices.node_paths)

    with django_capture_on_commit_callbacks(execute=True):
        avatar_delete(avatar=alices.avatar)

    assert not any(node_has(node, path) for path in alices.node_paths)
    assert not any(path.exists() for path in alices.media if "voices" not in str(path))
    assert Path(settings.MEDIA_ROOT, alices.voice.folder).exists()  # a voice is not the avatar's
    assert all(node_has(node, path) for path in bobs.node_paths)
    assert all(path.exists() for path in bobs.media)
    assert not NodeCleanup.objects.exists()
    assert not Video.objects.filter(owner=alice).exists()
    assert not Conversation.objects.filter(owner=alice).exists()
    kept = Job.objects.filter(owner=alice)
    assert kept.count() == 2 and set(kept.values_list("avatar", flat=True)) == {None}


@pytest.mark.django_db(transaction=True)  # housekeeping closes stale connections, as in production
def test_an_offline_node_is_cleaned_when_housekeeping_finds_it_back(alice, make_node, redis_db):
    node = make_node()
    alices = Belongings(alice, node, "anna")
    Node.objects.filter(pk=node.pk).update(status=Node.Status.OFFLINE, last_error="unreachable")

    avatar_delete(avatar=alices.avatar)

    assert not Avatar.objects.exists()
    assert all(node_has(node, path) for path in alices.node_paths)  # it could not be reached
    pending = set(NodeCleanup.objects.filter(node=node).values_list("path", flat=True))
    assert pending >= {
        str(dataset_dir(alices.avatar, node.workdir)),
        str(model_dir(alices.avatar, node.workdir)),
    }
    assert all(path_inside_workdir(node, path) for path in pending)

    call_command("housekeeping", "--once")  # probes the node: online again, its cleanups run

    assert Node.objects.get(pk=node.pk).status == Node.Status.ONLINE
    assert not any(node_has(node, path) for path in alices.node_paths)
    assert not NodeCleanup.objects.exists()


def test_a_failing_cleanup_stays_recorded_with_its_reason(alice, make_node, caplog, tmp_path):
    node = make_node()
    doomed = PurePosixPath(node.workdir) / "data" / "gone"
    on_node(node, doomed)
    NodeCleanup.objects.create(node=node, path=str(doomed), reason="avatar gone")
    broken_bin = tmp_path / "broken-bin"
    broken_bin.mkdir()
    (broken_bin / "rm").write_text("#!/bin/sh\necho 'rm: Permission denied' >&2\nexit 1\n")
    (broken_bin / "rm").chmod(0o755)
    Node.objects.filter(pk=node.pk).update(runtime=Node.Runtime.BARE, environment=str(broken_bin))
    node.refresh_from_db()

    report = node_cleanups_run(node=node)

    assert report.pending == [str(doomed)] and node_has(node, str(doomed))
    row = NodeCleanup.objects.get()
    assert row.attempts == 1 and "Permission denied" in row.last_error
    assert any(r.levelno == logging.WARNING and "Permission denied" in r.getMessage() for r in caplog.records)


def test_only_folders_inside_the_workdir_two_levels_down_are_ever_removed(db):
    node = Node(name="n", workdir="/srv/talkforge")
    assert path_inside_workdir(node, "/srv/talkforge/data/anna-1a2b3c") == "/srv/talkforge/data/anna-1a2b3c"
    assert path_inside_workdir(node, "/srv/talkforge/output/anna-1a2b3c/point_cloud/iteration_40")
    for bad in ("/srv/talkforge", "/srv/talkforge/data", "/srv/talkforge/data/../../etc", "/etc/passwd",
                "data/anna", "/srv/talkforge-other/data/anna", "/srv/talkforge/./data"):  # fmt: skip
        assert path_inside_workdir(node, bad) is None, bad


def test_an_avatar_with_an_active_job_is_not_deleted_at_all(alice, make_node):
    node = make_node()
    alices = Belongings(alice, node, "anna")
    Job.objects.create(owner=alice, kind=GENERATE_VIDEO, avatar=alices.avatar, status="queued")
    with pytest.raises(ServiceError, match="queued or running"):
        avatar_delete(avatar=alices.avatar)
    assert Avatar.objects.filter(pk=alices.avatar.pk).exists() and not NodeCleanup.objects.exists()
    assert all(path.exists() for path in alices.media)
    assert all(node_has(node, path) for path in alices.node_paths)


def test_bob_cannot_delete_alices_avatar(alice, bob, make_node, client):
    alices = Belongings(alice, make_node(), "anna")
    assert api(bob).delete(f"/api/avatars/{alices.avatar.pk}/").status_code == 404
    client.force_login(bob)
    assert client.post(f"/avatars/{alices.avatar.pk}/delete/").status_code == 404
    assert Avatar.objects.filter(pk=alices.avatar.pk).exists()
    assert all(path.exists() for path in alices.media)


# --- a voice ------------------------------------------------------------------------------------------


def test_deleting_a_voice_removes_its_recording_and_cached_latents(alice, make_node):
    alices = Belongings(alice, make_node(), "anna")
    latents = Path(settings.MEDIA_ROOT) / alices.voice.latents
    assert latents.is_file()
    reply = Message.objects.create(
        conversation=alices.conversation, role="assistant", status="running",
        job=Job.objects.create(owner=alice, kind=CHAT_REPLY, status="running"),
    )  # fmt: skip
    with pytest.raises(ServiceError, match="being spoken in this voice"):
        voice_delete(voice=alices.voice)
    assert latents.is_file()

    Job.objects.filter(pk=reply.job_id).update(status="succeeded")
    voice_delete(voice=alices.voice)
    assert not latents.exists() and not latents.parent.exists()
    assert Conversation.objects.get(pk=alices.conversation.pk).voice is None


# --- an account ---------------------------------------------------------------------------------------


def test_deleting_an_account_removes_everything_of_the_person_and_nothing_of_bob(
    alice, bob, make_node, django_capture_on_commit_callbacks
):
    node = make_node()
    alices, bobs = Belongings(alice, node, "anna"), Belongings(bob, node, "bert")
    own_job = Job.objects.create(owner=alice, kind=DEMO_TRAIN, node=node, status="failed")
    media_file(f"jobs/{own_job.pk}/log.txt")

    refused = api(alice).delete("/api/me/", {"confirm": "bob"}, format="json")
    assert refused.status_code == 400 and "Type your user name" in refused.json()["detail"]
    assert User.objects.filter(pk=alice.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).delete("/api/me/", {"confirm": "alice"}, format="json")
    assert response.status_code == 204, response.json()

    assert not User.objects.filter(username="alice").exists()
    for model in (Avatar, Voice, Conversation, Video, Job, ApiToken):
        assert not model.objects.filter(**{"user" if model is ApiToken else "owner": alice.pk}).exists()
    assert not Message.objects.filter(conversation__owner=alice.pk).exists()
    assert not any(path.exists() for path in alices.media)
    assert not (Path(settings.MEDIA_ROOT) / "jobs" / str(own_job.pk)).exists()
    assert not any(node_has(node, path) for path in alices.node_paths)
    assert not NodeCleanup.objects.exists()
    # Bob's rows and files, here and on the node, are untouched.
    assert all(path.exists() for path in bobs.media)
    assert all(node_has(node, path) for path in bobs.node_paths)
    assert Avatar.objects.filter(owner=bob).count() == 1 and Voice.objects.filter(owner=bob).count() == 1
    assert Job.objects.filter(owner=bob, avatar=bobs.avatar).count() == 2
    assert ApiToken.objects.filter(user=bob).exists()


def test_the_profile_page_deletes_the_account_after_the_user_name_is_typed(
    alice, make_node, client, django_capture_on_commit_callbacks
):
    alices = Belongings(alice, make_node(), "anna")
    client.force_login(alice)
    page = client.get("/accounts/profile/").content.decode()
    assert 'action="/accounts/profile/delete/"' in page and 'name="username"' in page

    wrong = client.post("/accounts/profile/delete/", {"username": "alic"}, follow=True)
    assert "Type your user name" in wrong.content.decode()
    assert User.objects.filter(pk=alice.pk).exists() and all(path.exists() for path in alices.media)

    Job.objects.create(owner=alice, kind=DEMO_TRAIN, status="running")
    busy = client.post("/accounts/profile/delete/", {"username": "alice"}, follow=True)
    assert "queued or running" in busy.content.decode() and User.objects.filter(pk=alice.pk).exists()
    Job.objects.filter(owner=alice, status="running").update(status="canceled")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/profile/delete/", {"username": "alice"})
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    assert not User.objects.filter(pk=alice.pk).exists()
    assert not any(path.exists() for path in alices.media)
    assert client.get("/accounts/profile/").status_code == 302  # signed out


def test_an_api_client_deletes_only_its_own_account(alice, bob):
    assert APIClient().delete("/api/me/", {"confirm": "alice"}, format="json").status_code in (401, 403)
    key = api_token_rotate(user=bob)
    client = Client(headers={"Authorization": f"Token {key}"})
    response = client.delete("/api/me/", '{"confirm": "alice"}', content_type="application/json")
    assert response.status_code == 400
    assert User.objects.filter(pk=alice.pk).exists() and User.objects.filter(pk=bob.pk).exists()
    assert client.get("/api/me/").json() == {"id": bob.pk, "username": "bob"}


# --- the admin deletes through the same services -------------------------------------------------------


@pytest.fixture
def admin_client(db):
    root = User.objects.create_superuser("root", password="root-password-1")
    client = Client()
    client.force_login(root)
    return client


def test_deleting_an_avatar_in_the_admin_removes_its_files_and_keeps_its_jobs(
    alice, make_node, admin_client, django_capture_on_commit_callbacks
):
    things = Belongings(alice, make_node(), "ada")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/avatars/avatar/{things.avatar.pk}/delete/", {"post": "yes"}, follow=True
        )
    assert response.status_code == 200
    assert not Avatar.objects.filter(pk=things.avatar.pk).exists()
    assert not any(path.exists() for path in things.media if "voices" not in str(path))
    assert not any(node_has(things.node, path) for path in things.node_paths)
    assert Job.objects.filter(pk=things.render.pk, avatar=None).exists()  # history kept


def test_the_admin_cannot_delete_an_avatar_whose_job_is_running(alice, make_node, admin_client):
    things = Belongings(alice, make_node(), "ada")
    Job.objects.filter(pk=things.render.pk).update(status=Job.Status.RUNNING)
    response = admin_client.post(
        "/admin/avatars/avatar/",
        {"action": "delete_selected", "_selected_action": [things.avatar.pk], "post": "yes"},
        follow=True,
    )
    assert "was not deleted" in response.content.decode()
    assert Avatar.objects.filter(pk=things.avatar.pk).exists()
    assert all(node_has(things.node, path) for path in things.node_paths)


def test_deleting_a_user_in_the_admin_erases_their_data_and_not_bobs(
    alice, bob, make_node, admin_client, django_capture_on_commit_callbacks
):
    node = make_node()
    alices, bobs = Belongings(alice, node, "ada"), Belongings(bob, node, "bo")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/accounts/user/{alice.pk}/delete/", {"post": "yes"}, follow=True)
    assert not User.objects.filter(pk=alice.pk).exists()
    assert not any(path.exists() for path in alices.media)
    assert all(path.exists() for path in bobs.media)
    assert all(node_has(node, path) for path in bobs.node_paths)
