"""A video from text spoken in one of the person's cloned voices (chat's XTTS, offered to videos through
videos/tts.py's registry), never in another person's; espeak-ng stays the default, through the one
wrapper both apps use (core/espeak.py)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from chat.models import Voice
from core.errors import ServiceError
from core.espeak import EspeakError, espeak_speak
from videos import tts
from videos.models import Video
from videos.services import video_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _renderable(alices_things):
    """Alice's avatar can render on its node: the checkpoint and the dataset are both there."""
    from avatars.models import DatasetCopy

    DatasetCopy.objects.create(
        avatar=alices_things["avatar"], node=alices_things["node"], path="/w/data/ada", complete=True
    )


def bobs_voice(bob) -> Voice:
    return Voice.objects.create(
        owner=bob, name="Bob's own", slug=f"bobs-own-{bob.pk}", reference="voices/b/ref.wav",
        consent_given_at=timezone.now(), consent_given_by=bob, consent_statement="ok",
    )  # fmt: skip


def with_reference(voice: Voice) -> Voice:
    """Give the voice a real reference recording in the media store (espeak-ng reading a sentence)."""
    path = Path(settings.MEDIA_ROOT) / voice.reference
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["espeak-ng", "-w", str(path), "This is the reference voice, speaking for a few seconds."],
        check=True, timeout=60,
    )  # fmt: skip
    return voice


def test_espeak_speaks_any_text_once_and_leaves_nothing_when_it_cannot(tmp_path):
    tmp_path = tmp_path / "speech"
    tmp_path.mkdir()
    spoken = espeak_speak("-v xx --help is text, not options.", out=tmp_path / "a.wav")
    with wave.open(str(spoken.path), "rb") as audio:
        assert audio.getnchannels() == 1 and audio.getnframes() / audio.getframerate() == spoken.seconds
    assert spoken.seconds > 1
    with pytest.raises(EspeakError, match="could not speak in language 'xx-nonexistent'"):
        espeak_speak("Hello.", out=tmp_path / "b.wav", language="xx-nonexistent")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # nothing half-written


def test_the_form_offers_the_standard_voice_first_and_only_the_persons_own_voices(client, alices_things, bob):
    theirs = bobs_voice(bob)
    client.force_login(alices_things["avatar"].owner)
    page = client.get(reverse("video-new")).content.decode()
    mine = alices_things["voice"]
    assert f'<option value="voice:{mine.pk}">{mine.name} (your cloned voice)</option>' in page
    assert f"voice:{theirs.pk}" not in page and theirs.name not in page
    assert '<option value="offline" selected>' in page
    assert page.index('value="offline"') < page.index(f'value="voice:{mine.pk}"')


@pytest.mark.parametrize("voice", ["bob", "voice:999999", "voice:abc", "xtts:1", "nobody"])
def test_another_persons_voice_or_none_is_refused_and_nothing_is_made(alices_things, bob, voice):
    alice, avatar = alices_things["avatar"].owner, alices_things["avatar"]
    if voice == "bob":
        voice = f"voice:{bobs_voice(bob).pk}"
    before = Video.objects.count()
    with pytest.raises(ServiceError, match="No such voice"):
        video_create(owner=alice, avatar=avatar, text="Hello there.", voice=voice)
    assert Video.objects.count() == before
    assert not (Path(settings.MEDIA_ROOT) / "videos").exists() or not any(
        (Path(settings.MEDIA_ROOT) / "videos").iterdir()
    )

    api = APIClient()
    api.force_authenticate(alice)
    response = api.post(
        "/api/videos/", {"avatar": avatar.pk, "text": "Hello.", "voice": voice}, format="json"
    )
    assert response.status_code == 400 and "No such voice" in str(response.json())


def test_the_standard_voice_speaks_by_default_and_says_so(alices_things):
    alice, avatar = alices_things["avatar"].owner, alices_things["avatar"]
    video = video_create(owner=alice, avatar=avatar, text="Hello there, this is a test.")
    assert (video.voice, video.spoken_by) == (tts.OFFLINE, tts.OFFLINE_LABEL)
    assert video.audio_duration > 1 and video.job is not None


def test_a_cloned_voice_without_xtts_weights_falls_back_and_says_why(alices_things, settings):
    settings.CHAT_XTTS_DIR = ""
    alice, avatar, voice = alices_things["avatar"].owner, alices_things["avatar"], alices_things["voice"]
    with_reference(voice)
    video = video_create(owner=alice, avatar=avatar, text="Hello there.", voice=f"voice:{voice.pk}")
    assert video.voice == f"voice:{voice.pk}"
    assert video.spoken_by == (
        f"the standard voice instead of {voice.name}'s: voice cloning is not set up on this platform yet"
    )


def test_a_text_video_is_spoken_in_the_persons_cloned_voice_by_xtts(
    alices_things, settings, tmp_path, client
):
    pytest.importorskip("torch")
    pytest.importorskip("TTS")
    from tests.chat.test_tts import build_tiny_xtts

    settings.CHAT_XTTS_DIR = str(build_tiny_xtts(tmp_path / "xtts_v2"))
    settings.CHAT_XTTS_DEVICE = "cpu"
    alice, avatar, voice = alices_things["avatar"].owner, alices_things["avatar"], alices_things["voice"]
    with_reference(voice)
    try:
        video = video_create(owner=alice, avatar=avatar, text="Hello there.", voice=f"voice:{voice.pk}")
    except ServiceError as error:
        # The tiny model's random weights may stop at once: too short a clip is the length check speaking.
        assert "at least" in str(error), error
        pytest.skip(f"the tiny model's clip was too short to check: {error}")
    assert (video.voice, video.spoken_by) == (f"voice:{voice.pk}", f"{voice.name} (cloned voice)")
    assert any(
        Path(voice.reference).parent.name in str(p)
        for p in (Path(settings.MEDIA_ROOT) / "voices").rglob("xtts-latents-*.pt")
    )
    client.force_login(alice)
    page = client.get(reverse("video-detail", args=[video.pk])).content.decode()
    assert f"spoken by {voice.name} (cloned voice)" in page
