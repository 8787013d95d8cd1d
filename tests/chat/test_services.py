"""Voices (validated recordings with consent), conversations (ownership, write-only encrypted API key) and
what the LLM is sent."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from avatars.models import Avatar
from chat import selectors, services
from chat.models import Conversation, Message, Voice
from core.errors import ServiceError


def make_avatar(owner, name="Ada") -> Avatar:
    return Avatar.objects.create(
        owner=owner, name=name, slug=f"{name.lower()}-{owner.pk}", engine=Avatar.Engine.DEMO,
        status=Avatar.Status.TRAINED, video="avatars/x/x.mp4", consent_given_at=timezone.now(),
        consent_given_by=owner, consent_statement="ok",
    )  # fmt: skip


def tone(path: Path, seconds: float, *args: str) -> Path:
    """A real recording: a spoken-pitch sine tone, encoded by ffmpeg with ``args``."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi",
         "-i", f"sine=frequency=220:duration={seconds}", *args, str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def make_voice(owner, name: str, recordings: dict[str, Path]) -> Voice:
    return services.voice_create(owner=owner, name=name, recording=upload(recordings["m4a"]), consent=True)


def upload(path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes())


@pytest.fixture
def recordings(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    return {
        "m4a": tone(folder / "voice.m4a", 5, "-ac", "2", "-ar", "44100", "-c:a", "aac"),
        "short": tone(folder / "short.wav", 1),
        "long": tone(folder / "long.ogg", 8, "-c:a", "libvorbis"),
    }


def voices_folder() -> Path:
    return Path(settings.MEDIA_ROOT) / "voices"


def test_a_voice_is_stored_as_22khz_mono_wav_with_consent(alice, recordings):
    voice = services.voice_create(
        owner=alice, name="Grace", recording=upload(recordings["m4a"]), consent=True
    )
    path = Path(settings.MEDIA_ROOT) / voice.reference
    with wave.open(str(path), "rb") as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (22050, 1, 2)
        assert audio.getnframes() / 22050 == pytest.approx(5, abs=0.1)
    assert voice.reference == f"voices/{voice.slug}/reference.wav"
    assert voice.reference_info["source_codec"] == "aac"
    assert voice.reference_info["source_channels"] == 2
    assert voice.consent_given_by == alice
    assert voice.consent_statement == services.VOICE_CONSENT_STATEMENT
    assert voice.consent_given_at is not None
    assert sorted(p.name for p in path.parent.iterdir()) == ["reference.wav"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("short", "1.0 s long; a voice needs at least 3 s"),
        ("long", "8 s long; the limit is 6 s"),
        ("text", "could not be read as audio"),
        ("silent-video", "has no audio stream"),
    ],
)
def test_a_bad_recording_is_refused_and_leaves_nothing(alice, recordings, tmp_path, settings, kind, message):
    settings.CHAT_VOICE_MAX_SECONDS = 6
    if kind == "text":
        path = tmp_path / "notes.wav"
        path.write_text("not audio at all")
    elif kind == "silent-video":
        path = tmp_path / "silent.mp4"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=4",
             "-c:v", "libx264", str(path)],
            check=True, timeout=60,
        )  # fmt: skip
    else:
        path = recordings[kind]
    before = set(voices_folder().iterdir()) if voices_folder().exists() else set()
    with pytest.raises(ServiceError, match=message):
        services.voice_create(owner=alice, name="Grace", recording=upload(path), consent=True)
    assert not Voice.objects.exists()
    after = set(voices_folder().iterdir()) if voices_folder().exists() else set()
    assert after == before


def test_a_voice_needs_consent_a_name_a_known_language_and_a_new_name(alice, recordings):
    with pytest.raises(ServiceError, match="agreed to have their voice cloned"):
        services.voice_create(owner=alice, name="Grace", recording=upload(recordings["m4a"]), consent=False)
    with pytest.raises(ServiceError, match="Unknown language 'xx'"):
        services.voice_create(
            owner=alice, name="Grace", recording=upload(recordings["m4a"]), consent=True, language="xx"
        )
    make_voice(alice, "Grace", recordings)
    with pytest.raises(ServiceError, match="already have a voice named 'Grace'"):
        make_voice(alice, "Grace", recordings)
    assert Voice.objects.count() == 1


def test_voices_and_conversations_are_seen_only_by_their_owner(alice, bob, recordings):
    voice = services.voice_create(
        owner=alice, name="Grace", recording=upload(recordings["m4a"]), consent=True
    )
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), voice=voice)
    Message.objects.create(conversation=conversation, role=Message.Role.USER, text="hi")
    assert list(selectors.voices_visible_to(alice)) == [voice]
    assert list(selectors.conversations_visible_to(alice)) == [conversation]
    assert selectors.messages_visible_to(alice).count() == 1
    assert not selectors.voices_visible_to(bob).exists()
    assert not selectors.conversations_visible_to(bob).exists()
    assert not selectors.messages_visible_to(bob).exists()
    assert not selectors.chunks_visible_to(bob).exists()


def test_a_conversation_takes_only_the_owners_avatar_and_voice(alice, bob, recordings):
    bobs_voice = services.voice_create(
        owner=bob, name="Bob", recording=upload(recordings["m4a"]), consent=True
    )
    bobs_avatar = make_avatar(bob, "Bobby")
    with pytest.raises(ServiceError, match=f"You have no avatar with id {bobs_avatar.pk}"):
        services.conversation_create(owner=alice, avatar=bobs_avatar)
    with pytest.raises(ServiceError, match=f"You have no voice with id {bobs_voice.pk}"):
        services.conversation_create(owner=alice, avatar=make_avatar(alice), voice=bobs_voice.pk)
    with pytest.raises(ServiceError, match="Unknown language"):
        services.conversation_create(owner=alice, avatar=make_avatar(alice, "Ann"), language="klingon")
    assert not Conversation.objects.exists()
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice, "Eve"))
    assert conversation.voice is None  # the offline voice
    with pytest.raises(ServiceError, match="no voice with id"):
        services.conversation_update(conversation=conversation, voice=bobs_voice)


def test_the_api_key_is_stored_encrypted_and_write_only(alice, settings):
    settings.CHAT_LLM_API_KEY = "sk-platform"
    settings.CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS = True
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), llm_api_key="sk-alice-own-key", llm_model="glm-4-plus",
        llm_base_url="https://llm.example.com/v1/", system_prompt="Be brief.",
    )  # fmt: skip
    stored = Conversation.objects.get(pk=conversation.pk)
    assert "sk-alice-own-key" not in stored.llm_api_key_encrypted
    assert stored.has_own_api_key
    config = services.conversation_llm_config(stored)
    assert (config.api_key, config.model, config.base_url) == (
        "sk-alice-own-key", "glm-4-plus", "https://llm.example.com/v1/",
    )  # fmt: skip
    assert config.key_source == "the conversation's API key"

    services.conversation_update(conversation=stored, title="Chat")  # the key is untouched
    assert services.conversation_llm_config(stored).api_key == "sk-alice-own-key"
    # The platform's key never goes to the conversation's own endpoint: the key goes only with the URL.
    with pytest.raises(ServiceError, match="needs its own API key"):
        services.conversation_update(conversation=stored, llm_api_key="")
    services.conversation_update(conversation=stored, llm_api_key="", llm_model="", llm_base_url="")
    config = services.conversation_llm_config(Conversation.objects.get(pk=conversation.pk))
    assert (config.api_key, config.model, config.key_source) == (
        "sk-platform", settings.CHAT_LLM_MODEL, "the platform's API key with the administrator")  # fmt: skip
    with pytest.raises(ServiceError, match="must start with http"):
        services.conversation_update(conversation=stored, llm_base_url="file:///etc/passwd")


def test_deleting_a_voice_falls_back_to_the_offline_voice(alice, recordings):
    voice = services.voice_create(
        owner=alice, name="Grace", recording=upload(recordings["m4a"]), consent=True
    )
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice), voice=voice)
    folder = Path(settings.MEDIA_ROOT) / voice.folder
    services.voice_delete(voice=voice)
    assert not folder.exists()
    conversation.refresh_from_db()
    assert conversation.voice is None


def test_the_prompt_is_the_system_prompt_and_the_newest_finished_turns(alice):
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), system_prompt="You are Ada, a friendly avatar."
    )
    for index in range(6):
        role = Message.Role.USER if index % 2 == 0 else Message.Role.ASSISTANT
        Message.objects.create(conversation=conversation, role=role, text=f"turn {index} " * 8)
    Message.objects.create(conversation=conversation, role="assistant", text="boom", status="failed")
    Message.objects.create(conversation=conversation, role="assistant", text="", status="running")
    prompt = services.conversation_prompt(conversation, budget_tokens=10_000)
    assert prompt[0] == {"role": "system", "content": "You are Ada, a friendly avatar."}
    assert [m["content"] for m in prompt[1:]] == [f"turn {i} " * 8 for i in range(6)]
    short = services.conversation_prompt(conversation, budget_tokens=40)
    assert short[0]["role"] == "system"
    assert [m["content"] for m in short[1:]] == [f"turn {i} " * 8 for i in (4, 5)]
