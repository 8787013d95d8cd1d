"""Avatars from an uploaded video: validation with ffprobe, normalisation, consent, the quality gate
(OpenCV's bundled face detector on real frames), au.csv, and ownership. The face is scikit-image's bundled
astronaut photo, so nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from avatars.aucsv import au45_from_ear, au_csv_from_landmarks, eye_aspect_ratio, validate_au_csv
from avatars.models import Avatar
from core.errors import ServiceError


@pytest.fixture(autouse=True)
def short_videos_allowed(settings, tmp_path):
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 8
    settings.MEDIA_ROOT = tmp_path / "media"


def upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type="video/mp4")


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def create(client, video: Path, **fields):
    data = {"name": "Anna", "engine": "demo", "consent": "true", "video": upload(video), **fields}
    return client.post("/api/avatars/", data, format="multipart")


def avatar_folders() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "avatars"
    return sorted(p for p in root.iterdir() if not p.name.startswith("tmp")) if root.exists() else []


def ffprobe(path: Path) -> dict:
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return json.loads(output)


def test_a_good_video_becomes_an_avatar_ready_to_train(alice, videos):
    response = create(api(alice), videos["good"])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "ready_to_train", body["quality"]
    assert body["quality"]["passed"] is True
    assert {c["key"]: c["passed"] for c in body["quality"]["checks"]} == {
        "readable": True, "one_face": True, "face_size": True, "audio": True,
    }  # fmt: skip

    avatar = Avatar.objects.get(pk=body["id"])
    assert avatar.consent_given_by == alice and avatar.consent_given_at is not None
    assert "agreed" in avatar.consent_statement
    stored = Path(settings.MEDIA_ROOT) / avatar.video
    streams = {s["codec_type"]: s for s in ffprobe(stored)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["avg_frame_rate"] == "25/1"
    assert streams["audio"]["codec_name"] == "aac"
    assert avatar.video_info["frames"] == pytest.approx(100, abs=2)  # 4 s at 25 fps
    assert avatar.slug.startswith("anna-")


@pytest.mark.parametrize(
    ("video", "message"),
    [
        ("text", "could not be read as a video"),
        ("no_audio", "no audio track"),
        ("short", "at least 2 s are needed"),
        ("small", "shorter side must be at least 256 px"),
    ],
)
def test_each_bad_upload_is_refused_with_its_reason_and_nothing_is_left(alice, videos, video, message):
    response = create(api(alice), videos[video])
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not Avatar.objects.exists()
    assert avatar_folders() == []


def test_an_upload_without_consent_is_refused(alice, videos):
    response = create(api(alice), videos["good"], consent="false")
    assert response.status_code == 400
    assert "agreed to have their likeness trained" in response.json()["detail"]
    assert not Avatar.objects.exists() and avatar_folders() == []


def test_a_file_over_the_size_limit_is_refused_while_it_arrives(alice, videos, settings):
    settings.MAX_UPLOAD_BYTES = 50_000
    client = api(alice)
    response = create(client, videos["good"])
    assert response.status_code == 400
    assert "larger than the limit of 0 MiB" in json.dumps(response.json())
    assert not Avatar.objects.exists()


@pytest.mark.parametrize(
    ("video", "failed_check"),
    [("no_face", "one_face"), ("two_faces", "one_face"), ("tiny_face", "face_size"), ("silent", "audio")],
)
def test_the_quality_gate_names_the_failed_check_and_frames(alice, videos, video, failed_check):
    response = create(api(alice), videos[video])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "needs_attention"
    checks = {c["key"]: c for c in body["quality"]["checks"]}
    assert checks[failed_check]["passed"] is False
    assert checks[failed_check]["detail"]
    if failed_check != "audio":
        assert len(checks[failed_check]["failed_frames"]) == body["quality"]["sampled_frames"]
        assert {"seconds", "frame"} <= set(checks[failed_check]["failed_frames"][0])
    assert [key for key, check in checks.items() if not check["passed"]] == [failed_check]


def test_the_owner_may_train_anyway_after_reading_the_report(alice, videos):
    client = api(alice)
    avatar_id = create(client, videos["no_face"]).json()["id"]
    response = client.post(f"/api/avatars/{avatar_id}/proceed/")
    assert response.status_code == 200
    assert response.json()["status"] == "ready_to_train"
    assert response.json()["quality_override_at"] is not None
    again = client.post(f"/api/avatars/{avatar_id}/proceed/")
    assert again.status_code == 400


def test_another_user_cannot_see_use_or_fetch_an_avatar(alice, bob, videos, client):
    avatar_id = create(api(alice), videos["good"]).json()["id"]
    intruder = api(bob)
    assert intruder.get(f"/api/avatars/{avatar_id}/").status_code == 404
    assert intruder.post(f"/api/avatars/{avatar_id}/proceed/").status_code == 404
    assert intruder.delete(f"/api/avatars/{avatar_id}/").status_code == 404
    for action in ("checkpoints", "evaluations"):
        assert intruder.get(f"/api/avatars/{avatar_id}/{action}/").status_code == 404
    for action in ("retry", "cancel", "evaluate"):
        assert intruder.post(f"/api/avatars/{avatar_id}/{action}/", {"checkpoint": 1}).status_code == 404
    assert intruder.get("/api/avatars/").json()["results"] == []
    client.force_login(bob)
    for url in (f"/avatars/{avatar_id}/", f"/avatars/{avatar_id}/media/video/"):
        assert client.get(url).status_code == 404
    for action in ("delete", "retry", "cancel", "evaluate"):
        assert client.post(f"/avatars/{avatar_id}/{action}/", {"checkpoint": 1}).status_code == 404
    assert Avatar.objects.filter(pk=avatar_id).exists()

    client.force_login(alice)
    video = client.get(f"/avatars/{avatar_id}/media/video/")
    assert video.status_code == 200
    assert b"".join(video.streaming_content)[4:8] == b"ftyp"  # an MP4
    page = client.get(f"/avatars/{avatar_id}/").content.decode()
    assert "Anna" in page and "Consent" in page


def test_deleting_an_avatar_removes_its_files(alice, videos, django_capture_on_commit_callbacks):
    client = api(alice)
    avatar_id = create(client, videos["good"]).json()["id"]
    assert len(avatar_folders()) == 1
    with django_capture_on_commit_callbacks(execute=True):  # files go once the deletion has committed
        assert client.delete(f"/api/avatars/{avatar_id}/").status_code == 204
    assert not Avatar.objects.exists() and avatar_folders() == []


def test_the_upload_page_answers_its_script_with_json(alice, videos, client):
    client.force_login(alice)
    data = {"name": "Bea", "engine": "demo", "consent": "on", "video": upload(videos["good"])}
    response = client.post("/avatars/new/", data, headers={"x-requested-with": "XMLHttpRequest"})
    assert response.status_code == 201
    assert response.json()["redirect"] == f"/avatars/{Avatar.objects.get(name='Bea').pk}/"
    bad = {"name": "Cy", "engine": "demo", "consent": "on", "video": upload(videos["no_audio"])}
    response = client.post("/avatars/new/", bad, headers={"x-requested-with": "XMLHttpRequest"})
    assert response.status_code == 400
    assert "no audio track" in response.json()["errors"]["__all__"][0]


def au_csv(rows: int, column: str = " AU45_r") -> SimpleUploadedFile:
    lines = [f"frame, timestamp, confidence, success,{column}"]
    lines += [f"{i + 1}, {i / 25:.2f}, 0.98, 1, 0.5" for i in range(rows)]
    return SimpleUploadedFile("au.csv", "\n".join(lines).encode(), content_type="text/csv")


def test_an_uploaded_au_csv_is_checked_for_what_gaussiantalker_reads(alice, videos):
    client = api(alice)
    ok = create(client, videos["good"], au_csv=au_csv(110))
    assert ok.status_code == 201, ok.json()
    assert (Path(settings.MEDIA_ROOT) / Avatar.objects.get().au_csv).read_text().startswith("frame,")

    no_space = create(client, videos["good"], name="B", au_csv=au_csv(110, column="AU45_r"))
    assert no_space.status_code == 400 and "without the leading space" in no_space.json()["detail"]
    too_few = create(client, videos["good"], name="C", au_csv=au_csv(40))
    assert too_few.status_code == 400 and "one row per frame" in too_few.json()["detail"]
    assert Avatar.objects.count() == 1 and len(avatar_folders()) == 1


def test_au_csv_validation_reports_bad_values():
    with pytest.raises(ServiceError, match="line 3"):
        validate_au_csv("frame, AU45_c, AU45_r\n1, 0, 0.1\n2, 0, x\n", frames=2)
    with pytest.raises(ServiceError, match="no ' AU45_r' column"):
        validate_au_csv("frame, timestamp\n1, 0\n", frames=1)


def eye_landmarks(openness: float) -> np.ndarray:
    """68 landmarks whose eyes have the given aspect ratio (width 1, lids ± openness/2)."""
    points = np.zeros((68, 2))
    for start, x0 in ((36, 0.0), (42, 2.0)):
        points[start + 0] = (x0, 0)
        points[start + 3] = (x0 + 1, 0)
        points[start + 1] = (x0 + 0.33, openness / 2)
        points[start + 2] = (x0 + 0.66, openness / 2)
        points[start + 5] = (x0 + 0.33, -openness / 2)
        points[start + 4] = (x0 + 0.66, -openness / 2)
    return points


def test_blinks_are_estimated_from_the_eye_aspect_ratio_like_the_seed():
    assert eye_aspect_ratio(eye_landmarks(0.25)) == pytest.approx(0.25)
    assert au45_from_ear(0.10) == 5.0 and au45_from_ear(0.40) == 0.0
    assert au45_from_ear(0.24) == pytest.approx(2.5)
    text = au_csv_from_landmarks([eye_landmarks(0.4), eye_landmarks(0.1), eye_landmarks(0.24)])
    assert text.splitlines()[0] == "frame, timestamp, confidence, success, AU45_r"
    assert validate_au_csv(text, frames=3) == 3
    assert [line.split(", ")[-1] for line in text.splitlines()[1:]] == ["0.0000", "5.0000", "2.5000"]


def test_no_upload_stays_in_memory(settings):
    assert settings.FILE_UPLOAD_HANDLERS[-1] == "django.core.files.uploadhandler.TemporaryFileUploadHandler"
    assert not any("Memory" in handler for handler in settings.FILE_UPLOAD_HANDLERS)
    assert os.path.isdir(settings.FILE_UPLOAD_TEMP_DIR or "/tmp")


def test_avatar_list_queries_do_not_grow_with_datasets_and_figures(
    alice, videos, django_assert_max_num_queries
):
    from avatars.models import Checkpoint, DatasetCopy, Evaluation
    from gpu_nodes.models import Node

    client = api(alice)
    node = Node.objects.create(name="n1", workdir="/w", status="online")
    for name in ("Anna", "Bert", "Cleo"):
        avatar = Avatar.objects.get(pk=create(client, videos["good"], name=name).json()["id"])
        DatasetCopy.objects.create(avatar=avatar, node=node, path="/w/data/x", complete=True)
        checkpoint = Checkpoint.objects.create(
            avatar=avatar, node=node, stage="fine", iteration=10, path="/p"
        )
        Evaluation.objects.create(avatar=avatar, checkpoint=checkpoint, iteration=10, psnr=30.0, ssim=0.9)
    with django_assert_max_num_queries(8):
        results = client.get("/api/avatars/").json()["results"]
    assert len(results) == 3 and all(r["evaluations"][0]["psnr"] == 30.0 for r in results)
    assert all(r["datasets"][0]["node"] == "n1" for r in results)


def test_an_avatar_is_neither_deleted_nor_retrained_under_a_running_render(alice, videos):
    from jobs.models import Job

    client = api(alice)
    avatar = Avatar.objects.get(pk=create(client, videos["good"]).json()["id"])
    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINED)
    render = Job.objects.create(owner=alice, kind="generate_video", avatar=avatar, status="running")
    deleted = client.delete(f"/api/avatars/{avatar.pk}/")
    assert deleted.status_code == 400 and "queued or running" in deleted.json()["detail"]
    trained = client.post(f"/api/avatars/{avatar.pk}/train/", {}, format="json")
    assert trained.status_code == 400 and "being rendered" in trained.json()["detail"]
    assert Job.objects.filter(avatar=avatar).count() == 1

    Job.objects.filter(pk=render.pk).update(status="succeeded")
    assert client.delete(f"/api/avatars/{avatar.pk}/").status_code == 204
    assert not Avatar.objects.filter(pk=avatar.pk).exists()


def test_the_kept_part_of_a_trimmed_clip_is_what_trains_and_a_bad_trim_is_refused(alice, videos):
    response = create(api(alice), videos["good"], trim_start="1", trim_end="3.5")
    assert response.status_code == 201, response.json()
    avatar = Avatar.objects.get(pk=response.json()["id"])
    assert avatar.video_info["frames"] == pytest.approx(62, abs=2)  # 2.5 s of the 4 s clip at 25 fps

    for fields, message in (
        ({"trim_start": "2.5"}, "at least 2 s are needed"),  # 1.5 s left
        ({"trim_start": "3", "trim_end": "2"}, "must come after its start"),
        ({"trim_start": "9"}, "choose a start inside it"),
    ):
        refused = create(api(alice), videos["good"], name="Other", **fields)
        assert refused.status_code == 400 and message in refused.json()["detail"], fields
    for field, value in (("trim_start", "nan"), ("trim_end", "inf"), ("trim_start", "-1")):
        refused = create(api(alice), videos["good"], name="Other", **{field: value})
        assert refused.status_code == 400 and field in refused.json(), (field, value)  # never a 500
    assert Avatar.objects.count() == 1


def test_the_upload_page_states_the_guidelines_and_previews_the_clip(alice, client):
    client.force_login(alice)
    page = client.get("/avatars/new/").content.decode()
    assert "One face" in page and "Steady, even light" in page and "at least 2 s" in page
    assert 'id="clip-preview"' in page and 'name="trim_start"' in page and "clip_preview.js" in page


def test_an_upload_is_stored_only_when_its_block_succeeds_and_rolled_back_after(db):
    from django.db import IntegrityError

    from avatars.uploads import rollback, storing
    from core import media

    upload = SimpleUploadedFile("clip.bin", b"frames")
    with (
        pytest.raises(ServiceError, match="name is taken"),
        rollback("avatars/rollback-test", taken="name is taken"),
    ):
        with storing(upload, "avatars/rollback-test/clip.bin") as incoming:
            incoming.target.write_bytes(incoming.source.read_bytes().upper())
        assert media.exists("avatars/rollback-test/clip.bin")  # stored once its block ended well
        raise IntegrityError("a row with this name came first")
    assert not media.exists("avatars/rollback-test/clip.bin")

    with pytest.raises(ServiceError, match="too short"), storing(upload, "avatars/rollback-test/clip.bin"):
        raise ServiceError("too short")  # a failed check: nothing is stored
    assert not media.exists("avatars/rollback-test/clip.bin")
