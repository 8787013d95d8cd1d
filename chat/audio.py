"""ffprobe and ffmpeg for chat audio: reading what a recording holds and converting it to the WAV the
speech models want. Every call has a time limit and turns failures into messages a person can act on."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from talkforge.errors import ServiceError

# XTTS computes a voice's GPT latents at 22.05 kHz (it resamples anything else to that, and to 16 kHz for
# the speaker embedding): a reference stored at 22.05 kHz mono is read without conversion.
VOICE_SAMPLE_RATE = 22050
# Whisper resamples to 16 kHz mono itself; a user's spoken turn is stored at that rate.
SPEECH_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    codec: str
    sample_rate: int
    channels: int


def _run(command: list[str], *, timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            command, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise ServiceError(
            f"{command[0]} is not installed on the platform: install ffmpeg (make install)."
        ) from None
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{what} took longer than {timeout:.0f} s; the file may be damaged.") from None


def probe_audio(path: Path) -> AudioInfo:
    """The first audio stream of ``path``; ServiceError when there is none or the file is unreadable."""
    result = _run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        timeout=60, what="Reading the recording",
    )  # fmt: skip
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["unknown error"]
        raise ServiceError(
            f"The file could not be read as audio ({reason[0]}). Upload a WAV, MP3, M4A, OGG or WebM file."
        )
    data = json.loads(result.stdout or b"{}")
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise ServiceError("The file has no audio stream. Upload a recording of the voice.")
    duration = float(data.get("format", {}).get("duration") or audio.get("duration") or 0)
    return AudioInfo(
        duration=duration,
        codec=audio.get("codec_name", ""),
        sample_rate=int(audio.get("sample_rate") or 0),
        channels=int(audio.get("channels") or 0),
    )


def to_wav(source: Path, target: Path, *, sample_rate: int, max_seconds: float | None = None) -> None:
    """Convert the first audio stream to mono 16-bit PCM WAV at ``sample_rate``, written under a
    temporary name and then renamed, so a failure leaves no half file."""
    partial = target.with_name(f".{target.name}.part.wav")
    command = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-i", str(source), "-map", "0:a:0", "-vn"]
    if max_seconds is not None:
        command += ["-t", f"{max_seconds:.3f}"]
    command += ["-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", str(partial)]
    result = _run(command, timeout=600, what="Converting the recording")
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = result.stderr.decode("utf-8", "replace").strip()[-300:]
        raise ServiceError(f"The recording could not be converted to WAV ({reason}).")
    partial.replace(target)
