"""Text to speech for video generation: the one place that runs a speech synthesiser.

One voice: ``offline``, espeak-ng (robotic, but local and always there). Cloned voices (XTTS v2) are
chat's: ``chat/tts.py`` speaks a conversation's replies in its voice; video generation does not use them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from core.errors import ServiceError

OFFLINE = "offline"
VOICES = {OFFLINE: "Offline voice (espeak-ng)"}


def speak(*, text: str, voice: str, target: Path) -> None:
    """Speak ``text`` into the WAV file ``target`` (at the synthesiser's own rate; convert it afterwards)."""
    if voice not in VOICES:
        raise ServiceError(f"Unknown voice {voice!r}: choose one of {', '.join(VOICES)}.")
    # The text goes in on stdin, never on the command line: it cannot be read as an option.
    try:
        result = subprocess.run(
            ["espeak-ng", "--stdin", "-w", str(target)],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=300,
            check=False,
        )
    except FileNotFoundError:
        raise ServiceError(
            "espeak-ng is not installed on the platform, so text cannot be spoken: install it (make install) "
            "or upload an audio file instead."
        ) from None
    except subprocess.TimeoutExpired:
        raise ServiceError("Speaking the text took longer than 5 minutes: shorten the text.") from None
    if result.returncode != 0 or not target.exists() or target.stat().st_size <= 44:
        reason = result.stderr.decode("utf-8", "replace").strip()[-300:] or "no audio was written"
        raise ServiceError(f"espeak-ng could not speak the text ({reason}).")
