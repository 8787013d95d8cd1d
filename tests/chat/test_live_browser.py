"""The live conversation in a real browser (Chromium through Playwright, real daphne, real Redis channel
layer): a reply's live stream — fragmented MP4 pieces that the test makes with ffmpeg (the flags of the
live sessions) and publishes to the conversation's group, exactly as a render session does — plays through
Media Source Extensions as it arrives; hands-free sends a turn when the person stops speaking (Chromium's
fake microphone plays a WAV); speech over the avatar silences it at once and stops the reply (barge-in);
the chat page fits a phone."""

# ruff: noqa: F811 - pytest fixtures imported from the other tests are parameters here

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import threading
import time
import wave
from pathlib import Path
from urllib.parse import urlparse

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from avatars.engines.node.live_session import FMP4_OUTPUT, FPS
from chat import services
from chat.events import conversation_group
from chat.models import Chunk, Message
from jobs.models import Job
from tests.chat.test_asr import speech_wav  # noqa: F401
from tests.chat.test_services import make_avatar
from tests.talkforge.test_browser import CHROMIUM, CHROMIUM_ARGS, log_in
from tests.talkforge.test_responsive import PHONE, WIDTHS

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM}"
)


def sentence_fmp4(seconds: float, tone: int) -> bytes:
    """A "sentence" as a render session encodes it: 25 fps test picture and a tone, fragmented MP4."""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=128x128:rate=25",
         "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=44100", "-t", str(seconds),
         *FMP4_OUTPUT, "pipe:1"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip


def pieces_of(fmp4: bytes) -> list[bytes]:
    """Cut as a session sends it: the init segment (ftyp + moov), then one piece per moof + mdat; whatever
    follows the last fragment (ffmpeg's mfra index) goes with the last piece."""
    init, pieces, offset = b"", [], 0
    while offset < len(fmp4):
        size, kind = struct.unpack(">I4s", fmp4[offset : offset + 8])
        box = fmp4[offset : offset + size]
        offset += size
        if kind == b"moof":
            pieces.append(box)
        elif pieces:
            pieces[-1] += box
        else:
            init += box
    return [init, *pieces]


def mic_wav(folder: Path, speech: Path, *, before: float, after: float) -> Path:
    """The fake microphone's recording: ``before`` s of silence, the speech, ``after`` s of silence (48 kHz
    mono; Chromium loops it)."""
    path = folder / f"mic-{before}-{after}.wav"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(speech), "-af",
         f"adelay={int(before * 1000)},apad=pad_dur={after}", "-ar", "48000", "-ac", "1", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


class Publisher(threading.Thread):
    """Sends a reply's sentences to the conversation's group piece by piece (a piece per frame, as the
    session's encoder cuts them: FMP4_OUTPUT), ``pace`` seconds of sending per second of video (1.0: a
    renderer at real time), as the server's render session does (``chat.segment``, which the consumer turns
    into binary frames). Runs in its own thread: Playwright's sync API keeps an event loop in the test's."""

    def __init__(
        self, conversation_id: int, message_id: int, sentences: list[bytes], pace: float, end=True, pause=0.0
    ):
        super().__init__(daemon=True)
        self.group, self.message_id = conversation_group(conversation_id), message_id
        self.sentences, self.gap, self.end = sentences, pace / FPS, end
        self.pause = pause  # seconds between two sentences
        self.sent_at: list[float] = []  # epoch ms, like the page's Date.now()
        self.error: BaseException | None = None

    def run(self):
        try:
            layer = get_channel_layer()
            for index, fmp4 in enumerate(self.sentences):
                pieces = pieces_of(fmp4)
                for seq, data in enumerate(pieces):
                    async_to_sync(layer.group_send)(
                        self.group,
                        {"type": "chat.segment", "message": self.message_id, "index": index, "seq": seq,
                         "last": seq == len(pieces) - 1, "data": data},
                    )  # fmt: skip
                    self.sent_at.append(time.time() * 1000)
                    time.sleep(self.gap)
                time.sleep(self.pause)
            if self.end:
                async_to_sync(layer.group_send)(
                    self.group,
                    {"type": "chat.reply", "message": self.message_id, "status": "done", "error": "",
                     "text": "", "timings": {"llm_first_token": 0.3, "first_frame_rendered": 0.9}},
                )  # fmt: skip
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error


@pytest.fixture
def live_page(asgi_server, tmp_path):
    @contextlib.contextmanager
    def open_page(microphone_wav: Path | None = None, viewport: dict | None = None):
        from playwright.sync_api import sync_playwright

        server = urlparse(asgi_server).netloc
        args = [*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"]
        if microphone_wav is not None:
            args += [
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}",
            ]  # fmt: skip
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                context = browser.new_context(base_url=asgi_server, viewport=viewport)
                context.route(
                    "**/*",
                    lambda route: (
                        route.abort()
                        if urlparse(route.request.url).netloc not in ("", server)
                        else route.continue_()
                    ),
                )
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.errors = []
                page.on("pageerror", lambda error: page.errors.append(str(error)))
                page.frames_sent = []
                page.on(
                    "websocket",
                    lambda socket: socket.on("framesent", lambda payload: page.frames_sent.append(payload)),
                )
                try:
                    yield page
                finally:
                    page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
            finally:
                browser.close()

    return open_page


def send_typed(page, text: str) -> int:
    """Types a turn and sends it; the reply's id, from the page's answer."""
    page.fill("#talk-text", text)
    page.click("#talk-form button[type=submit]")
    page.wait_for_function("window.TalkforgeChat.turns.length === 1")
    turn = page.evaluate("window.TalkforgeChat.turns[0]")
    assert turn["status"] == 202, turn
    return turn["id"]


LIVE = "document.getElementById('avatar-live')"


def test_a_streamed_reply_plays_as_its_pieces_arrive(alice, live_page, make_node):
    make_node()  # the reply's job waits there: this test plays the render session's part
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    sentences = [sentence_fmp4(1.6, 440), sentence_fmp4(1.6, 660)]
    with live_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        assert page.evaluate("window.TalkforgeChat.live !== null"), "no Media Source Extensions here"
        reply_id = send_typed(page, "Hello Ada!")
        publisher = Publisher(conversation.pk, reply_id, sentences, pace=0.6)
        publisher.start()
        page.wait_for_function(f"{LIVE}.currentTime > 0.3")
        playing = page.evaluate(f"({{at: Date.now(), visible: getComputedStyle({LIVE}).visibility}})")
        page.wait_for_function("window.TalkforgeChat.replies.length === 1")
        page.wait_for_function(f"{LIVE}.ended || {LIVE}.currentTime > 3.0")
        publisher.join(30)
        player = page.evaluate(
            f"""(() => {{ const v = {LIVE}, r = window.TalkforgeChat.live.log.replies[0];
                return {{time: v.currentTime, audio: v.webkitAudioDecodedByteCount,
                        ranges: v.buffered.length, end: v.buffered.length ? v.buffered.end(0) : 0,
                        errors: window.TalkforgeChat.live.log.errors, firstPieceAt: r.firstPieceAt,
                        playingAt: r.playingAt, appended: window.TalkforgeChat.live.log.appended,
                        sent: window.TalkforgeChat.sent}}; }})()"""
        )
        # After the reply the stream ends and the avatar's still shows again, not its last frame.
        page.wait_for_function(f"{LIVE}.ended")
        idle = page.evaluate(
            f"""({{live: getComputedStyle({LIVE}).visibility,
                   still: getComputedStyle(document.querySelector('#avatar-view .still')).visibility}})"""
        )
        timings = page.inner_text("#history li:last-child .timings")
        frames = list(page.frames_sent)
        errors = page.errors

    assert publisher.error is None
    pieces = sum(len(pieces_of(s)) for s in sentences)
    assert player["errors"] == [] and errors == []
    assert player["appended"] == pieces
    assert player["audio"] > 0  # the AAC track was decoded, not only the picture
    # Playback began while the stream was still arriving, not after the last piece.
    assert player["playingAt"] < publisher.sent_at[-1] - 500
    assert playing["at"] < publisher.sent_at[-1] and playing["visible"] == "visible"
    # Both sentences on one timeline, back to back, and played through.
    assert player["ranges"] == 1 and player["end"] == pytest.approx(3.2, abs=0.15)
    assert player["time"] > 3.0
    played = [m for m in player["sent"] if m["action"] == "played"]
    assert [(m["message"], m["index"]) for m in played] == [(reply_id, 0)]
    assert any('"action": "played"' in f or '"action":"played"' in f for f in frames)
    stored = Message.objects.get(pk=reply_id).timings["first_frame_played"]
    assert stored == pytest.approx(played[0]["speech_end_to_played"], abs=0.001) and 0 < stored < 30
    assert idle == {"live": "hidden", "still": "visible"}
    assert "first frame played" in timings and "first frame rendered 0.90 s" in timings


def test_between_sentences_the_still_shows_and_the_next_one_follows(alice, live_page, make_node):
    make_node()
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    sentences = [sentence_fmp4(1.0, 440), sentence_fmp4(1.0, 660)]
    with live_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        reply_id = send_typed(page, "Hello Ada!")
        # What the avatar box shows, every 50 ms: the stream's time, whether the stream or the still is seen.
        page.evaluate(
            f"""(() => {{ window.__seen = []; setInterval(() => window.__seen.push([{LIVE}.currentTime,
                getComputedStyle({LIVE}).visibility,
                getComputedStyle(document.querySelector('#avatar-view .still')).visibility]), 50); }})()"""
        )
        # The second sentence comes 2.5 s after the first (its render is slow): a gap in the stream.
        publisher = Publisher(conversation.pk, reply_id, sentences, pace=0.25, pause=2.5)
        publisher.start()
        page.wait_for_function(f"{LIVE}.ended", timeout=30_000)
        seen = page.evaluate("window.__seen")
        publisher.join(30)
        errors = page.errors

    assert publisher.error is None and errors == []
    gap = [visible for time_, visible, still in seen if 0.9 < time_ < 1.1 and still == "visible"]
    assert gap.count("hidden") >= 10, seen  # ≥ 0.5 s of the gap showed the still, not a frozen frame
    assert any(visible == "visible" and time_ > 1.3 for time_, visible, _ in seen)  # then the next sentence
    assert max(time_ for time_, _, _ in seen) == pytest.approx(2.0, abs=0.1)


def test_without_media_source_extensions_the_reply_is_heard_as_audio(alice, live_page, make_node):
    make_node()
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    sentence = sentence_fmp4(1.0, 440)

    def speak(reply_id: int) -> None:
        """The server's part: two spoken sentences (their WAVs and rows), then the stream."""
        try:
            spoken(reply_id)
        finally:
            connection.close()  # this thread's own database connection

    def spoken(reply_id: int) -> None:
        reply = Message.objects.get(pk=reply_id)
        layer = get_channel_layer()
        group = conversation_group(conversation.pk)
        async_to_sync(layer.group_send)(group, {"type": "chat.video", "message": reply_id, "on": True})
        for index in range(2):
            relative = f"{conversation.folder}/{reply_id}/chunk-{index}.wav"
            path = Path(settings.MEDIA_ROOT) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:duration=0.8",
                 str(path)], check=True, timeout=60,
            )  # fmt: skip
            chunk = Chunk.objects.create(
                message=reply, index=index, text="Hi.", audio=relative, audio_seconds=0.8
            )
            async_to_sync(layer.group_send)(
                group, {"type": "chat.chunk", "message": reply_id, "index": index, "text": "Hi.",
                        "chunk": chunk.pk, "audio_seconds": 0.8, "voice_engine": "espeak-ng",
                        "voice_note": "", "ready": 0.5},
            )  # fmt: skip
        Publisher(conversation.pk, reply_id, [sentence], pace=0.25).run()

    with live_page() as page:
        page.add_init_script("delete window.MediaSource; delete window.ManagedMediaSource;")
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        reply_id = send_typed(page, "Hello Ada!")
        server = threading.Thread(target=speak, args=(reply_id,), daemon=True)
        server.start()
        page.wait_for_function("window.TalkforgeChat.scheduled.length === 2", timeout=30_000)
        page.wait_for_function("window.TalkforgeChat.replies.length === 1")
        chat = page.evaluate("({live: window.TalkforgeChat.live, scheduled: window.TalkforgeChat.scheduled})")
        server.join(30)
        errors = page.errors

    assert errors == []
    assert chat["live"] is None  # no player without MSE
    assert [s["index"] for s in chat["scheduled"]] == [0, 1]


def duration(path: Path) -> float:
    return float(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip


@pytest.mark.parametrize("early", ["250", "0"], ids=["early-handover", "at-the-end-only"])
def test_hands_free_sends_a_turn_when_the_person_stops_speaking(
    alice, live_page, make_node, speech_wav, tmp_path, settings, early
):
    make_node()
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    microphone = mic_wav(tmp_path, speech_wav, before=0.5, after=3.0)
    with live_page(microphone) as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        # CHAT_EARLY_TURN_MS as the page has it (the server in this test runs with the default, 250).
        assert page.get_attribute("#talk", "data-early-turn-ms") == "250"
        page.evaluate(f"document.getElementById('talk').dataset.earlyTurnMs = '{early}'")
        posted = []
        page.on("request", lambda request: posted.append(request.post_data_buffer or b""))
        page.click("#talk-hands-free")  # the mode is chosen once; no click sends the turn
        page.wait_for_function("window.TalkforgeChat.turns.length >= 1", timeout=30_000)
        page.wait_for_function("window.TalkforgeChat.listener.turns >= 1")
        chat = page.evaluate(
            """({turns: window.TalkforgeChat.turns, sent: window.TalkforgeChat.sent,
                 vad: window.TalkforgeChat.listener})"""
        )
        pressed = page.get_attribute("#talk-hands-free", "aria-pressed")
        record_disabled = page.is_disabled("#talk-record")
        errors = page.errors

    assert errors == []
    assert chat["turns"][0]["status"] == 202 and len(chat["turns"]) == 1
    # Handed over at the first 250 ms of quiet (nothing withdrawn), or, with 0, only at the turn's end.
    assert chat["vad"]["early"] == (1 if early == "250" else 0) and chat["vad"]["turns"] == 1
    assert [m["action"] for m in chat["sent"]][:1] == ["warm_up"]
    assert "withdraw" not in [m["action"] for m in chat["sent"]]
    assert pressed == "true" and record_disabled
    spoken = Message.objects.filter(conversation=conversation, role="user").first()
    assert spoken.audio.endswith("input.wav")
    seconds = duration(Path(settings.MEDIA_ROOT) / spoken.audio)
    speech = duration(speech_wav)
    # The turn holds the speech (with the pre-roll and the hangover), not the whole looping recording.
    assert speech * 0.8 < seconds < speech + 1.5
    # The page sent 16 kHz mono WAV, which the server stored as it came (no conversion).
    stored = (Path(settings.MEDIA_ROOT) / spoken.audio).read_bytes()
    with wave.open(io.BytesIO(stored)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (16000, 1, 2)
    assert any(stored in body for body in posted)


def test_speaking_over_the_avatar_silences_it_and_stops_the_reply(
    alice, live_page, make_node, speech_wav, tmp_path
):
    make_node()
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    long_sentence = sentence_fmp4(8.0, 440)
    microphone = mic_wav(tmp_path, speech_wav, before=4.0, after=4.0)
    with live_page(microphone) as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        page.click("#talk-hands-free")  # the microphone's recording starts now: 4 s of silence first
        reply_id = send_typed(page, "Tell me a long story.")
        publisher = Publisher(conversation.pk, reply_id, [long_sentence], pace=1.0, end=False)
        publisher.start()
        page.wait_for_function("window.TalkforgeChat.bargeIns.length === 1", timeout=30_000)
        barge = page.evaluate(
            f"""(() => ({{record: window.TalkforgeChat.bargeIns[0], paused: {LIVE}.paused,
                          muted: {LIVE}.muted, time: {LIVE}.currentTime,
                          sent: window.TalkforgeChat.sent}}))()"""
        )
        page.wait_for_timeout(1000)
        later = page.evaluate(f"({{time: {LIVE}.currentTime, paused: {LIVE}.paused}})")
        # What the person said over the avatar is the next turn, sent when they stop speaking.
        page.wait_for_function("window.TalkforgeChat.turns.length === 2", timeout=30_000)
        next_turn = page.evaluate("window.TalkforgeChat.turns[1]")
        publisher.join(30)
        errors = page.errors

    record = barge["record"]
    assert errors == []
    assert record["was_playing"], "the barge-in came before the avatar spoke: the test proves nothing"
    assert barge["paused"] and barge["muted"]
    assert later["paused"] and later["time"] == barge["time"]  # the pieces still arriving are not played
    # Speech start → silent, measured in the page (bench/barge_in.py measures its median).
    assert 0 < record["ms"] < 1000, record
    barge_ins = [m for m in barge["sent"] if m["action"] == "barge_in"]
    assert [m["message"] for m in barge_ins] == [reply_id]
    assert Job.objects.get(pk=Message.objects.get(pk=reply_id).job_id).status == Job.Status.CANCELED
    assert next_turn["status"] == 202 and next_turn["id"] != reply_id
    assert Message.objects.filter(conversation=conversation, role="user").exclude(audio="").count() == 1


def test_the_conversation_fits_a_phone(alice, live_page):
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    Message.objects.create(conversation=conversation, role="user", text="A rather long question " * 12)
    Message.objects.create(
        conversation=conversation, role="assistant", status="failed", error="The LLM refused the key.",
        text="Averyveryverylongwordwithoutanyspacesthatmustwrapinsidethebubble" * 3,
        timings={"llm_first_token": 0.4, "first_sentence": 0.8, "whole_reply": 2.5},
    )  # fmt: skip
    with live_page(viewport=PHONE) as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        widths = page.evaluate(WIDTHS)
        stop_opacity = page.eval_on_selector("#talk-stop", "e => Number(getComputedStyle(e).opacity)")
        sides = page.evaluate(
            """[...document.querySelectorAll('#history .bubble')].map(b => {
                 const r = b.getBoundingClientRect(); return [r.left, r.right]; })"""
        )
        badge = page.inner_text("#history li:last-child .badge")
        turn_colour = page.eval_on_selector("#history li:last-child .text", "e => getComputedStyle(e).color")
        body_colour = page.evaluate("getComputedStyle(document.body).color")
        page.keyboard.press("Tab")
        focused = []
        for _ in range(40):  # the talk controls are reached by the keyboard
            focused.append(page.evaluate("document.activeElement.id"))
            page.keyboard.press("Tab")
        errors = page.errors

    assert widths["scroll"] <= widths["inner"] and widths["wide"] == [], widths
    assert stop_opacity < 0.6  # a disabled Stop looks disabled
    (user_left, user_right), (reply_left, reply_right) = sides
    assert user_left > reply_left and user_right > reply_right  # the person's on the right, the avatar's left
    assert badge == "failed" and turn_colour == body_colour  # status as a label, not by colouring the text
    assert {"talk-text", "talk-record", "talk-hands-free"} <= set(focused)
    assert errors == []


def test_a_turn_sent_at_a_pause_is_taken_back_when_the_person_goes_on(alice, live_page, make_node, tmp_path):
    """Hands-free sends the turn at the first 250 ms of quiet (EARLY_MS) so its answer starts while the VAD
    waits out END_MS; speech again before then withdraws it, and the whole utterance is the next turn."""
    make_node()  # the replies' jobs wait there: no worker answers them
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(first), "Tell me about the weather"], check=True)
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(second), "in Paris tomorrow"], check=True)
    microphone = tmp_path / "mic-pause.wav"
    # espeak-ng ends each utterance with 0.3 s of silence: with 0.08 s more, a pause of ~0.38 s, between
    # EARLY_MS (250) and END_MS (500); then 4 s of quiet.
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(first), "-i", str(second),
         "-filter_complex",
         "[0:a]adelay=500,apad=pad_dur=0.08[a];[1:a]apad=pad_dur=4[b];[a][b]concat=n=2:v=0:a=1",
         "-ar", "48000", "-ac", "1", str(microphone)],
        check=True, timeout=60,
    )  # fmt: skip
    with live_page(microphone) as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        page.click("#talk-hands-free")
        page.wait_for_function(
            "window.TalkforgeChat.withdrawn.length === 1 && window.TalkforgeChat.turns.length === 2"
            " && window.TalkforgeChat.listener.turns >= 1",
            timeout=30_000,
        )
        chat = page.evaluate(
            """({turns: window.TalkforgeChat.turns, withdrawn: window.TalkforgeChat.withdrawn,
                 sent: window.TalkforgeChat.sent, vad: window.TalkforgeChat.listener,
                 bubbles: Array.from(document.querySelectorAll('#history li.turn-user')).length})"""
        )
        errors = page.errors

    assert errors == []
    first_turn, second_turn = chat["turns"]
    assert first_turn["status"] == 202 and second_turn["status"] == 202, chat["turns"]
    assert chat["withdrawn"] == [first_turn["id"]]
    assert [m["message"] for m in chat["sent"] if m["action"] == "withdraw"] == [first_turn["id"]]
    assert chat["vad"]["early"] == 2 and chat["vad"]["turns"] == 1  # two pauses handed over, one turn ended
    assert chat["bubbles"] == 1  # the withdrawn turn's bubble is gone
    withdrawn = Message.objects.get(pk=first_turn["id"])
    assert withdrawn.withdrawn and withdrawn.job.status == Job.Status.CANCELED
    turns = list(Message.objects.filter(conversation=conversation, role="user").order_by("pk"))
    assert [turn.withdrawn for turn in turns] == [True, False]
    # The turn that stands holds both parts and the pause; the withdrawn one only the first part.
    speech = duration(first) + duration(second)
    assert duration(Path(settings.MEDIA_ROOT) / turns[0].audio) < duration(first) + 0.4
    assert speech < duration(Path(settings.MEDIA_ROOT) / turns[1].audio) < speech + 1.0
