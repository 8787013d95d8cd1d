"""espeak-ng, the platform's one local speech synthesiser: robotic, but always there. Videos from text use
it by default (videos/tts.py) and chat when no cloned voice can speak (chat/tts.py); both call this.

The text goes in on stdin, never on the command line: a text that starts with "-" is still text, and no
length limit of the command line applies. The WAV is written beside its target and moved into place only
when complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

# Our language codes → espeak-ng voices (others are passed as they are: espeak-ng knows most ISO codes).
VOICES = {"zh": "cmn", "en": "en-us", "pt": "pt-br"}


class EspeakError(Exception):
    """espeak-ng could not speak; the message says why in a person's words."""


@dataclass(frozen=True)
class Spoken:
    path: Path  # a mono 16-bit WAV at espeak-ng's own rate
    sample_rate: int
    seconds: float


def espeak_speak(text: str, *, out: Path, language: str = "", timeout: float = 120) -> Spoken:
    """Speak ``text`` into the WAV file ``out``, in ``language`` (an ISO code; "" for espeak-ng's default
    voice)."""
    voice = VOICES.get(language, language)
    partial = out.with_name(f".{out.name}.part")
    argv = ["espeak-ng", "--stdin", "-w", str(partial)] + (["-v", voice] if voice else [])
    try:
        result = subprocess.run(
            argv, input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise EspeakError("espeak-ng is not installed on this machine: install it (make install).") from None
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise EspeakError(f"espeak-ng took longer than {timeout:.0f} s: shorten the text.") from None
    if result.returncode != 0 or not partial.is_file() or partial.stat().st_size <= 44:
        partial.unlink(missing_ok=True)
        reason = result.stderr.decode("utf-8", "replace").strip()[-200:] or "no audio was written"
        where = f" in language {language!r}" if language else ""
        raise EspeakError(f"espeak-ng could not speak{where} ({reason}).")
    partial.replace(out)
    with wave.open(str(out), "rb") as audio:
        rate, frames = audio.getframerate(), audio.getnframes()
    return Spoken(path=out, sample_rate=rate, seconds=frames / rate)
