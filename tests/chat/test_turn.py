"""A whole reply turn with the real parts: a spoken turn through a tiny random Whisper, a loopback LLM that
streams slowly, sentences spoken by a tiny random XTTS (or espeak-ng) into chunks, in order, while the
LLM is still writing; stage timings stored; errors and the stop button end the turn cleanly."""

# ruff: noqa: F811 - pytest fixtures imported from the edge tests are parameters here

from __future__ import annotations

import time
import wave
from pathlib import Path

import pytest
from django.conf import settings

from chat import asr, services, tts
from chat.models import Message, Voice
from chat.turn import reply_run

# Fixtures shared with the edge tests: the tiny models and the loopback LLM.
from tests.chat.test_asr import speech_wav, tiny_whisper  # noqa: F401
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar, tone, upload
from tests.chat.test_tts import tiny_xtts  # noqa: F401

REPLY = ["Hello there, I am Ada", ". Nice to meet", " you! What shall we", " talk about today?"]


@pytest.fixture
def chat_settings(settings, llm_server, tiny_whisper, tiny_xtts, tmp_path):
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{llm_server.server_port}/v1/"
    settings.CHAT_LLM_MODEL = "glm-test"
    settings.CHAT_LLM_API_KEY = "sk-platform"
    settings.CHAT_LLM_TIMEOUT = 5.0
    settings.CHAT_WHISPER_MODEL = str(tiny_whisper)
    settings.CHAT_WHISPER_DEVICE = "cpu"
    settings.CHAT_XTTS_DIR = str(tiny_xtts)
    settings.CHAT_XTTS_DEVICE = "cpu"
    settings.CHAT_SENTENCE_MIN_CHARS = 10
    llm_server.pieces = REPLY
    llm_server.delay = 0.4
    return settings


@pytest.fixture
def voice(alice, tmp_path) -> Voice:
    recording = tone(tmp_path / "voice.wav", 4)
    return services.voice_create(owner=alice, name="Grace", recording=upload(recording), consent=True)


def pending_reply(conversation) -> Message:
    return Message.objects.create(conversation=conversation, role="assistant", status="pending")


def spoken_turn(conversation, wav: Path) -> Message:
    folder = Path(settings.MEDIA_ROOT) / conversation.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.wav").write_bytes(wav.read_bytes())
    return Message.objects.create(
        conversation=conversation, role=Message.Role.USER, audio=f"{conversation.folder}/in.wav"
    )


def test_a_spoken_turn_is_answered_sentence_by_sentence_in_the_cloned_voice(
    alice,
    voice,
    chat_settings,
    llm_server,
    speech_wav,
):
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), voice=voice, language="en", system_prompt="You are Ada."
    )
    user = spoken_turn(conversation, speech_wav)
    reply = Message.objects.create(conversation=conversation, role="assistant", status="pending")
    asr.get_model()  # the models loaded beforehand: their loading time is not what this turn measures
    tts.get_xtts()
    events = []
    llm_server.hold_last_until = lambda: any(event["type"] == "chat.chunk" for _, event in events)

    def publish(event):
        events.append((time.monotonic(), event))

    reply_run(reply=reply, publish=publish)

    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE, reply.error
    assert reply.text == "Hello there, I am Ada. Nice to meet you! What shall we talk about today?"
    chunks = list(reply.chunks.order_by("index"))
    assert [c.text for c in chunks] == [  # a quick first clause (CHAT_FIRST_FRAGMENT_MIN_CHARS)
        "Hello there,", "I am Ada. Nice to meet you!", "What shall we talk about today?",
    ]  # fmt: skip
    for chunk in chunks:
        with wave.open(str(Path(settings.MEDIA_ROOT) / chunk.audio), "rb") as audio:
            assert audio.getframerate() == 24000 and audio.getnframes() > 0
        assert chunk.audio_seconds > 0 and chunk.timings["tts"] >= 0
    assert reply.voice_engine == "xtts" and reply.voice_note == ""
    voice.refresh_from_db()
    assert voice.latents.startswith(f"voices/{voice.slug}/xtts-latents-")  # cached once, recorded
    assert (Path(settings.MEDIA_ROOT) / voice.latents).is_file()

    # The spoken turn was transcribed (noise from a random model, but through Whisper) before the LLM.
    user.refresh_from_db()
    assert user.language == "en" and "asr" in user.timings
    sent = llm_server.requests[0]["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "You are Ada."}
    assert user.text  # words of noise, but words
    assert sent[-1] == {"role": "user", "content": user.text}

    # Streamed: the first chunk was spoken while the LLM was still sending the rest of the reply.
    first_chunk_at = next(at for at, event in events if event["type"] == "chat.chunk")
    assert first_chunk_at < llm_server.sent_at[-1]
    timings = reply.timings
    assert set(timings) >= {"asr", "llm_first_token", "first_sentence", "tts_first_audio", "whole_reply"}
    assert timings["asr"] <= timings["llm_first_token"] <= timings["first_sentence"]
    assert timings["first_sentence"] <= timings["tts_first_audio"] < timings["whole_reply"]
    assert "first_video_chunk" not in timings  # no renderer given: spoken only

    kinds = [event["type"] for _, event in events]
    assert kinds[:3] == ["chat.video", "chat.stage", "chat.transcript"]
    assert kinds.count("chat.token") == len(REPLY)
    assert [event["index"] for _, event in events if event["type"] == "chat.chunk"] == [0, 1, 2]
    assert kinds[-1] == "chat.reply"


def test_without_a_voice_the_offline_voice_speaks_and_says_so(alice, chat_settings):
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice))
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = reply_run(
        reply=Message.objects.create(conversation=conversation, role="assistant", status="pending")
    )
    assert reply.status == Message.Status.DONE
    assert reply.voice_engine == "espeak-ng"
    assert reply.voice_note.startswith("no voice was chosen")
    assert reply.chunks.count() == 3
    assert reply.language == "en"


def test_an_llm_error_fails_the_turn_with_its_message(alice, chat_settings, llm_server):
    llm_server.mode = 429
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice))
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = reply_run(
        reply=Message.objects.create(conversation=conversation, role="assistant", status="pending")
    )
    assert reply.status == Message.Status.FAILED
    assert "rate limiting" in reply.error
    assert not reply.chunks.exists()
    assert "whole_reply" in reply.timings


def test_stop_ends_the_reply_after_the_chunks_already_made(alice, chat_settings, llm_server):
    llm_server.delay = 0.6
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice))
    Message.objects.create(conversation=conversation, role="user", text="Tell me a story.")
    reply = Message.objects.create(conversation=conversation, role="assistant", status="pending")
    started = time.monotonic()
    reply = reply_run(reply=reply, should_stop=lambda: reply.chunks.exists())
    assert reply.status == Message.Status.CANCELED
    assert [c.text for c in reply.chunks.all()] == ["Hello there,"]
    assert reply.text == "Hello there,"
    assert time.monotonic() - started < 0.6 * len(REPLY)  # it did not wait for the whole reply
