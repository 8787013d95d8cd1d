"""Talking with an avatar in a real browser (Chromium through Playwright) against a real server and worker:
a typed turn and a recorded one (Chromium's fake microphone plays a speech file) are answered sentence by
sentence; the page shows the text as it arrives and schedules the spoken sentences in order, back to back.
A trained avatar's reply is played as its rendered clips, one after the other, with the voice heard once
(from the clips, none of the sentences as audio besides)."""

# ruff: noqa: F811 - pytest fixtures imported from the other tests are parameters here

from __future__ import annotations

import contextlib
import os
from urllib.parse import urlparse

import pytest

from chat import services
from chat.models import Message
from tests.chat.test_asr import speech_wav, tiny_whisper  # noqa: F401
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar
from tests.talkforge.test_browser import CHROMIUM, CHROMIUM_ARGS, log_in
from tests.videos.test_videos import media, train_demo_avatar  # noqa: F401

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM}"
)

REPLY = ["Hello there, I am Ada", ". Nice to meet", " you! What shall we", " talk about today?"]


@pytest.fixture(autouse=True)
def clip_path(monkeypatch):
    """These pages follow the per-sentence clip path: the server and the worker start with
    LIVE_SESSIONS=false (the live stream is tests/chat/test_live_browser.py's)."""
    monkeypatch.setenv("LIVE_SESSIONS", "false")


@pytest.fixture
def talking_page(asgi_server, make_node, processes, llm_server, tiny_whisper, speech_wav, tmp_path):
    node = make_node()
    llm_server.pieces, llm_server.delay = REPLY, 0.2
    processes.worker(
        node.name, CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/",
        CHAT_WHISPER_MODEL=tiny_whisper, CHAT_WHISPER_DEVICE="cpu", CHAT_XTTS_DIR="",
        CHAT_SENTENCE_MIN_CHARS=10,
    )  # fmt: skip

    @contextlib.contextmanager
    def open_page():
        from playwright.sync_api import sync_playwright

        server = urlparse(asgi_server).netloc
        microphone = [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech_wav}", "--autoplay-policy=no-user-gesture-required",
        ]  # fmt: skip
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *microphone])
            try:
                context = browser.new_context(base_url=asgi_server)
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
                try:
                    yield page
                finally:
                    page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
            finally:
                browser.close()

    return open_page


def assert_back_to_back(scheduled: list[dict]) -> None:
    assert [s["index"] for s in scheduled] == list(range(len(scheduled)))
    for before, after in zip(scheduled, scheduled[1:], strict=False):
        assert after["at"] >= before["at"] + before["duration"] - 1e-6  # never over each other


def test_a_typed_and_a_spoken_turn_are_answered_and_played_in_order(alice, talking_page):
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), language="en")
    with talking_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        page.fill("#talk-text", "Hello Ada!")
        page.click("#talk-form button[type=submit]")
        page.wait_for_function("window.TalkforgeChat.replies.length === 1")
        page.wait_for_function("window.TalkforgeChat.scheduled.length === 3")
        typed = page.evaluate("window.TalkforgeChat")
        history = page.inner_text("#history")

        page.click("#talk-record")
        page.wait_for_timeout(2500)
        page.click("#talk-record")
        page.wait_for_function("window.TalkforgeChat.replies.length === 2")
        spoken = page.evaluate("window.TalkforgeChat")
        errors = page.errors

    assert typed["replies"][0]["status"] == "done"
    assert_back_to_back(typed["scheduled"])
    assert "Hello Ada!" in history and "Hello there, I am Ada. Nice to meet you!" in history
    assert "Spoken by the standard voice: no voice was chosen" in history
    assert typed["events"][:3] == ["video", "stage", "token"]
    assert "Ada has no checkpoint that can render, so replies are only spoken" in history  # said once
    assert history.count("only spoken") == 1
    assert spoken["replies"][1]["status"] == "done", spoken["replies"][1]["error"]
    assert "transcript" in spoken["events"]
    assert_back_to_back(
        spoken["scheduled"][3:] and [dict(s, index=s["index"]) for s in spoken["scheduled"][3:]]
    )
    assert errors == []
    user = Message.objects.filter(conversation=conversation, role="user").order_by("id").last()
    assert user.audio.endswith("input.wav") and user.text


def test_a_rendered_reply_plays_its_clips_in_order_and_the_voice_once(alice, talking_page, media, settings):
    settings.AVATAR_MIN_SECONDS = 2
    settings.QUALITY_SAMPLE_FRAMES = 4
    settings.QUALITY_MIN_FACE_PIXELS = 30
    avatar = train_demo_avatar(alice, media)  # by the page's worker
    conversation = services.conversation_create(owner=alice, avatar=avatar, language="en")
    with talking_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/chat/{conversation.pk}/")
        page.fill("#talk-text", "Hello Ada!")
        page.click("#talk-form button[type=submit]")
        page.wait_for_function("window.TalkforgeChat.replies.length === 1")
        page.wait_for_function(
            "window.TalkforgeChat.clips.filter((clip) => clip.ended !== null || clip.error).length === 3"
        )
        chat = page.evaluate("window.TalkforgeChat")
        history = page.inner_text("#history")
        errors = page.errors

    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert chat["replies"][0]["status"] == "done", chat["replies"][0]["error"]
    clips = chat["clips"]
    assert [clip["index"] for clip in clips] == [0, 1, 2] and [c["error"] for c in clips] == [None] * 3
    for clip, chunk in zip(clips, reply.chunks.order_by("index"), strict=True):
        assert clip["duration"] == pytest.approx(chunk.audio_seconds, abs=0.05)
        assert clip["ended"] - clip["started"] == pytest.approx(chunk.audio_seconds, abs=0.3)
    for before, after in zip(clips, clips[1:], strict=False):
        assert after["started"] >= before["ended"] - 0.05  # one after the other, never over each other
        assert after["started"] - before["ended"] < 0.5  # preloaded: no wait between them
    assert chat["scheduled"] == []  # the voice comes with the clips, not a second time as audio
    assert "video" in chat["events"] and "chunk_video" in chat["events"]
    assert "first clip" in history and "whole reply" in history  # the timings, in words
    assert "first frame played" in history  # measured by the page, stored by the server
    assert errors == []
