"""Each sentence of a reply rendered as video on the avatar's node as soon as it is spoken: a trained demo
avatar on a local node, a real RQ worker running the chat_reply job pinned to the checkpoint's node, the
real render chain of the videos app per sentence. Clips come back in order as H.264/AAC MP4s as long as
their speech, the poses go on from clip to clip, the timings and the job's log show each render; a stop
during a render kills it on the node and cancels the reply; bob gets 404 for the clips."""

# ruff: noqa: F811 - pytest fixtures imported from the other tests are parameters here

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from avatars.models import Avatar
from chat import services
from chat.models import Chunk, Message
from core.errors import ServiceError
from gpu_nodes.connections import MARKER_VARIABLE, _group_members
from jobs.models import Job
from jobs.selectors import job_log_text
from tests.chat.test_asr import speech_wav, tiny_whisper  # noqa: F401
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar
from tests.conftest import wait_for
from tests.videos.test_videos import fake_trained, media, train_demo_avatar  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent.parent
REPLY = ["Hello there, I am Ada", ". Nice to meet", " you! What shall we", " talk about today?"]
SENTENCES = ["Hello there, I am Ada.", "Nice to meet you!", "What shall we talk about today?"]


@pytest.fixture(autouse=True)
def small_media(settings, tmp_path):
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 4
    settings.QUALITY_MIN_FACE_PIXELS = 30
    settings.MEDIA_ROOT = tmp_path / "media"
    # These tests cover the clip path (chat/video.py NodeRenderer, the fallback and the benchmark's
    # baseline); the live session path is tests/chat/test_live.py's.
    settings.LIVE_SESSIONS = False


@pytest.fixture
def slow_encode(tmp_path) -> Path:
    """An ``ffmpeg`` first on the worker's PATH that, while the returned flag file exists, holds the web
    encode of a clip for a minute (a render long enough to be stopped) or, when the file says "fail",
    fails it; otherwise it is ffmpeg."""
    folder = tmp_path / "slow-bin"
    folder.mkdir()
    flag = tmp_path / "slow-encode"
    script = folder / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *+faststart*) if grep -q fail {flag} 2>/dev/null; then echo "[test] no encoder" >&2; '
        "exit 1; fi;;\nesac\n"
        f'case "$*" in *+faststart*) if [ -e {flag} ]; then echo "[test] encode held"; sleep 60; fi;; esac\n'
        f'exec {shutil.which("ffmpeg")} "$@"\n'
    )
    script.chmod(0o755)
    return flag


@pytest.fixture
def talking_avatar(
    transactional_db, alice, media, make_node, processes, redis_db, llm_server, tiny_whisper, slow_encode
):
    node = make_node()
    llm_server.pieces, llm_server.delay = REPLY, 0.3
    llm_server.hold_last_until = first_clip_of_a_running_reply
    processes.worker(
        node.name,
        PATH=f"{slow_encode.parent / 'slow-bin'}{os.pathsep}{os.environ['PATH']}",
        CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/",
        CHAT_LLM_API_KEY="sk-platform",
        CHAT_WHISPER_MODEL=tiny_whisper,
        CHAT_WHISPER_DEVICE="cpu",
        CHAT_XTTS_DIR="",
        CHAT_SENTENCE_MIN_CHARS=10,
    )
    return train_demo_avatar(alice, media)


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def settled(reply_id: int, timeout: float = 120) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = Message.objects.select_related("job").get(pk=reply_id)
        if reply.status not in (Message.Status.PENDING, Message.Status.RUNNING) and reply.job.is_terminal:
            return reply
        time.sleep(0.2)
    raise AssertionError(f"reply {reply_id} did not finish: {reply.status}, job {reply.job.status}")


def ffprobe(path: Path) -> dict:
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output)


def marked_processes(marker: str) -> list[int]:
    """Every process on this machine carrying the job's marker, in any process group."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat", "rb") as stat:
                        if stat.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


def first_clip_of_a_running_reply() -> bool:
    """The condition the fake LLM waits for before the last piece of a reply (``hold_last_until``): the
    reply being written has its first clip. Asked from the server's thread, on a connection of its own."""
    try:
        running = Chunk.objects.filter(index=0, message__status=Message.Status.RUNNING)
        return running.exclude(video="").exists()
    finally:
        connection.close()


def assert_rendered_in_order(reply: Message) -> None:
    media_root = Path(django_settings.MEDIA_ROOT)
    chunks = list(reply.chunks.order_by("index"))
    # Whole sentences: a clip is rendered cold, so the first one is not cut at its comma as a live
    # session's is (chat.turn, CHAT_FIRST_FRAGMENT_MIN_CHARS).
    assert [c.text for c in chunks] == SENTENCES
    offset = 0
    for chunk in chunks:
        assert chunk.video.endswith(f"chunk-{chunk.index:03d}.mp4"), chunk.video
        info = ffprobe(media_root / chunk.video)
        codecs = {stream["codec_type"]: stream for stream in info["streams"]}
        assert codecs["video"]["codec_name"] == "h264" and codecs["video"]["pix_fmt"] == "yuv420p"
        assert codecs["audio"]["codec_name"] == "aac"
        assert float(info["format"]["duration"]) == pytest.approx(chunk.audio_seconds, abs=0.04)
        # The poses go on where the previous clip's ended: no jump between consecutive clips.
        assert chunk.pose_start == offset and chunk.video_frames >= 1
        offset += chunk.video_frames
        assert chunk.timings["render"] > 0 and chunk.timings["video_ready"] >= chunk.timings["ready"]
    assert reply.video_frames == offset and not reply.video_note
    assert 0 < reply.timings["tts_first_audio"] < reply.timings["first_video_chunk"]
    assert reply.timings["first_video_chunk"] < reply.timings["whole_reply"]
    # The first clip was back before the last sentence was even spoken: the render overlapped speech (the
    # LLM held its last piece until the clip was saved: rendered only after the reply, it would come later).
    assert chunks[0].timings["video_ready"] < chunks[-1].timings["ready"]


def test_each_sentence_is_rendered_on_the_checkpoint_s_node_in_order(
    alice, bob, talking_avatar, llm_server, speech_wav, slow_encode
):
    avatar = talking_avatar
    checkpoint = avatar.checkpoints.get(stage="fine", iteration=20)
    conversation = services.conversation_create(owner=alice, avatar=avatar, language="en")
    url = f"/api/conversations/{conversation.pk}/messages/"

    # Typed in.
    response = api_for(alice).post(url, {"text": "Hello Ada!"}, format="json")
    assert response.status_code == 202, response.content
    reply = settled(response.json()["id"])
    assert reply.status == Message.Status.DONE, (reply.error, job_log_text(reply.job)[-3000:])
    job = reply.job
    assert job.node == checkpoint.node and job.params["checkpoint"] == checkpoint.pk
    assert job.status == Job.Status.SUCCEEDED
    assert_rendered_in_order(reply)
    log = job_log_text(job)
    assert "[chat] each sentence is rendered on this node" in log
    for number, chunk in enumerate(reply.chunks.order_by("index"), start=1):
        assert f"[chat] sentence {number} rendered in " in log
        assert f"ping-pong to {chunk.video_frames} frames " in log
        assert f"from frame {chunk.pose_start} in " in log
    assert log.count("[talkforge] step 3/4: render") == 3 and log.count("[talkforge] done") == 3
    assert "Loading trained model at iteration 20" in log
    # Nothing is left of the turn on the node.
    assert not (Path(job.node.workdir) / "jobs" / str(job.pk)).exists()

    # The API lists each chunk's clip; the owner gets it, bob gets 404.
    chunks = api_for(alice).get(url).json()["results"][-1]["chunks"]
    assert [c["index"] for c in chunks] == [0, 1, 2] and all(c["video_url"] for c in chunks)
    assert [c["pose_start"] for c in chunks] == [c.pose_start for c in reply.chunks.order_by("index")]
    owner, other = Client(), Client()
    owner.force_login(alice)
    other.force_login(bob)
    clip = owner.get(chunks[0]["video_url"])
    assert clip.status_code == 200 and clip["Content-Type"] == "video/mp4"
    assert b"".join(clip.streaming_content)[4:8] == b"ftyp"
    for chunk in chunks:
        assert other.get(chunk["video_url"]).status_code == 404
        assert other.get(chunk["audio_url"]).status_code == 404

    # Spoken in: Whisper first, then the same.
    with open(speech_wav, "rb") as audio:
        response = api_for(alice).post(url, {"audio": audio}, format="multipart")
    assert response.status_code == 202, response.content
    spoken = settled(response.json()["id"])
    assert spoken.status == Message.Status.DONE, spoken.error
    assert "asr" in spoken.timings and spoken.timings["asr"] < spoken.timings["first_video_chunk"]
    assert_rendered_in_order(spoken)

    # Stop while a sentence renders: its processes on the node die and the reply ends canceled. (No clip
    # comes from here on, so the LLM no longer waits for one.)
    llm_server.hold_last_until = None
    slow_encode.touch()
    reply_id = api_for(alice).post(url, {"text": "Tell me."}, format="json").json()["id"]
    running = wait_for(
        lambda: (
            (job := Job.objects.get(pk=Message.objects.get(pk=reply_id).job_id)).pid
            and "[test] encode held" in job_log_text(job)
            and job
        ),
        60, interval=0.1, message="the first sentence's render to be held",
    )  # fmt: skip
    assert _group_members(running.pid, running.marker), "the render should be running"
    assert api_for(alice).post(f"/api/conversations/{conversation.pk}/stop/").status_code == 200
    stopped = settled(reply_id, timeout=30)
    assert stopped.status == Message.Status.CANCELED and stopped.job.status == Job.Status.CANCELED
    assert marked_processes(running.marker) == []
    assert not stopped.chunks.exclude(video="").exists()
    assert stopped.timings["whole_reply"] < 15  # not the minute the encode was held for

    # A render that fails: the reply is still spoken, and says once why the rest is not shown.
    slow_encode.write_text("fail")
    failed = settled(api_for(alice).post(url, {"text": "Again."}, format="json").json()["id"])
    assert failed.status == Message.Status.DONE and failed.job.status == Job.Status.SUCCEEDED
    assert [c.text for c in failed.chunks.all()] == SENTENCES and all(c.audio for c in failed.chunks.all())
    assert not failed.chunks.exclude(video="").exists() and "first_video_chunk" not in failed.timings
    assert failed.video_note.startswith("Sentence 1 could not be rendered, so the rest of the reply is only")
    assert "in the encode step" in failed.video_note and "[test] no encoder" in failed.video_note
    log = job_log_text(failed.job)
    assert log.count("[chat] spoken only: Sentence 1 could not be rendered") == 1
    assert log.count("[talkforge] step 4/4: encode") == 1  # not tried again for sentences 2 and 3


@pytest.mark.django_db(transaction=True)
def test_a_reply_is_rendered_on_an_ssh_node(alice, media, make_ssh_node, processes, redis_db, llm_server):
    node = make_ssh_node(name="remote", gpus=1)
    llm_server.pieces, llm_server.delay = REPLY, 0.3
    llm_server.hold_last_until = first_clip_of_a_running_reply
    processes.worker(
        node.name, CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/", CHAT_XTTS_DIR="",
        CHAT_SENTENCE_MIN_CHARS=10,
    )  # fmt: skip
    avatar = train_demo_avatar(alice, media)
    conversation = services.conversation_create(owner=alice, avatar=avatar, language="en")
    url = f"/api/conversations/{conversation.pk}/messages/"
    reply = settled(api_for(alice).post(url, {"text": "Hello Ada!"}, format="json").json()["id"])
    assert reply.status == Message.Status.DONE, (reply.error, job_log_text(reply.job)[-3000:])
    assert reply.job.node == node
    assert_rendered_in_order(reply)
    assert not (Path(node.workdir) / "jobs" / str(reply.job_id)).exists()  # the loopback node's folder


@pytest.mark.django_db
def test_a_reply_is_pinned_to_the_checkpoint_s_node_or_spoken_only_saying_why(alice, media, make_node):
    node = make_node()
    trained = fake_trained(alice, media, node)
    reply = services.message_send(
        conversation=services.conversation_create(owner=alice, avatar=trained), text="Hi"
    )
    latest = trained.checkpoints.get(stage="fine", iteration=10)
    assert reply.job.params == {"message": reply.pk, "checkpoint": latest.pk, "node": node.name}
    assert reply.video_note == ""

    # No checkpoint: spoken only, said once on the reply; placed like the avatar's other steps.
    untrained = make_avatar(alice)
    reply = services.message_send(
        conversation=services.conversation_create(owner=alice, avatar=untrained), text="Hi"
    )
    assert "checkpoint" not in reply.job.params and "node" not in reply.job.params
    assert "no checkpoint that can render" in reply.video_note and "only spoken" in reply.video_note
    page = Client()
    page.force_login(alice)
    html = page.get(f"/chat/{reply.conversation_id}/").content.decode()
    # The avatar's still shows either way; the note under it says why replies are only spoken.
    assert '<div id="avatar-view"' in html
    assert '<p id="avatar-note" class="note">Ada has no checkpoint that can render' in html
    trained_page = page.get(
        f"/chat/{Message.objects.filter(conversation__avatar=trained).first().conversation_id}/"
    ).content.decode()
    assert '<div id="avatar-view"' in trained_page and '<p id="avatar-note" class="note"></p>' in trained_page
    Avatar.objects.filter(pk=untrained.pk).update(status=Avatar.Status.TRAINING)
    untrained.refresh_from_db()
    conversation = services.conversation_create(owner=alice, avatar=untrained)
    reply = services.message_send(conversation=conversation, text="Hi")
    assert "is not trained (training)" in reply.video_note

    # The model's node disabled: a clear error, nothing sent.
    node.enabled = False
    node.save()
    conversation = services.conversation_create(owner=alice, avatar=trained)
    with pytest.raises(ServiceError, match=f"Node {node.name}, which holds .* is disabled"):
        services.message_send(conversation=conversation, text="Hi")
    assert not conversation.messages.exists()


def test_the_pose_view_starts_where_the_previous_clip_ended(tmp_path):
    dataset = tmp_path / "data" / "x"
    dataset.mkdir(parents=True)
    (dataset / "transforms_val.json").write_text(json.dumps({"frames": [{"img_id": i} for i in (7, 8, 9)]}))

    def view(start: int, frames: int) -> list[int]:
        target = tmp_path / f"view-{start}"
        subprocess.run(
            [sys.executable, str(ROOT / "avatars/engines/node/pose_view.py"), "--dataset", str(dataset),
             "--view", str(target), "--frames", str(frames), "--start", str(start)],
            check=True, capture_output=True,
        )  # fmt: skip
        return [f["img_id"] for f in json.loads((target / "transforms_val.json").read_text())["frames"]]

    whole = view(0, 11)
    assert whole == [7, 8, 9, 9, 8, 7, 7, 8, 9, 9, 8]
    assert view(0, 4) + view(4, 3) + view(7, 4) == whole  # clips of 4, 3 and 4 frames, back to back
