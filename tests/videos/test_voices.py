"""A video from text spoken in one of the person's cloned voices (chat's XTTS, offered to videos through
videos/tts.py's registry), never in another person's; espeak-ng stays the default, through the one
wrapper both apps use (core/espeak.py). The request only checks the text and the voice; the job's worker
speaks it (videos/job_kind.py ``speak_text``), before the node's chain."""

from __future__ import annotations

import dataclasses
import subprocess
import wave
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from chat import tts as chat_tts
from chat.models import Voice
from core.errors import ServiceError
from core.espeak import EspeakError, espeak_speak
from jobs.models import Job
from jobs.runner import run_job
from jobs.selectors import job_log_text
from jobs.stages import stage_label
from videos import tts
from videos.job_kind import SPEAKING
from videos.models import Video
from videos.services import video_create, video_delete

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


def run_in_worker(video: Video) -> Video:
    """What the worker that takes the video's job does (``manage.py worker`` → RQ → ``run_job``), here in
    this process: the speech step, then the node's chain, which fails at once on these tests' fake
    checkpoint (no model files under /x): the speech is what they look at."""
    run_job(video.job_id)
    video.refresh_from_db()
    video.job.refresh_from_db()
    return video


@pytest.fixture
def speech_calls(monkeypatch) -> list[dict]:
    """Every call into the speakers registry (chat's cloned voices) and espeak-ng, wrapped, not replaced:
    which process speaks, and in whose voice."""
    calls: list[dict] = []
    for prefix, speakers in list(tts._SPEAKERS.items()):

        def spy(*, _real=speakers.speak, **kwargs):
            calls.append({"by": "registry", **kwargs})
            return _real(**kwargs)

        monkeypatch.setitem(tts._SPEAKERS, prefix, dataclasses.replace(speakers, speak=spy))
    for module in (tts, chat_tts):  # the two users of core/espeak.py's wrapper

        def espeak_spy(text, *, _real=module.espeak_speak, **kwargs):
            calls.append({"by": "espeak-ng", "text": text})
            return _real(text, **kwargs)

        monkeypatch.setattr(module, "espeak_speak", espeak_spy)
    return calls


@pytest.mark.django_db(transaction=True)
def test_the_request_speaks_nothing_and_the_worker_speaks_in_the_persons_cloned_voice(
    alices_things, settings, speech_calls, redis_db
):
    settings.CHAT_XTTS_DIR = ""  # the worker's XTTS is missing here: the voice's fallback says so
    alice, avatar, voice = alices_things["avatar"].owner, alices_things["avatar"], alices_things["voice"]
    with_reference(voice)
    api = APIClient()
    api.force_authenticate(alice)
    body = {"avatar": avatar.pk, "text": "Hello there, this is my own voice.", "voice": f"voice:{voice.pk}"}
    response = api.post("/api/videos/", body, format="json")
    assert response.status_code == 201, response.json()
    assert speech_calls == []  # the web request made no speech: neither the registry nor espeak-ng
    created = response.json()
    assert (created["voice"], created["spoken_by"], created["audio_duration"]) == (
        f"voice:{voice.pk}",
        "",
        None,
    )
    assert created["status"] == "queued" and "audio" not in created["urls"]
    video = Video.objects.get(pk=created["id"])
    assert video.audio == "" and not (Path(settings.MEDIA_ROOT) / video.folder / "audio.wav").exists()

    video = run_in_worker(video)
    assert [(call["by"], call.get("owner"), call.get("value")) for call in speech_calls] == [
        ("registry", alice, f"voice:{voice.pk}"),
        ("espeak-ng", None, None),  # chat's fallback, through the one espeak-ng wrapper
    ]
    assert video.spoken_by == (
        f"the standard voice instead of {voice.name}'s: voice cloning is not set up on this platform yet"
    )
    wav = Path(settings.MEDIA_ROOT) / video.audio
    assert video.audio == f"{video.folder}/audio.wav" and wav.exists()
    with wave.open(str(wav), "rb") as audio:
        assert (audio.getnchannels(), audio.getframerate()) == (1, 16000)
        assert video.audio_duration == audio.getnframes() / 16000 > 1
    log = job_log_text(video.job)
    assert f"Speaking the text (34 characters) in voice voice:{voice.pk}" in log
    assert f"Spoken by {video.spoken_by}: {video.audio_duration:.2f} s of audio in " in log
    # Then the node's chain ran with that audio (and failed on the fake checkpoint, not on the speech).
    assert log.index("Spoken by") < log.index("step 1/4: poses")
    assert video.job.status == Job.Status.FAILED and "poses step" in video.job.error

    # The API and the page show who spoke.
    shown = api.get(f"/api/videos/{video.pk}/").json()
    assert (
        shown["spoken_by"] == video.spoken_by and shown["urls"]["audio"] == f"/videos/{video.pk}/media/audio/"
    )
    assert stage_label(SPEAKING) == "Speaking the text (in the worker)"  # the job page's words for the step
    page = Client()
    page.force_login(alice)
    html = page.get(reverse("video-detail", args=[video.pk])).content.decode()
    assert "spoken by the standard voice instead of Her voice&#x27;s" in html and "16 kHz WAV" in html


@pytest.mark.django_db(transaction=True)
def test_the_standard_voice_speaks_by_default_in_the_worker_and_says_so(alices_things, redis_db, client):
    alice, avatar = alices_things["avatar"].owner, alices_things["avatar"]
    video = video_create(owner=alice, avatar=avatar, text="Hello there, this is a test.")
    assert (video.voice, video.spoken_by, video.audio_duration) == (tts.OFFLINE, "", None)
    client.force_login(alice)
    page = client.get(reverse("video-detail", args=[video.pk])).content.decode()
    assert "to be spoken in the chosen voice by the job's worker first" in page
    assert "text to speak" in client.get(reverse("video-list")).content.decode()
    video = run_in_worker(video)
    assert video.spoken_by == tts.OFFLINE_LABEL and video.audio_duration > 1


@pytest.mark.django_db(transaction=True)
def test_speech_that_cannot_be_used_fails_the_job_with_a_clear_message(alices_things, settings, redis_db):
    alice, avatar, voice = alices_things["avatar"].owner, alices_things["avatar"], alices_things["voice"]
    # Longer than the limit once spoken: checked on the real speech, in the worker.
    settings.VIDEO_MAX_AUDIO_SECONDS = 1
    video = run_in_worker(video_create(owner=alice, avatar=avatar, text="A sentence that lasts a while."))
    assert video.job.status == Job.Status.FAILED and video.audio == "" and video.audio_duration is None
    assert video.job.error.startswith("The spoken text is 0.0") and "the limit is" in video.job.error
    assert video.error == video.job.error  # the video's page and API show it
    assert not (Path(settings.MEDIA_ROOT) / video.folder / "audio.wav").exists()
    assert "step 1/4" not in job_log_text(video.job)  # no node command ran
    settings.VIDEO_MAX_AUDIO_SECONDS = 600

    # The voice was deleted between the request and the job: no such voice, nothing else is used.
    video = video_create(owner=alice, avatar=avatar, text="Hello there.", voice=f"voice:{voice.pk}")
    voice.delete()
    video = run_in_worker(video)
    assert video.job.status == Job.Status.FAILED and "No such voice" in video.job.error
    assert video.spoken_by == "" and video.audio == ""


@pytest.mark.django_db(transaction=True)
def test_a_text_video_is_spoken_in_the_persons_cloned_voice_by_xtts_in_the_worker(
    alices_things, settings, tmp_path, client, redis_db, speech_calls
):
    pytest.importorskip("torch")
    pytest.importorskip("TTS")
    from tests.chat.test_tts import build_tiny_xtts

    settings.CHAT_XTTS_DIR = str(build_tiny_xtts(tmp_path / "xtts_v2"))
    settings.CHAT_XTTS_DEVICE = "cpu"
    alice, avatar, voice = alices_things["avatar"].owner, alices_things["avatar"], alices_things["voice"]
    with_reference(voice)
    video = video_create(owner=alice, avatar=avatar, text="Hello there.", voice=f"voice:{voice.pk}")
    assert speech_calls == []
    video = run_in_worker(video)
    if "at least" in video.job.error:
        # The tiny model's random weights may stop at once: too short a clip is the length check speaking.
        pytest.skip(f"the tiny model's clip was too short to check: {video.job.error}")
    assert [call["by"] for call in speech_calls] == ["registry"]  # XTTS spoke: no espeak-ng fallback
    assert (video.voice, video.spoken_by) == (f"voice:{voice.pk}", f"{voice.name} (cloned voice)")
    assert video.audio_duration > 0 and (Path(settings.MEDIA_ROOT) / video.audio).exists()
    assert any(
        Path(voice.reference).parent.name in str(p)
        for p in (Path(settings.MEDIA_ROOT) / "voices").rglob("xtts-latents-*.pt")
    )
    client.force_login(alice)
    page = client.get(reverse("video-detail", args=[video.pk])).content.decode()
    assert f"spoken by {voice.name} (cloned voice)" in page


@pytest.mark.django_db(transaction=True)
def test_a_video_deleted_while_its_text_is_spoken_leaves_nothing(
    alices_things, settings, redis_db, monkeypatch
):
    alice, avatar = alices_things["avatar"].owner, alices_things["avatar"]
    video = video_create(owner=alice, avatar=avatar, text="Hello there, this is a test.")
    real_espeak = tts.espeak_speak

    def deleted_meanwhile(text, **kwargs):
        spoken = real_espeak(text, **kwargs)
        video_delete(video=Video.objects.get(pk=video.pk))  # the person deletes it from the page
        return spoken

    monkeypatch.setattr(tts, "espeak_speak", deleted_meanwhile)
    assert run_job(video.job_id) == "canceled"
    assert Job.objects.get(pk=video.job_id).status == Job.Status.CANCELED
    assert not Video.objects.filter(pk=video.pk).exists()
    assert not (Path(settings.MEDIA_ROOT) / video.folder).exists()
