"""A reply rendered by the checkpoint's live session: message_send → the chat_reply job (holding no slot)
in a real RQ worker → the demo session started on the local node, each sentence's fMP4 pieces reaching the
owner's websocket as binary frames before the sentence's clip is announced, the clip saved; the session
shared by the next turn; barge-in and played from the owner (bob's ignored); admission refused by memory;
a crash restarted once, then spoken only with a note; idle eviction by the housekeeping."""

# ruff: noqa: F811 - pytest fixtures imported from the other tests are parameters here

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from avatars.models import DatasetCopy
from chat import live, services
from chat.models import LiveSession, Message
from gpu_nodes.connections import LocalConnection
from jobs.models import Job
from jobs.reconcile import upkeep_run

from .test_chat_llm import llm_server  # noqa: F401
from .test_chat_socket import application, token
from .test_live_session import demo_dataset, ffprobe
from .test_videos import fake_trained, media  # noqa: F401

REPLY = ["Hello there, I am Ada", ". Nice to meet", " you today!"]


@pytest.fixture(autouse=True)
def small_media(settings, tmp_path):
    settings.AVATAR_MIN_SECONDS = 2
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def live_avatar(transactional_db, alice, media, make_node, processes, redis_db, llm_server, settings):
    """A trained demo avatar (rows of a training, and the dataset files the live backend reads) on a local
    node served by a real worker."""
    node = make_node()
    llm_server.pieces, llm_server.delay = REPLY, 0.05
    processes.worker(
        node.name,
        CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/", CHAT_LLM_API_KEY="sk-platform",
        CHAT_XTTS_DIR="", CHAT_SENTENCE_MIN_CHARS="10", LIVE_DEMO_FPS="50", MEDIA_ROOT=str(settings.MEDIA_ROOT),
    )  # fmt: skip
    avatar = fake_trained(alice, media, node, name="Ada")
    demo_dataset(Path(DatasetCopy.objects.get(avatar=avatar).path))
    return avatar


def parse_segment(frame: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack(">I", frame[:4])
    return json.loads(frame[4 : 4 + length]), frame[4 + length :]


def listen(user, conversation, until, *, send=(), then=None, timeout=90):
    """Everything the conversation's websocket sends ``user`` (JSON events and binary segments, in order)
    until ``until(events)``; ``send``: JSON messages sent first; ``then``: called once connected (e.g.
    sends the message whose reply is awaited)."""
    headers = token(user)

    async def run():
        communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        for message in send:
            await communicator.send_json_to(message)
        if then is not None:
            await sync_to_async(then)()
        received, deadline = [], time.monotonic() + timeout
        while not until(received):
            assert time.monotonic() < deadline, [e for e in received if isinstance(e, dict)][-5:]
            try:
                output = await communicator.receive_output(timeout=deadline - time.monotonic())
            except TimeoutError:
                continue
            if output.get("bytes") is not None:
                received.append(parse_segment(output["bytes"]))
            elif output.get("text") is not None:
                received.append(json.loads(output["text"]))
        await communicator.disconnect()
        return received

    return async_to_sync(run)()


def reply_ended(received) -> bool:
    return any(isinstance(e, dict) and e.get("type") == "reply" for e in received)


@pytest.mark.django_db(transaction=True)
def test_a_reply_streams_from_the_live_session_and_the_next_turn_shares_it(alice, bob, live_avatar, tmp_path):
    conversation = services.conversation_create(owner=alice, avatar=live_avatar)
    sent = []
    received = listen(alice, conversation, reply_ended,
                      then=lambda: sent.append(services.message_send(conversation=conversation, text="Hi!")))  # fmt: skip
    first = sent[0]
    assert first.job.params["live"] is True
    first.refresh_from_db()
    assert first.status == Message.Status.DONE, first.error
    assert Job.objects.get(pk=first.job_id).gpu_id is None  # the reply held no slot
    events = [e for e in received if isinstance(e, dict)]
    states = [e["state"] for e in events if e["type"] == "live"]
    assert states == ["starting", "ready"], events
    segments = [e for e in received if isinstance(e, tuple)]
    chunks = first.chunks.order_by("index")
    assert len(chunks) == 2
    for chunk in chunks:
        mine = [(h, data) for h, data in segments if h["index"] == chunk.index]
        assert all(h["type"] == "segment" and h["message"] == first.pk for h, _ in mine)
        assert [h["seq"] for h, _ in mine] == list(range(len(mine))) and mine[-1][0]["last"]
        assert not any(h["last"] for h, _ in mine[:-1]) and mine[0][1][4:8] == b"ftyp"
        # Streamed: every piece reached the browser before the clip was announced.
        announced = next(i for i, e in enumerate(received) if isinstance(e, dict)
                         and e["type"] == "chunk_video" and e["index"] == chunk.index)  # fmt: skip
        assert received.index(mine[-1]) < announced
        streamed = tmp_path / f"streamed-{chunk.index}.mp4"
        streamed.write_bytes(b"".join(data for _, data in mine))
        saved = tmp_path / "media" / chunk.video
        assert saved.read_bytes() == streamed.read_bytes()  # the clip kept for history is what streamed
        probe = ffprobe(streamed)
        assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}
        assert float(probe["format"]["duration"]) == pytest.approx(chunk.audio_seconds, abs=0.15)
    assert chunks[1].pose_start == chunks[0].video_frames  # the poses go on from sentence to sentence
    assert 0 < first.timings["first_frame_rendered"] <= first.timings["first_video_chunk"]
    session = LiveSession.objects.get()
    assert session.state == LiveSession.State.READY and session.turns == 1 and session.last_latency > 0

    # played: the owner's report is kept once; bob's (another user's message) is refused and changes nothing.
    played = {"action": "played", "message": first.pk, "index": 0, "speech_end_to_played": 1.234}
    refused = listen(bob, bob_conversation(bob, live_avatar), lambda r: len(r) >= 1,
                     send=[{**played, "speech_end_to_played": 9.0}])  # fmt: skip
    assert refused[0]["type"] == "error" and "No such reply" in refused[0]["error"]
    listen(alice, conversation, lambda r: True, send=[played])
    wait_timing(first, "first_frame_played", 1.234)

    # The second turn uses the same process: no second start.
    received = listen(alice, conversation, reply_ended,
                      then=lambda: sent.append(services.message_send(conversation=conversation, text="And you?")))  # fmt: skip
    second = sent[1]
    second.refresh_from_db()
    assert second.status == Message.Status.DONE, second.error
    assert not [e for e in received if isinstance(e, dict) and e["type"] == "live"]
    assert LiveSession.objects.count() == 1 and LiveSession.objects.get().turns == 2
    assert second.chunks.first().pose_start == 0  # a new reply starts its poses anew, as clips do


def bob_conversation(bob, avatar):
    """A conversation of bob's own (with his own avatar): his socket is open, alice's reply is not his."""
    from .test_chat_services import make_avatar

    return services.conversation_create(owner=bob, avatar=make_avatar(bob))


def wait_timing(reply, key, value, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply.refresh_from_db()
        if key in reply.timings:
            assert reply.timings[key] == value
            return
        time.sleep(0.05)
    raise AssertionError(f"{key} was not stored: {reply.timings}")
