"""A reply rendered by the checkpoint's live session: message_send → the chat_reply job (holding no slot)
in a real RQ worker → the demo session started on the local node, each sentence's fMP4 pieces reaching the
owner's websocket as binary frames before the sentence's clip is announced, the clip saved; the session
shared by the next turn; barge-in and played from the owner (bob's ignored); admission refused by memory;
a crash restarted once, then spoken only with a note; idle eviction by the housekeeping."""

# ruff: noqa: F811 - pytest fixtures imported from the other tests are parameters here

from __future__ import annotations

import json
import struct
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from avatars.engines import live as wire
from avatars.models import Avatar, Checkpoint, DatasetCopy
from chat import live, services
from chat.models import LiveSession, Message
from chat.services import CHAT_REPLY
from chat.turn import reply_run
from gpu_nodes.connections import LocalConnection
from gpu_nodes.models import Node, NodeEngine
from jobs.models import Job
from jobs.reconcile import upkeep_run
from tests.avatars.test_live_session import demo_dataset, ffprobe
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar
from tests.chat.test_socket import application, token
from tests.conftest import wait_for

REPLY = ["Hello there, I am Ada", ". Nice to meet", " you today!"]


@pytest.fixture(autouse=True)
def small_media(settings, tmp_path):
    settings.AVATAR_MIN_SECONDS = 2
    settings.MEDIA_ROOT = tmp_path / "media"


def trained(owner, node, engine="demo", name="Ada"):
    """A trained avatar's rows (as a finished training leaves them) and the dataset files its live backend
    reads, on ``node``."""
    avatar = make_avatar(owner, name=name)
    Avatar.objects.filter(pk=avatar.pk).update(engine=engine)
    avatar.refresh_from_db()
    data = Path(node.workdir) / "data" / avatar.slug
    demo_dataset(data)
    DatasetCopy.objects.create(avatar=avatar, node=node, path=str(data), complete=True)
    stage = "epoch" if engine == "synctalk" else "fine"
    path = f"{node.workdir}/output/{avatar.slug}/point_cloud/iteration_10"
    Checkpoint.objects.create(avatar=avatar, node=node, stage=stage, iteration=10, path=path)
    return avatar


@pytest.fixture
def live_avatar(transactional_db, alice, make_node, processes, redis_db, llm_server, settings):
    """A trained demo avatar on a local node served by a real worker."""
    node = make_node()
    llm_server.pieces, llm_server.delay = REPLY, 0.05
    worker_for(processes, node, llm_server, settings, fps="50")
    return trained(alice, node)


def sender(conversation, text: str, sent: list):
    return lambda: sent.append(services.message_send(conversation=conversation, text=text))


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
    received = listen(alice, conversation, reply_ended, then=sender(conversation, "Hi!", sent))
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
    # A live session streams: the reply starts with its first clause (CHAT_FIRST_FRAGMENT_MIN_CHARS).
    assert [chunk.text for chunk in chunks] == ["Hello there,", "I am Ada. Nice to meet you today!"]
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
    received = listen(alice, conversation, reply_ended, then=sender(conversation, "And you?", sent))
    second = sent[1]
    second.refresh_from_db()
    assert second.status == Message.Status.DONE, second.error
    assert not [e for e in received if isinstance(e, dict) and e["type"] == "live"]
    # The session counts the turn once the job's turn is over, just after the reply's end is announced.
    wait_for(lambda: LiveSession.objects.get().turns == 2, 10, message="the session to count the 2nd turn")
    assert LiveSession.objects.count() == 1
    assert second.chunks.first().pose_start == 0  # a new reply starts its poses anew, as clips do


def bob_conversation(bob, avatar):
    """A conversation of bob's own (with his own avatar): his socket is open, alice's reply is not his."""
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


def worker_for(processes, node, llm_server, settings, fps: str):
    processes.worker(
        node.name,
        CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/", CHAT_LLM_API_KEY="sk-platform",
        CHAT_XTTS_DIR="", CHAT_SENTENCE_MIN_CHARS="10", LIVE_DEMO_FPS=fps,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_barge_in_stops_the_reply_and_the_render_in_flight(
    alice, bob, make_node, processes, redis_db, llm_server, settings
):
    node = make_node()
    llm_server.pieces, llm_server.delay = (
        [
            "This sentence is long enough to take a while to render at ten "
            "frames a second, so it is still rendering.",
            " Never said.",
        ],
        0.05,
    )
    worker_for(processes, node, llm_server, settings, fps="10")
    avatar = trained(alice, node)
    conversation = services.conversation_create(owner=alice, avatar=avatar)
    sent, barged = [], {}

    def first_segment(received) -> bool:
        return any(isinstance(e, tuple) for e in received)

    # The page opens: warm_up starts the session in the node's worker before the first turn.
    def live_ready(received) -> bool:
        return any(
            isinstance(e, dict) and e.get("type") == "live" and e["state"] == "ready" for e in received
        )

    warmed = listen(alice, conversation, live_ready, send=[{"action": "warm_up"}])
    assert [e["state"] for e in warmed if e["type"] == "live"] == ["starting", "starting", "ready"], warmed
    assert LiveSession.objects.get().state == LiveSession.State.READY
    listen(alice, conversation, first_segment, then=sender(conversation, "Talk!", sent))
    reply = sent[0]
    # bob cannot stop alice's reply, even knowing its id (his own socket, his own conversation).
    refused = listen(bob, bob_conversation(bob, avatar), lambda r: len(r) >= 1,
                     send=[{"action": "barge_in", "message": reply.pk}])  # fmt: skip
    assert refused[0]["type"] == "error"
    reply.refresh_from_db()
    assert reply.status == Message.Status.RUNNING
    barged["at"] = time.monotonic()
    received = listen(alice, conversation, reply_ended, send=[{"action": "barge_in", "message": reply.pk}])
    ended_after = time.monotonic() - barged["at"]
    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELED and ended_after < 5, ended_after
    assert not [e for e in received if isinstance(e, dict) and e["type"] == "chunk_video"]  # cut mid-render
    session = LiveSession.objects.get()
    log = Path(session.socket).with_suffix(".log")
    # The session is alive and was told to stop (not killed): it serves the next turn.
    assert session.state == LiveSession.State.READY
    assert LocalConnection(node).is_running(session.pid, marker=session.marker), log.read_text()


@pytest.mark.django_db(transaction=True)
def test_admission_counts_the_memory_of_other_sessions_and_says_why_it_refuses(alice, make_node, settings):
    settings.LIVE_SESSION_GPU_MB = {"gaussiantalker": 50000}
    node = make_node(gpus=1)  # one GPU of 81559 MB
    NodeEngine.objects.create(node=node, engine="gaussiantalker")
    first, second = (
        trained(alice, node, "gaussiantalker", "Ada"),
        trained(alice, node, "gaussiantalker", "Bo"),
    )
    session, new = live.live_session_admit(checkpoint=first.checkpoints.get())
    assert new and session.memory_mb == 50000 and session.gpu.index == 0
    assert live.live_session_admit(checkpoint=first.checkpoints.get()) == (session, False)  # shared
    events = []
    with pytest.raises(live.LiveRefused, match="50000 MB"):
        live.live_session_ready(checkpoint=second.checkpoints.get(), publish=events.append)
    assert events == [{"type": "chat.live", "state": "spoken_only", "reason": events[0]["reason"]}]
    assert "the most free is 31559 MB" in events[0]["reason"]
    live.live_session_end(session=session, reason="test")
    assert live.live_session_admit(checkpoint=second.checkpoints.get())[1]  # the memory is free again


@pytest.mark.django_db(transaction=True)
def test_a_reply_refused_a_session_is_spoken_only_and_says_why(alice, make_node, settings):
    from chat.job_kind import _renderer

    settings.LIVE_SESSION_GPU_MB = {"gaussiantalker": 90000}  # more than the node's 81559 MB GPU
    node = make_node(gpus=1)
    NodeEngine.objects.create(node=node, engine="gaussiantalker")
    avatar = trained(alice, node, "gaussiantalker")
    reply = in_process_reply(services.conversation_create(owner=alice, avatar=avatar))
    job = Job.objects.create(
        owner=alice, kind=CHAT_REPLY, node=node, avatar=avatar, status=Job.Status.RUNNING,
        params={"message": reply.pk, "checkpoint": avatar.checkpoints.get().pk, "live": True},
    )  # fmt: skip
    events = []
    assert _renderer(job, reply, context=None, publish=events.append) is None
    reply.refresh_from_db()
    assert "90000 MB" in reply.video_note and "only spoken" in reply.video_note
    assert events == [{"type": "chat.live", "state": "spoken_only", "reason": reply.video_note}]
    assert not LiveSession.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_cpu_slot_admits_its_number_of_sessions(alice, make_node, settings):
    settings.LIVE_SESSIONS_PER_CPU_SLOT = 1
    node = make_node()
    first, second = trained(alice, node, name="Ada"), trained(alice, node, name="Bo")
    live.live_session_admit(checkpoint=first.checkpoints.get())
    with pytest.raises(live.LiveRefused, match="LIVE_SESSIONS_PER_CPU_SLOT"):
        live.live_session_admit(checkpoint=second.checkpoints.get())


def in_process_reply(conversation):
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    return Message.objects.create(conversation=conversation, role="assistant", status="pending")


@pytest.mark.django_db(transaction=True)
def test_a_crashed_session_restarts_once_then_the_reply_is_only_spoken(
    alice, make_node, redis_db, llm_server, settings
):
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{llm_server.server_port}/v1/"
    settings.CHAT_XTTS_DIR, settings.CHAT_SENTENCE_MIN_CHARS = "", 10
    llm_server.pieces, llm_server.delay = REPLY, 0.0
    node = make_node()
    conn = LocalConnection(node)
    avatar = trained(alice, node)
    checkpoint = avatar.checkpoints.get()
    conversation = services.conversation_create(owner=alice, avatar=avatar)
    events = []
    crashed = live.live_session_ready(checkpoint=checkpoint, publish=events.append)
    conn.kill_tree(crashed.pid, marker=crashed.marker, grace=0.5)  # it dies between turns
    reply = in_process_reply(conversation)
    renderer = live.LiveRenderer(session=crashed, reply=reply, publish=events.append)
    try:
        reply = reply_run(reply=reply, publish=events.append, renderer=renderer)
    finally:
        renderer.close()
    assert reply.status == Message.Status.DONE and not reply.video_note, reply.video_note
    assert all(chunk.video for chunk in reply.chunks.all())
    crashed.refresh_from_db()
    again = LiveSession.objects.get(state=LiveSession.State.READY)
    assert crashed.state == LiveSession.State.FAILED and again.restarts == 1 and again.pk != crashed.pk
    assert [e["state"] for e in events if e["type"] == "chat.live"][-2:] == ["starting", "ready"]

    # It dies again, and this time it cannot start (its dataset is gone): the reply is only spoken.
    conn.kill_tree(again.pid, marker=again.marker, grace=0.5)
    (Path(node.workdir) / "data" / avatar.slug / "transforms_val.json").unlink()
    reply = in_process_reply(conversation)
    renderer = live.LiveRenderer(session=again, reply=reply, publish=events.append)
    try:
        reply = reply_run(reply=reply, publish=events.append, renderer=renderer)
    finally:
        renderer.close()
    assert reply.status == Message.Status.DONE
    assert "could not start again" in reply.video_note and "transforms_val.json" in reply.video_note
    assert not any(chunk.video for chunk in reply.chunks.all())
    assert [e for e in events if e["type"] == "chat.video" and not e["on"]][-1]["note"] == reply.video_note


@pytest.mark.django_db(transaction=True)
def test_housekeeping_ends_idle_sessions_and_those_of_disabled_nodes(alice, make_node, settings):
    node = make_node()
    conn = LocalConnection(node)
    idle = live.live_session_ready(checkpoint=trained(alice, node, name="Ada").checkpoints.get(),
                                   publish=lambda e: None)  # fmt: skip
    busy = live.live_session_ready(checkpoint=trained(alice, node, name="Bo").checkpoints.get(),
                                   publish=lambda e: None)  # fmt: skip
    LiveSession.objects.filter(pk=idle.pk).update(
        last_used_at=timezone.now() - timedelta(seconds=settings.LIVE_IDLE_SECONDS + 1)
    )
    upkeep_run()
    idle.refresh_from_db(), busy.refresh_from_db()
    assert idle.state == LiveSession.State.ENDED and "Unused" in idle.note
    assert not conn.is_running(idle.pid, marker=idle.marker) and not Path(idle.socket).exists()
    assert busy.state == LiveSession.State.READY and conn.is_running(busy.pid, marker=busy.marker)
    Node.objects.filter(pk=node.pk).update(enabled=False)
    upkeep_run()
    busy.refresh_from_db()
    assert busy.state == LiveSession.State.ENDED and not conn.is_running(busy.pid, marker=busy.marker)


@pytest.mark.django_db(transaction=True)
def test_a_second_conversation_waits_while_the_shared_session_serves_the_first(alice, make_node):
    node = make_node()
    avatar = trained(alice, node)
    session = live.live_session_ready(checkpoint=avatar.checkpoints.get(), publish=lambda e: None)
    first = wire.open_link(LocalConnection(node), node, session.socket, marker="first-conversation")
    assert first.ask({"op": "ping"}, answer="pong")  # the session is serving it
    conversation = services.conversation_create(owner=alice, avatar=avatar)
    events = []
    renderer = live.LiveRenderer(session=session, reply=in_process_reply(conversation), publish=events.append)
    waiter = threading.Thread(target=renderer._link)
    waiter.start()
    time.sleep(1.5)
    assert [e["state"] for e in events] == ["waiting"] and "another conversation" in events[0]["reason"]
    first.close()  # its turn ends: the session serves the next
    waiter.join(10)
    assert [e["state"] for e in events] == ["waiting", "ready"] and renderer.link is not None
    renderer.close()


@pytest.mark.django_db(transaction=True)
def test_deleting_the_last_conversation_ends_its_session(alice, make_node):
    node = make_node()
    avatar = trained(alice, node)
    first = services.conversation_create(owner=alice, avatar=avatar)
    second = services.conversation_create(owner=alice, avatar=avatar)
    session = live.live_session_ready(checkpoint=avatar.checkpoints.get(), publish=lambda e: None)
    services.conversation_delete(conversation=first)
    session.refresh_from_db()
    assert session.state == LiveSession.State.READY  # the other conversation still uses it
    services.conversation_delete(conversation=second)
    session.refresh_from_db()
    assert session.state == LiveSession.State.ENDED and "deleted" in session.note
    assert not LocalConnection(node).is_running(session.pid, marker=session.marker)
