"""Text to speech for video generation: which voices a person may choose, and speaking in one.

The default voice is ``offline``: espeak-ng (core/espeak.py), robotic but local and always there. Other
apps offer more voices through a registry: chat owns people's cloned voices and XTTS (chat/tts.py) and
registers them from ``ChatConfig.ready()`` (chat/speakers.py) — videos sits below chat and never imports
it (tests/test_layers.py). A choice is stored on the video as ``<prefix>:<id>`` (``voice:12``); every use
resolves it through the owner's own voices, so another person's voice is "no such voice", never used.

Where each runs: ``voice_check`` in the web request that creates the video; ``speak`` in the worker that
runs the video's job, as its first step (videos/job_kind.py ``speak_text``), so a cloned voice is spoken
by the XTTS model that worker process loaded once and the web tier never loads one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import ServiceError
from core.espeak import EspeakError, espeak_speak

OFFLINE = "offline"
OFFLINE_LABEL = "Standard synthetic voice (espeak-ng)"


@dataclass(frozen=True)
class Speakers:
    """A family of voices another app offers for videos.

    ``choices(owner)``: ``(value, label)`` of the voices ``owner`` may choose, values ``<prefix>:<id>``.
    ``speak(owner=, value=, text=, target=)``: speak ``text`` into the WAV ``target`` in that voice and
    return who spoke, in words for the video's page; ServiceError when the voice is not the owner's."""

    prefix: str
    choices: Callable[..., list[tuple[str, str]]]
    speak: Callable[..., str]


_SPEAKERS: dict[str, Speakers] = {}


def register_speakers(speakers: Speakers) -> None:
    """Apps add their voices from ``AppConfig.ready()`` (as jobs/kinds.py ``register`` adds job kinds)."""
    _SPEAKERS[speakers.prefix] = speakers


def voice_choices(owner) -> list[tuple[str, str]]:
    """The voices ``owner`` may choose for a video from text: the offline voice first (the default)."""
    choices = [(OFFLINE, OFFLINE_LABEL)]
    for speakers in _SPEAKERS.values():
        choices += speakers.choices(owner)
    return choices


def _speakers_of(voice: str) -> Speakers | None:
    prefix, sep, _ = voice.partition(":")
    return _SPEAKERS.get(prefix) if sep else None


def voice_check(*, owner, voice: str) -> None:
    """ServiceError unless ``voice`` is one ``owner`` may choose."""
    if voice == OFFLINE:
        return
    if _speakers_of(voice) is None or voice not in dict(voice_choices(owner)):
        raise ServiceError(
            f"No such voice {voice!r}: choose the standard voice or one of your own cloned voices."
        )


def speak(*, owner, text: str, voice: str, target: Path) -> str:
    """Speak ``text`` into the WAV file ``target`` (at the synthesiser's own rate; convert it afterwards)
    in ``voice``, one ``owner`` may choose. Returns who spoke, in words (the video's page shows it)."""
    voice_check(owner=owner, voice=voice)
    if voice != OFFLINE:
        return _speakers_of(voice).speak(owner=owner, value=voice, text=text, target=target)
    try:
        espeak_speak(text, out=target, timeout=300)
    except EspeakError as error:
        raise ServiceError(f"{error} Or upload an audio file instead.") from None
    return OFFLINE_LABEL
