"""Media in an S3 bucket (MEDIA_STORAGE=s3) instead of MEDIA_ROOT: a real S3 API server (moto's server
mode, on loopback) stands in for S3/MinIO. Uploads go through the real services and land in the bucket,
not on this disk; a job's results are collected into it; the owner is redirected to a signed link that
downloads the bytes, another user gets a 404; deletions empty the bucket; quotas count its bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from moto.server import ThreadedMotoServer

from accounts.quotas import storage_bytes
from avatars.models import DatasetCopy
from avatars.services import avatar_create, avatar_delete
from chat.services import voice_create, voice_delete
from core import media
from jobs.models import Job
from jobs.runner import run_job
from jobs.services import job_submit
from tests.conftest import FACE, ffmpeg, free_port
from videos.models import Video
from videos.services import video_create

ROOT = Path(__file__).resolve().parent.parent.parent
KEYS = {"access_key": "testing", "secret_key": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, settings, tmp_path):
    """A bucket of this test's own, made the default storage; MEDIA_ROOT is an empty folder that must stay
    empty of media."""
    name = f"talkforge-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.create_bucket(Bucket=name)
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_CACHE_ROOT = tmp_path / "media-cache"
    settings.MEDIA_URL_EXPIRY = 60
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 4
    settings.QUALITY_MIN_FACE_PIXELS = 30
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": name, "endpoint_url": s3_endpoint, "region_name": "us-east-1", **KEYS,
                "signature_version": "s3v4", "querystring_auth": True, "default_acl": None,
                "file_overwrite": True,
            },
        },
    }  # fmt: skip
    assert not media.is_local()

    def keys() -> dict[str, int]:
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        return {item["Key"]: item["Size"] for item in listed}

    yield keys
    assert not any(path.is_file() for path in (tmp_path / "media").rglob("*"))  # nothing reached this disk


def upload(path: Path, content_type: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type=content_type)


@pytest.fixture(scope="module")
def training_video(tmp_path_factory) -> Path:
    """4 s of a moving face with a tone (conftest's "good" video, made alone)."""
    path = tmp_path_factory.mktemp("training") / "anna.mp4"
    ffmpeg(
        "-loop", "1", "-i", str(FACE), "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100",
        "-vf", "scale=360:360,zoompan=z='1+0.02*sin(on/8)':d=1:s=360x360:fps=25",
        "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100:duration=4", "-c:a", "aac", str(path))
    return path


def test_an_avatar_is_stored_served_to_its_owner_only_counted_and_deleted(
    bucket, alice, bob, training_video, django_capture_on_commit_callbacks
):
    avatar = avatar_create(
        owner=alice, name="Anna", engine="demo", video=upload(training_video, "video/mp4"), consent=True
    )
    stored = bucket()
    assert set(stored) == {avatar.video} and avatar.video == f"avatars/{avatar.slug}/{avatar.slug}.mp4"
    assert storage_bytes(alice) == stored[avatar.video] > 0

    owner = Client()
    owner.force_login(alice)
    response = owner.get(f"/avatars/{avatar.pk}/media/video/")
    assert response.status_code == 302
    assert "X-Amz-Signature=" in response["Location"] and "X-Amz-Expires=60" in response["Location"]
    with urllib.request.urlopen(response["Location"], timeout=10) as signed:  # what the browser then does
        assert len(signed.read()) == stored[avatar.video]
    other = Client()
    other.force_login(bob)
    assert other.get(f"/avatars/{avatar.pk}/media/video/").status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        avatar_delete(avatar=avatar)
    assert bucket() == {}
    assert storage_bytes(alice) == 0


def test_a_voice_is_stored_and_deleted(bucket, alice, recording, django_capture_on_commit_callbacks):
    voice = voice_create(owner=alice, name="Grace", recording=upload(recording, "audio/mp4"), consent=True)
    assert set(bucket()) == {voice.reference} == {f"voices/{voice.slug}/reference.wav"}
    with media.local_path(voice.reference) as local:  # what a chat worker reads: a download
        assert local.read_bytes()[:4] == b"RIFF"
    with django_capture_on_commit_callbacks(execute=True):
        voice_delete(voice=voice)
    assert bucket() == {}


def test_a_video_s_driving_audio_is_stored_and_goes_with_the_video(
    bucket, alices_things, recording, django_capture_on_commit_callbacks
):
    alice, avatar = alices_things["avatar"].owner, alices_things["avatar"]
    DatasetCopy.objects.create(avatar=avatar, node=alices_things["node"], path="/data/ada", complete=True)
    before = storage_bytes(alice)  # the fixture's checkpoint, on its node
    with django_capture_on_commit_callbacks(execute=False):  # placement and enqueueing are not this test's
        video = video_create(owner=alice, avatar=avatar, audio=upload(recording, "audio/mp4"))
    assert set(bucket()) == {video.audio} == {f"{video.folder}/audio.wav"}
    assert storage_bytes(alice) == before + bucket()[video.audio]
    with django_capture_on_commit_callbacks(execute=True):
        Video.objects.filter(pk=video.pk).delete()  # however the row goes, its files go (videos/signals.py)
    assert bucket() == {}


@pytest.mark.django_db(transaction=True)
def test_a_job_s_results_are_collected_into_the_bucket(bucket, alice, make_node, monkeypatch):
    make_node()
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)  # this test runs the runner itself
    quick = {"seconds": 1.5, "iterations": 200, "coarse_iterations": 100, "save_every": 100}
    job = job_submit(owner=alice, kind="demo_train", params=quick)
    assert run_job(job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.result["files"] == {"console.log": f"jobs/{job.pk}/console.log"}
    assert bucket()[f"jobs/{job.pk}/console.log"] > 0
    assert storage_bytes(alice) == bucket()[f"jobs/{job.pk}/console.log"]


def test_s3_without_a_bucket_stops_at_start_up():
    env = {**os.environ, "MEDIA_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": ""}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = "
         "'talkforge.settings.test'; django.setup()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME" in result.stderr
