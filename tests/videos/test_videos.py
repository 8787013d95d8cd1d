"""Video generation from any audio (or text) with a trained avatar, end to end with the demo engine on a
local node and on an SSH node; bad inputs refused with nothing half-created; ownership; and the command
builders and console parsing of the engines' custom-audio runs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from avatars.engines.gaussiantalker import commands as gaussiantalker_commands
from avatars.engines.gaussiantalker import parsers as gaussiantalker
from avatars.engines.synctalk import commands as synctalk_commands
from avatars.engines.synctalk import parsers as synctalk
from avatars.models import Avatar, Checkpoint, DatasetCopy
from avatars.pipeline import avatar_train
from avatars.services import avatar_create, avatar_proceed_anyway
from jobs.models import Job
from jobs.selectors import job_log_text
from tests.conftest import FACE, ffmpeg, wait_for
from tests.talkforge.test_browser import CHROMIUM, chromium_page, log_in  # noqa: F401 - chromium_page is a fixture
from videos.job_kind import GenerationParser, audio_frames, generate_plan
from videos.models import Video
from videos.services import GENERATE_VIDEO, video_create

ROOT = Path(__file__).resolve().parent.parent.parent
ENGINES = ROOT / "avatars" / "engines"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FORMATS = {
    "wav": [],
    "mp3": ["-c:a", "libmp3lame"],
    "m4a": ["-c:a", "aac"],
    "ogg": ["-c:a", "libvorbis"],
    "flac": ["-c:a", "flac"],
    "webm": ["-c:a", "libopus", "-ar", "48000"],
}


@pytest.fixture(autouse=True)
def small_media(settings, tmp_path):
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 4
    settings.QUALITY_MIN_FACE_PIXELS = 30
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDEO_MAX_AUDIO_SECONDS = 20


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """An 8 s training video (200 frames at 25 fps: 19 of them in the val split), and driving audio."""
    folder = tmp_path_factory.mktemp("video-media")
    made = {"training": folder / "anna.mp4"}
    ffmpeg(
        "-loop", "1", "-i", str(FACE), "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100",
        "-vf", "scale=320:320,zoompan=z='1+0.02*sin(on/8)':d=1:s=320x320:fps=25",
        "-t", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
        str(made["training"]),
    )  # fmt: skip
    for name, codec in FORMATS.items():
        made[name] = folder / f"tone.{name}"
        ffmpeg(
            "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100:duration=1.3", *codec, str(made[name])
        )
    made["short"] = folder / "short.wav"  # 0.6 s: 15 frames, fewer than the 19 val poses
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=0.6", str(made["short"]))
    made["long"] = folder / "long.flac"  # 3.3 s: 83 frames, the val poses played back and forth 4.4 times
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3.3", str(made["long"]))
    made["too_long"] = folder / "too_long.mp3"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=8000:cl=mono",
        "-t",
        "25",
        "-c:a",
        "libmp3lame",
        str(made["too_long"]),
    )
    made["tiny"] = folder / "tiny.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.2", str(made["tiny"]))
    made["silent_video"] = folder / "no_sound.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=25",
        "-t",
        "1",
        "-c:v",
        "libx264",
        str(made["silent_video"]),
    )
    made["text"] = folder / "notes.mp3"
    made["text"].write_text("this is not audio\n")
    return made


def upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def train_demo_avatar(owner, media, name="Anna") -> Avatar:
    """Preprocess and train a demo avatar through the real pipeline, with as little work as it allows."""
    avatar = avatar_create(
        owner=owner, name=name, engine="demo", video=upload(media["training"]), consent=True
    )
    if avatar.status == Avatar.Status.NEEDS_ATTENTION:
        avatar = avatar_proceed_anyway(avatar=avatar)
    avatar_train(avatar=avatar, owner=owner, iterations=20, seconds=0.2)

    def ended():
        avatar.refresh_from_db()
        return avatar.status in (Avatar.Status.TRAINED, Avatar.Status.FAILED)

    wait_for(ended, 150, interval=0.2, message="the avatar's training")
    assert avatar.status == Avatar.Status.TRAINED, [j.error for j in Job.objects.filter(avatar=avatar)]
    return avatar


def finished(videos: list[Video], timeout: float = 150) -> list[Video]:
    ids = [video.pk for video in videos]

    def done():
        jobs = Job.objects.filter(pk__in=[v.job_id for v in Video.objects.filter(pk__in=ids)])
        return all(job.is_terminal for job in jobs)

    wait_for(done, timeout, interval=0.2, message="the generations")
    # The result is recorded just after the job ends (its follow-up runs once the end is committed).
    wait_for(
        lambda: all(v.result or v.error for v in Video.objects.filter(pk__in=ids)), 20, message="results"
    )
    return [Video.objects.select_related("job").get(pk=pk) for pk in ids]


def ffprobe(path: Path) -> dict:
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output)


def assert_playable(video: Video, media_root: Path) -> dict:
    assert video.job.status == Job.Status.SUCCEEDED, (video.job.error, job_log_text(video.job)[-3000:])
    info = ffprobe(media_root / video.result)
    codecs = {stream["codec_type"]: stream for stream in info["streams"]}
    assert codecs["video"]["codec_name"] == "h264" and codecs["video"]["pix_fmt"] == "yuv420p"
    assert codecs["audio"]["codec_name"] == "aac"
    duration = float(info["format"]["duration"])
    assert duration == pytest.approx(video.audio_duration, abs=0.04)
    assert video.result_duration == pytest.approx(duration, abs=0.001)
    poster = media_root / video.poster
    assert poster.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    return codecs


def val_view(job: Job, avatar: Avatar) -> list[int]:
    """The img_ids the job's per-job dataset view drove the render with (the node is this machine)."""
    view = Path(job.node.workdir) / "jobs" / str(job.pk) / "data" / avatar.slug / "transforms_val.json"
    return [frame["img_id"] for frame in json.loads(view.read_text())["frames"]]


# --- end to end ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("node_kind", ["local", "ssh"])
def test_videos_are_generated_from_every_audio_format_and_from_text(
    alice, media, node_kind, request, processes, redis_db, settings
):
    if node_kind == "local":
        node = request.getfixturevalue("make_node")()
    else:
        node = request.getfixturevalue("make_ssh_node")(name="remote", gpus=1)
    processes.worker(node.name)
    avatar = train_demo_avatar(alice, media)
    api = APIClient()
    api.force_authenticate(alice)
    # Every format on the local node; on the SSH node one compressed format and the two pose cases.
    names = [*FORMATS, "short", "long"] if node_kind == "local" else ["webm", "short", "long"]
    created = {}
    for name in names:
        response = api.post(
            "/api/videos/",
            {"avatar": avatar.pk, "audio": upload(media[name]), "batch_size": 8},
            format="multipart",
        )
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["status"] in ("queued", "running") and body["job"] and "video" not in body["urls"]
        created[name] = Video.objects.get(pk=body["id"])
    if node_kind == "local":
        page = Client()
        page.force_login(alice)
        response = page.post("/videos/new/", {"avatar": avatar.pk, "text": "Hello, I am a talking head.",
                                              "voice": "offline", "batch_size": 128})  # fmt: skip
        assert response.status_code == 302, response.content.decode()[-2000:]
        created["text"] = Video.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))
        # Made at once: the text is spoken by the job's worker, not by this request.
        assert created["text"].source == "text" and created["text"].audio == ""
        assert created["text"].audio_duration is None

    videos = dict(zip(created, finished(list(created.values())), strict=True))
    if node_kind == "local":
        spoken = videos["text"]
        assert spoken.spoken_by == "Standard synthetic voice (espeak-ng)" and spoken.audio_duration > 1
        log = job_log_text(spoken.job)
        assert log.index("Spoken by Standard synthetic voice (espeak-ng)") < log.index("step 1/4: poses")
    media_root = Path(settings.MEDIA_ROOT)
    val = json.loads((Path(DatasetCopy.objects.get(avatar=avatar).path) / "transforms_val.json").read_text())
    val_ids = [frame["img_id"] for frame in val["frames"]]
    assert len(val_ids) == 19
    for name, video in videos.items():
        codecs = assert_playable(video, media_root)
        frames = audio_frames(video.audio_duration)
        assert abs(int(codecs["video"]["nb_read_frames"]) - math.ceil(video.audio_duration * 25)) <= 1, name
        assert video.job.node == node and video.checkpoint.node == node
        assert video.checkpoint.stage == "fine" and video.checkpoint.iteration == 20  # the latest
        assert len(val_view(video.job, avatar)) == frames
        # On the node, only the small pose/model views are left (the heavy files are back or dropped).
        left = {p.name for p in (Path(node.workdir) / "jobs" / str(video.job.pk)).iterdir()}
        assert left == {"data", "output"}, left
        # Only the demo's own tone files: the driving audio kept is a 16 kHz mono WAV.
        wav = ffprobe(media_root / video.audio)["streams"][0]
        assert (wav["codec_name"], wav["sample_rate"], wav["channels"]) == ("pcm_s16le", "16000", 1)

    short, long = videos["short"], videos["long"]
    assert audio_frames(short.audio_duration) == 15 and val_view(short.job, avatar) == val_ids[:15]
    # Longer than the val poses: forward, backward, forward… with no frame skipped and none lost.
    played = val_view(long.job, avatar)
    assert len(played) == audio_frames(3.3) == 83
    assert played[:19] == val_ids and played[19:38] == val_ids[::-1] and played[38:57] == val_ids
    log = job_log_text(long.job)
    for marker in ("step 1/4: poses", "ping-pong to 83 frames", "step 2/4: audio features",
                   "Loading trained model at iteration 20", "test set rendering  :   83  frames",
                   "Rendering progress: 100%", "step 4/4: encode", "[talkforge] done"):  # fmt: skip
        assert marker in log, marker
    assert long.job.progress == 1.0 and long.job.metrics["audio_frames"] == 83

    # The API and the pages show it done, with its media to the owner.
    body = api.get(f"/api/videos/{long.pk}/").json()
    assert body["status"] == "succeeded" and body["result_duration"] == pytest.approx(3.3, abs=0.04)
    page = Client()
    page.force_login(alice)
    detail = page.get(body["urls"]["page"]).content.decode()
    assert "<video controls" in detail and f"/videos/{long.pk}/media/poster/" in detail
    fetched = page.get(body["urls"]["video"])
    assert fetched.status_code == 200 and fetched["Content-Type"] == "video/mp4"
    assert b"".join(fetched.streaming_content)[4:8] == b"ftyp"
    assert page.get(body["urls"]["download"])["Content-Disposition"].startswith("attachment")
    assert page.get(body["urls"]["poster"]).status_code == 200
    listing = page.get("/videos/").content.decode()
    assert listing.index(f"#{videos[names[-1]].pk} ") < listing.index(
        f"#{videos[names[0]].pk} "
    )  # newest first

    # Deleting a video removes its row and files.
    assert api.delete(f"/api/videos/{long.pk}/").status_code == 204
    assert not Video.objects.filter(pk=long.pk).exists()
    wait_for(lambda: not (media_root / long.result).exists() and not (media_root / long.folder).exists(), 5)

    # A failure is the video's error, in the API and on its page.
    model = PurePosixPath(long.checkpoint.path).parent.parent
    Path(model / "cfg_args").rename(Path(model / "cfg_args.away"))
    response = api.post("/api/videos/", {"avatar": avatar.pk, "text": "Hello"}, format="multipart")
    (failed,) = finished([Video.objects.get(pk=response.json()["id"])])
    assert failed.job.status == Job.Status.FAILED and not failed.result
    assert "poses step" in failed.error and "cfg_args is missing" in failed.error
    assert "poses step" in api.get(f"/api/videos/{failed.pk}/").json()["error"]
    assert "cfg_args is missing" in page.get(f"/videos/{failed.pk}/").content.decode()
    assert page.get(f"/videos/{failed.pk}/media/video/").status_code == 404


# --- refusals ------------------------------------------------------------------------------------------


def fake_trained(owner, media, node, name="Bea", engine="demo") -> Avatar:
    """An avatar with the rows of a finished training (no job ran): enough for everything before the job."""
    avatar = avatar_create(
        owner=owner, name=name, engine="demo", video=upload(media["training"]), consent=True
    )
    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINED, engine=engine)
    avatar.refresh_from_db()
    DatasetCopy.objects.create(
        avatar=avatar, node=node, path=f"{node.workdir}/data/{avatar.slug}", complete=True
    )
    stage = "epoch" if engine == "synctalk" else "fine"
    for iteration in (5, 10):
        Checkpoint.objects.create(
            avatar=avatar,
            node=node,
            stage=stage,
            iteration=iteration,
            path=f"{node.workdir}/output/{avatar.slug}/point_cloud/iteration_{iteration}",
        )
    Checkpoint.objects.create(avatar=avatar, node=node, stage="coarse", iteration=10, path="/x")
    return avatar


def nothing_created(settings) -> bool:
    folder = Path(settings.MEDIA_ROOT) / "videos"
    return (
        not Video.objects.exists()
        and not Job.objects.filter(kind=GENERATE_VIDEO).exists()
        and (not folder.exists() or not any(folder.iterdir()))
    )


@pytest.mark.django_db
def test_bad_inputs_are_refused_with_a_message_and_leave_nothing(alice, media, make_node, settings):
    node = make_node()
    avatar = fake_trained(alice, media, node)
    other = fake_trained(alice, media, node, name="Cleo")
    untrained = avatar_create(owner=alice, name="Dora", engine="demo", video=upload(media["training"]),
                              consent=True)  # fmt: skip
    api = APIClient()
    api.force_authenticate(alice)
    coarse = avatar.checkpoints.get(stage="coarse")

    def refused(data: dict, *expected: str) -> None:
        response = api.post("/api/videos/", {"avatar": avatar.pk, **data}, format="multipart")
        assert response.status_code == 400, response.content
        message = json.dumps(response.json())
        for words in expected:
            assert words in message, (words, message)
        assert nothing_created(settings), data

    refused({"audio": upload(media["text"])}, "could not be read as audio", "WAV, MP3")
    refused({"audio": upload(media["silent_video"])}, "no audio stream")
    refused({"audio": upload(media["too_long"])}, "0.4 minutes long", "limit is 0.333333 minutes", "Split it")
    refused({"audio": upload(media["tiny"])}, "0.20 s long", "at least 0.5 s")
    refused({"text": "   "}, "The text is empty")
    refused({}, "Upload an audio file", "or type a text")
    refused({"audio": upload(media["wav"]), "text": "Hello"}, "either an audio file or a text", "not both")
    refused({"text": "x" * (settings.VIDEO_MAX_TEXT_CHARS + 1)}, "characters; the limit is")
    refused({"text": "Hello", "voice": "nobody"}, "voice")
    refused({"text": "Hello", "batch_size": 0}, "batch_size")
    refused({"text": "Hello", "avatar": untrained.pk}, "not trained yet")
    refused({"text": "Hello", "checkpoint": other.checkpoints.first().pk}, "belongs to another avatar")
    refused({"text": "Hello", "checkpoint": coarse.pk}, "coarse stage")
    node.enabled = False
    node.save()
    refused({"text": "Hello"}, f"Node {node.name}, which holds this avatar's model, is disabled")
    node.enabled = True
    node.save()
    DatasetCopy.objects.filter(avatar=avatar).delete()
    refused({"text": "Hello"}, "not the avatar's preprocessed dataset")

    settings.MAX_UPLOAD_BYTES = 20_000
    refused({"audio": upload(media["long"])}, "larger than the limit")
    settings.MAX_UPLOAD_BYTES = 2**30

    # The page says the same, in the form.
    page = Client()
    page.force_login(alice)
    response = page.post("/videos/new/", {"avatar": other.pk, "audio": upload(media["silent_video"]),
                                          "voice": "offline", "batch_size": 128})  # fmt: skip
    assert response.status_code == 200 and "no audio stream" in response.content.decode()
    response = page.post(
        "/videos/new/", {"avatar": other.pk, "voice": "offline", "batch_size": 128},
        headers={"x-requested-with": "XMLHttpRequest"},
    )  # fmt: skip
    assert response.status_code == 400 and "Upload an audio file" in json.dumps(response.json())
    assert nothing_created(settings)


# --- ownership -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_another_user_gets_404_for_videos_avatars_and_checkpoints_not_theirs(
    alice, bob, media, make_node, settings, django_assert_max_num_queries
):
    node = make_node()
    avatar = fake_trained(alice, media, node)
    video = video_create(owner=alice, avatar=avatar, audio=upload(media["wav"]))
    (Path(settings.MEDIA_ROOT) / video.folder / "poster.jpg").write_bytes(b"\xff\xd8")
    Video.objects.filter(pk=video.pk).update(poster=f"{video.folder}/poster.jpg", result=video.audio)
    bob_api, alice_api = APIClient(), APIClient()
    bob_api.force_authenticate(bob)
    alice_api.force_authenticate(alice)
    assert bob_api.get(f"/api/videos/{video.pk}/").status_code == 404
    assert bob_api.delete(f"/api/videos/{video.pk}/").status_code == 404
    assert bob_api.get("/api/videos/").json()["results"] == []
    response = bob_api.post("/api/videos/", {"avatar": avatar.pk, "text": "Hi"}, format="multipart")
    assert response.status_code == 404
    bobs = fake_trained(bob, media, node, name="Bob's")
    response = bob_api.post(
        "/api/videos/", {"avatar": bobs.pk, "text": "Hi", "checkpoint": avatar.checkpoints.first().pk},
        format="multipart",
    )  # fmt: skip
    assert response.status_code == 404
    assert Video.objects.count() == 1
    page = Client()
    page.force_login(bob)
    for url in (
        f"/videos/{video.pk}/",
        *(f"/videos/{video.pk}/media/{what}/" for what in ("video", "poster", "audio")),
    ):
        assert page.get(url).status_code == 404, url
    assert page.post(f"/videos/{video.pk}/delete/").status_code == 404
    assert f"/videos/{video.pk}/" not in page.get("/videos/").content.decode()
    new_page = page.get("/videos/new/").content.decode()
    assert avatar.name not in new_page  # alice's avatar is not offered to bob
    own = Client()
    own.force_login(alice)
    detail = own.get(f"/videos/{video.pk}/").content.decode()
    assert f'data-job="{video.job_id}"' in detail and "Talkforge.watchJob" in detail
    assert avatar.name in own.get("/videos/new/").content.decode()
    preselected = own.get(f"/videos/new/?avatar={avatar.pk}").content.decode()
    assert f'<option value="{avatar.pk}" selected>' in preselected
    for what in ("video", "poster", "audio"):
        assert own.get(f"/videos/{video.pk}/media/{what}/").status_code == 200, what
    assert own.get(f"/videos/{video.pk}/media/secret/").status_code == 404
    # Players seek with byte ranges.
    whole = (Path(settings.MEDIA_ROOT) / video.audio).read_bytes()
    part = own.get(f"/videos/{video.pk}/media/video/", headers={"range": "bytes=10-99"})
    assert part.status_code == 206 and b"".join(part.streaming_content) == whole[10:100]
    assert part["Content-Range"] == f"bytes 10-99/{len(whole)}" and part["Content-Length"] == "90"
    tail = own.get(f"/videos/{video.pk}/media/video/", headers={"range": "bytes=-16"})
    assert b"".join(tail.streaming_content) == whole[-16:]
    rest = own.get(f"/videos/{video.pk}/media/video/", headers={"range": "bytes=44-"})
    assert b"".join(rest.streaming_content) == whole[44:]
    beyond = own.get(f"/videos/{video.pk}/media/video/", headers={"range": f"bytes={len(whole)}-"})
    assert beyond.status_code == 416
    settings.MEDIA_ACCEL_REDIRECT = True
    assert (
        own.get(f"/videos/{video.pk}/media/audio/")["X-Accel-Redirect"] == f"/protected-media/{video.audio}"
    )

    # The list is paginated and its query count does not grow with the number of videos.
    for _ in range(3):
        video_create(owner=alice, avatar=avatar, text="Hello")
    with django_assert_max_num_queries(4):
        body = alice_api.get("/api/videos/").json()
    assert body["count"] == 4 and [v["id"] for v in body["results"]][-1] == video.pk


# --- the commands and the console -------------------------------------------------------------------


def test_custom_audio_commands_of_both_engines():
    features = gaussiantalker_commands.audio_features(wav="/w/jobs/7/audio.wav", output="/w/jobs/7/audio.npy")
    assert features == [
        "python", "-u", "data_utils/deepspeech_features/extract_ds_features.py",
        "--input", "/w/jobs/7/audio.wav", "--output", "/w/jobs/7/audio.npy",
    ]  # fmt: skip
    render = gaussiantalker_commands.render(
        data_root="/w/jobs/7/data", output_root="/w/jobs/7/output", name="anna-1a2b3c",
        custom_aud="/w/jobs/7/audio.npy", custom_wav="/w/jobs/7/audio.wav", iteration=10000, batch=64,
    )  # fmt: skip
    assert render == [
        "python", "-u", "render.py", "-s", "/w/jobs/7/data/anna-1a2b3c",
        "--model_path", "/w/jobs/7/output/anna-1a2b3c", "--configs", "arguments/64_dim_1_transformer.py",
        "--iteration", "10000", "--batch", "64", "--custom_aud", "/w/jobs/7/audio.npy",
        "--custom_wav", "/w/jobs/7/audio.wav", "--skip_train", "--skip_test",
    ]  # fmt: skip
    # The per-job model folder is .../output/<slug>: the prefix <P> stays "output".
    assert gaussiantalker.render_output_path("/w/jobs/7/output/anna-1a2b3c", "custom", 10000) == (
        "/w/jobs/7/output/anna-1a2b3c/custom/ours_10000/renders/output_custom_10000iter_renders.mov"
    )
    test = synctalk_commands.custom_audio(
        name="anna-1a2b3c", workspace="anna-1a2b3c", wav="/w/jobs/8/audio.wav", data_root="/w/data",
        model_root="/w/jobs/8/model",
    )  # fmt: skip
    assert test == [
        "python", "-u", "main.py", "/w/data/anna-1a2b3c", "--workspace", "/w/jobs/8/model/anna-1a2b3c",
        "-O", "--test", "--test_train", "--asr_model", "ave", "--aud", "/w/jobs/8/audio.wav",
    ]  # fmt: skip
    assert synctalk.result_video_path("/w/jobs/8/model/anna-1a2b3c", 12, with_audio=True) == (
        "/w/jobs/8/model/anna-1a2b3c/results/ngp_ep0012_audio.mp4"
    )
    with pytest.raises(ValueError, match="not allowed"):
        gaussiantalker_commands.audio_features(wav="/w/a b.wav")
    with pytest.raises(ValueError, match=".wav"):
        synctalk_commands.custom_audio(name="a", workspace="a", wav="/w/a.npy")


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["gaussiantalker", "synctalk"])
def test_the_plan_of_a_real_engine_chains_its_steps_on_the_checkpoint_s_node(alice, media, make_node, engine):
    node = make_node()
    avatar = fake_trained(alice, media, node, engine=engine)
    if engine == "synctalk":
        avatar.checkpoints.filter(stage="epoch").update(
            path=f"{node.workdir}/model/{avatar.slug}/checkpoints/x"
        )
        Checkpoint.objects.filter(avatar=avatar, iteration=10, stage="epoch").update(
            path=f"{node.workdir}/model/{avatar.slug}/checkpoints/ngp_ep0010.pth"
        )
    video = video_create(owner=alice, avatar=avatar, audio=upload(media["wav"]), batch_size=32)
    job = Job.objects.select_related("node", "gpu").get(pk=video.job_id)
    assert job.params == {"video": video.pk, "node": node.name} and job.avatar == avatar
    job.node = node
    plan = generate_plan(job)
    script = plan.invocation.argv[2]
    folder = f"{node.workdir}/jobs/{job.pk}"
    assert plan.invocation.argv[:2] == ["sh", "-c"] and plan.uploads[-1][1] == f"{folder}/audio.wav"
    assert plan.collect == ((f"{folder}/video.mp4", "video.mp4"), (f"{folder}/poster.jpg", "poster.jpg"))
    assert "-movflags +faststart" in script and "-c:v libx264" in script and "-t 1.300" in script
    if engine == "gaussiantalker":
        assert plan.invocation.cwd == f"{node.workdir}/engines/gaussiantalker"
        assert plan.invocation.env["PYTHONUNBUFFERED"] == "1"
        assert (f"python -u data_utils/deepspeech_features/extract_ds_features.py --input {folder}/audio.wav "
                f"--output {folder}/audio.npy") in script  # fmt: skip
        assert (
            f"python -u render.py -s {folder}/data/{avatar.slug} --model_path {folder}/output/{avatar.slug} "
            "--configs arguments/64_dim_1_transformer.py --iteration 10 --batch 32 "
            f"--custom_aud {folder}/audio.npy --custom_wav {folder}/audio.wav --skip_train --skip_test"
        ) in script
        assert f"--frames {audio_frames(1.3)}" in script and "--link" in script
        assert plan.outputs["engine_video"].endswith(
            "/custom/ours_10/renders/output_custom_10iter_renders.mov"
        )
    else:
        assert "extract_ds_features" not in script
        assert (
            f"main.py {node.workdir}/data/{avatar.slug} --workspace {folder}/model/{avatar.slug} -O --test "
            f"--test_train --asr_model ave --portrait --aud {folder}/audio.wav"  # README.md:140
        ) in script
        assert f"{folder}/model/{avatar.slug}/checkpoints/ngp_ep0010.pth" in script  # the chosen one only
        assert plan.outputs["engine_video"] == f"{folder}/model/{avatar.slug}/results/ngp_ep0010_audio.mp4"


def fixture_lines(name: str) -> list[str]:
    text = (FIXTURES / name).read_text()
    return [line for chunk in text.split("\n") for line in chunk.split("\r")]


def test_the_generation_parser_follows_the_steps_and_the_engine_s_render():
    parser = GenerationParser(
        steps={"poses": 0.02, "audio features": 0.08, "render": 0.8, "encode": 0.1},
        engine=gaussiantalker.RenderParser(sets=("custom",)),
        engine_step="render",
    )
    lines = [
        "[talkforge] step 1/4: poses",
        "[INFO] pose view: 19 val frames played ping-pong to 503 frames (26.47 passes) in /w/jobs/7/data/x",
        "[talkforge] step 2/4: audio features",
        "[talkforge] step 3/4: render",
        *fixture_lines("gaussiantalker_render_custom.txt"),
        "[talkforge] step 4/4: encode",
        "[talkforge] done",
    ]
    updates = [update for line in lines if (update := parser.feed(line))]
    progress = [u.progress for u in updates if u.progress is not None]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert [u.stage for u in updates if u.stage][:4] == ["poses", "audio features", "render", "render"]
    metrics = {k: v for u in updates for k, v in u.metrics.items()}
    assert metrics["audio_frames"] == 503 and metrics["rendered_frames"] == 503
    assert parser.outcome(0) is None

    # A failing render is the engine's message; a failure elsewhere names the step.
    crashed = GenerationParser(steps={"render": 0.9, "encode": 0.1},
                               engine=gaussiantalker.RenderParser(), engine_step="render")  # fmt: skip
    for line in ["[talkforge] step 1/2: render", "Loading trained model at iteration 10000",
                 "torch.cuda.OutOfMemoryError: CUDA out of memory."]:  # fmt: skip
        crashed.feed(line)
    assert "ran out of memory" in crashed.outcome(1)
    early = GenerationParser(steps={"poses": 0.1, "render": 0.9}, engine=gaussiantalker.RenderParser(),
                             engine_step="render")  # fmt: skip
    early.feed("[talkforge] step 1/2: poses")
    assert "in the poses step (exit code 1)" in early.outcome(1)

    clamp = gaussiantalker.RenderParser(sets=("custom",))
    update = clamp.feed("[INFO] Custom audio mode: limiting render frames to 15 [25/11 10:00:00]")
    assert update.event == {"frames_limited_to_audio": 15}


def test_synctalk_s_test_with_audio_is_read_by_the_generation_parser():
    parser = GenerationParser(steps={"poses": 0.02, "render": 0.88, "encode": 0.1},
                              engine=synctalk.TestParser(evaluate=False), engine_step="render")  # fmt: skip
    lines = ["[talkforge] step 1/3: poses", "[talkforge] step 2/3: render"]
    lines += [line for line in fixture_lines("synctalk_test.txt") if "Evaluate" not in line]
    lines += ["[talkforge] step 3/3: encode", "[talkforge] done"]
    for line in lines:
        parser.feed(line)
    assert parser.engine.test_done and parser.outcome(0) is None
    missing = GenerationParser(steps={"render": 0.9, "encode": 0.1},
                               engine=synctalk.TestParser(evaluate=False), engine_step="render")  # fmt: skip
    for line in ["[talkforge] step 1/2: render", "[WARN] No checkpoint found, model randomly initialized."]:
        missing.feed(line)
    assert "No checkpoint" in missing.outcome(0)


def test_the_demo_render_clamps_to_the_audio_and_renders_the_listed_frames_in_order(tmp_path):
    """render.py's custom mode as the prototype patched it: frames = min(val poses, audio frames)."""
    data, model = tmp_path / "data" / "x", tmp_path / "output" / "x"
    (data / "gt_imgs").mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25", "-frames:v", "30", "-start_number", "0",
           str(data / "gt_imgs" / "%d.jpg"))  # fmt: skip
    ids = list(range(10, 30)) + list(range(29, 9, -1))  # 40 poses, ping-pong
    (data / "transforms_val.json").write_text(json.dumps({"frames": [{"img_id": i} for i in ids]}))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1:sample_rate=16000", "-ac", "1", str(data / "a.wav"))
    (model / "point_cloud" / "iteration_7").mkdir(parents=True)
    (model / "cfg_args").write_text("Namespace()")

    def run(features: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ENGINES / "demo" / "node" / "render.py"), "-s", str(data),
             "--model_path", str(model), "--iteration", "7", "--batch", "16", "--custom_aud", features.name,
             "--custom_wav", "a.wav", "--skip_train", "--skip_test"],
            capture_output=True, text=True,
        )  # fmt: skip

    made = subprocess.run(
        [sys.executable, str(ENGINES / "demo" / "node" / "features.py"), "--input", str(data / "a.wav")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "shape (25, 16, 29)" in made.stdout and "placeholder" in (data / "a.npy").read_text()
    result = run(data / "a.npy")
    assert result.returncode == 0, result.stderr
    assert "[INFO] Custom audio mode: limiting render frames to 25" in result.stdout
    assert "test set rendering  :   25  frames" in result.stdout
    video = model / "custom" / "ours_7" / "renders" / "output_custom_7iter_renders.mov"
    info = ffprobe(video)
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert int(next(s for s in info["streams"] if s["codec_type"] == "video")["nb_read_frames"]) == 25
    assert not [p for p in video.parent.iterdir() if p.name.startswith(".frames")]
    (data / "bad.npy").write_text("not features")
    failed = run(data / "bad.npy")
    assert failed.returncode == 1 and "aud_features.shape" in failed.stderr


def test_the_pose_view_plays_the_val_frames_back_and_forth(tmp_path):
    dataset = tmp_path / "data" / "x"
    (dataset / "gt_imgs").mkdir(parents=True)
    (dataset / "transforms_train.json").write_text("{}")
    (dataset / "transforms_val.json").write_text(
        json.dumps({"cx": 1, "frames": [{"img_id": i} for i in (7, 8, 9)]})
    )
    view = tmp_path / "jobs" / "3" / "data" / "x"
    model = tmp_path / "output" / "x"
    (model / "point_cloud").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(ENGINES / "node" / "pose_view.py"), "--dataset", str(dataset),
         "--view", str(view), "--frames", "8", "--link", str(model / "point_cloud"),
         str(tmp_path / "jobs/3/output/x/point_cloud")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "3 val frames played ping-pong to 8 frames" in result.stdout
    val = json.loads((view / "transforms_val.json").read_text())
    assert [f["img_id"] for f in val["frames"]] == [7, 8, 9, 9, 8, 7, 7, 8] and val["cx"] == 1
    assert (view / "gt_imgs").is_symlink() and (view / "transforms_train.json").is_symlink()
    assert not (view / "transforms_val.json").is_symlink()
    assert (tmp_path / "jobs/3/output/x/point_cloud").resolve() == model / "point_cloud"
    assert PurePosixPath(str(dataset / "transforms_val.json")).name == "transforms_val.json"


# --- in the browser ------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium is not installed at {CHROMIUM}")
def test_a_video_made_in_the_browser_plays_there_once_its_job_ends(
    chromium_page,  # noqa: F811 - the fixture imported from test_browser
    make_node,
    processes,
    alice,
    media,
):
    make_node()
    processes.worker("local")
    avatar = train_demo_avatar(alice, media)
    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.click("header nav >> text=Videos")
        page.click("text=New video from audio or text")
        page.select_option("#id_avatar", str(avatar.pk))
        page.set_input_files("#id_audio", str(media["mp3"]))
        page.fill("#id_batch_size", "16")
        page.click("#video-form button[type=submit]")
        page.wait_for_url(re.compile(r"/videos/\d+/$"))
        # The page follows the job live, then reloads itself with the player.
        page.wait_for_selector("#log:has-text('[talkforge] step')", timeout=60_000)
        page.wait_for_selector("video", timeout=60_000)
        state = page.wait_for_function(
            """() => {
                const video = document.querySelector('video');
                if (video.error) return {error: video.error.code};
                return video.readyState >= 1 ? {duration: video.duration, width: video.videoWidth} : null;
            }"""
        ).json_value()
        assert state.get("error") is None, state
        assert state["duration"] == pytest.approx(1.3, abs=0.05) and state["width"] == 320
        assert page.locator("#download").get_attribute("href").endswith("/media/video/?download=1")
        assert page.errors == [] and page.outside_requests == []


def test_the_form_offers_each_checkpoint_with_its_avatar_and_keeps_only_the_chosen_source(alice, bob):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from avatars.models import Avatar, Checkpoint
    from gpu_nodes.models import Node
    from videos.forms import VideoCreateForm

    node = Node.objects.create(name="n", workdir="/w")

    def trained(owner, name):
        avatar = Avatar.objects.create(
            owner=owner, name=name, slug=f"{name.lower()}-{owner.pk}", engine="demo", status="trained",
            video="avatars/x/x.mp4", consent_given_at=timezone.now(), consent_given_by=owner,
            consent_statement="mine",
        )  # fmt: skip
        return avatar, Checkpoint.objects.create(
            avatar=avatar, node=node, stage="fine", iteration=500, path="/p"
        )

    ada, ada_checkpoint = trained(alice, "Ada")
    bea, bea_checkpoint = trained(alice, "Bea")
    _, bobs_checkpoint = trained(bob, "Bob")
    html = str(VideoCreateForm(user=alice)["checkpoint"])
    assert f'value="{ada_checkpoint.pk}" data-avatar="{ada.pk}"' in html
    assert f'value="{bea_checkpoint.pk}" data-avatar="{bea.pk}"' in html
    assert f'value="{bobs_checkpoint.pk}"' not in html

    audio = SimpleUploadedFile("a.wav", b"RIFF....WAVE")
    fields = {"avatar": ada.pk, "voice": "offline", "batch_size": 8}
    chose_audio = VideoCreateForm(
        {**fields, "source": "audio", "text": "typed before"}, {"audio": audio}, user=alice
    )
    assert chose_audio.is_valid(), chose_audio.errors
    assert chose_audio.cleaned_data["text"] == "" and chose_audio.cleaned_data["audio"] is audio
    chose_text = VideoCreateForm({**fields, "source": "text"}, {"audio": audio}, user=alice)
    assert not chose_text.is_valid() and chose_text.errors["text"] == ["Type the text the avatar should say."]
