"""People's cloned voices, offered to video generation (videos/tts.py ``register_speakers``): a video made
from text can be spoken in one of its owner's voices, with XTTS as chat speaks (chat/tts.py), or espeak-ng
with the reason when XTTS cannot speak here."""

from __future__ import annotations

from pathlib import Path

from core import media
from core.errors import ServiceError
from videos.tts import Speakers, register_speakers

from . import tts
from .selectors import voices_visible_to

PREFIX = "voice"


def voice_choices(owner) -> list[tuple[str, str]]:
    return [
        (f"{PREFIX}:{voice.pk}", f"{voice.name} (your cloned voice)")
        for voice in voices_visible_to(owner).order_by("name", "pk")
    ]


def voice_speak(*, owner, value: str, text: str, target: Path) -> str:
    """Speak ``text`` in ``owner``'s voice ``value`` (``voice:<id>``); another person's is no such voice."""
    _, _, key = value.partition(":")
    voice = voices_visible_to(owner).filter(pk=int(key)).first() if key.isdigit() else None
    if voice is None:
        raise ServiceError(f"No such voice {value!r}: choose the standard voice or one of your own voices.")
    reference = media.cached_copy(voice.reference)
    try:
        speech = tts.synthesize(
            text, language=voice.language, out=target, reference=reference, voice_folder=reference.parent
        )
    except tts.TTSError as error:
        raise ServiceError(f"The text could not be spoken in {voice.name}'s voice: {error}") from None
    if speech.engine == tts.ENGINE_XTTS:
        return f"{voice.name} (cloned voice)"
    return f"the standard voice instead of {voice.name}'s: {speech.note}"


def register() -> None:
    register_speakers(Speakers(prefix=PREFIX, choices=voice_choices, speak=voice_speak))
