"""The speech-recognition edge: openai-whisper, loaded once per worker process and reused.

CHAT_WHISPER_MODEL is a model size that the library downloads on first use (into
CHAT_WHISPER_DOWNLOAD_DIR, by default ~/.cache/whisper) or the path of a local ``.pt`` checkpoint.
Loading takes seconds and hundreds of MB, so the model is kept in this module for the life of the
process; changing the setting (tests do) loads the new one in its place. torch and whisper are imported
here, inside functions, so the web tier runs without them.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings


class ASRError(Exception):
    """Speech recognition cannot run or failed; the message says what to fix."""


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    seconds: float  # how long recognition took (the model load not included)


_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], Any] = {}  # at most one entry: the model of the current settings


def _device() -> str:
    import torch

    return settings.CHAT_WHISPER_DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")


def get_model():
    """The Whisper model named by the settings, loaded on first use and then reused."""
    name = settings.CHAT_WHISPER_MODEL
    download_dir = settings.CHAT_WHISPER_DOWNLOAD_DIR
    try:
        import torch  # noqa: F401
        import whisper  # noqa: F401
    except ImportError:
        raise ASRError(
            "Speech recognition needs the ML packages on this worker: install the project's `ml` extra "
            "(openai-whisper, torch)."
        ) from None
    with _lock:
        device = _device()
        key = (name, download_dir, device)
        if key in _loaded:
            return _loaded[key]
        model = _load(name, download_dir=download_dir, device=device)
        _loaded.clear()  # one model per process: a changed setting replaces it
        _loaded[key] = model
        return model


def _load(name: str, *, download_dir: str, device: str):
    import whisper

    known = whisper.available_models()
    if name not in known and not Path(name).is_file():
        raise ASRError(
            f"CHAT_WHISPER_MODEL={name!r} is neither a Whisper model size ({', '.join(known)}) nor an "
            "existing .pt file: set it to one of those."
        )
    where = download_dir or "~/.cache/whisper"
    try:
        return whisper.load_model(name, device=device, download_root=download_dir or None)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ASRError(
            f"The Whisper model {name!r} is not in {where} and cannot be downloaded ({reason}). On a "
            "machine without internet, copy the model's .pt file there or set CHAT_WHISPER_MODEL to its "
            "path."
        ) from None
    except Exception as exc:  # a damaged or foreign checkpoint: torch raises many kinds
        raise ASRError(
            f"The Whisper model CHAT_WHISPER_MODEL={name!r} could not be loaded ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Point it at a Whisper checkpoint or a model size."
        ) from None


def transcribe(audio_path: Path, *, language: str | None = None) -> Transcript:
    """What is said in ``audio_path`` (any format ffmpeg reads), and its language: the given one, or
    detected by Whisper when ``language`` is None or empty."""
    model = get_model()
    started = time.monotonic()
    try:
        import whisper

        result = whisper.transcribe(
            model,
            str(audio_path),
            language=language or None,
            # One pass, no temperature fallback: a chat turn wants an answer now, not the best of six.
            temperature=0.0,
            condition_on_previous_text=False,
            fp16=next(model.parameters()).is_cuda,
            verbose=None,
        )
    except RuntimeError as exc:
        # whisper.audio.load_audio runs ffmpeg and raises RuntimeError with its stderr.
        raise ASRError(f"The recording could not be read ({str(exc).strip()[-200:]}).") from None
    return Transcript(
        text=result["text"].strip(), language=result["language"], seconds=time.monotonic() - started
    )
