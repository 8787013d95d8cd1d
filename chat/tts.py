"""The speech-synthesis edge: XTTS v2 through coqui-tts, cloning a voice from its reference recording,
or espeak-ng when there are no XTTS weights (or no voice to clone).

CHAT_XTTS_DIR names the folder of an XTTS v2 checkpoint as coqui publishes it (``config.json``,
``model.pth``, ``vocab.json``). The model is loaded once per worker process and reused. A voice's
speaker latents (the GPT conditioning latents and the decoder's speaker embedding) are computed once
from its reference recording and cached in a file beside it; the file name carries a fingerprint of
the model, so other weights never reuse latents computed by different ones. torch and TTS are imported
inside functions: the web tier runs without them.

Every result says which engine spoke, and why espeak-ng did when it did: the page tells the person.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from core.espeak import EspeakError, espeak_speak

ENGINE_XTTS = "xtts"
ENGINE_ESPEAK = "espeak-ng"
XTTS_FILES = ("config.json", "model.pth", "vocab.json")
# XTTS v2's languages; "zh" is written "zh-cn" in its vocabulary and config.
XTTS_LANGUAGES = frozenset(
    {"en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh", "ja", "hu", "ko", "hi"}
)


class TTSError(Exception):
    """Speech could not be synthesised; the message says what to fix."""


@dataclass(frozen=True)
class Speech:
    path: Path  # a mono 16-bit WAV file
    sample_rate: int
    seconds: float  # the audio's duration
    engine: str  # ENGINE_XTTS or ENGINE_ESPEAK
    note: str  # why espeak-ng spoke, when it did ("" for XTTS)
    synthesis_seconds: float


logger = logging.getLogger(__name__)
_logged_missing: set[str] = set()  # each reason XTTS is missing is logged once per process
XTTS_NOT_SET_UP = "voice cloning is not set up on this platform yet"


def xtts_missing() -> str:
    """Why XTTS cannot be used here ("" when it can): the setting is unset or the folder incomplete."""
    folder = settings.CHAT_XTTS_DIR
    if not folder:
        return "CHAT_XTTS_DIR is not set"
    absent = [name for name in XTTS_FILES if not (Path(folder) / name).is_file()]
    if absent:
        return f"CHAT_XTTS_DIR={folder} lacks {', '.join(absent)}"
    return ""


# --- XTTS ------------------------------------------------------------------------------------------

_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], Any] = {}  # at most one entry: the model of the current settings


def _fingerprint(folder: Path) -> str:
    """Identifies the weights cheaply (size and modification time, not a hash of gigabytes)."""
    parts = []
    for name in ("model.pth", "config.json"):
        stat = (folder / name).stat()
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def get_xtts():
    """The XTTS model in CHAT_XTTS_DIR, loaded with coqui-tts's own loader on first use, then reused."""
    missing = xtts_missing()
    if missing:
        raise TTSError(f"XTTS cannot be used: {missing}.")
    folder = Path(settings.CHAT_XTTS_DIR)
    try:
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts
    except ImportError:
        raise TTSError(
            "XTTS needs the ML packages on this worker: install the project's `ml` extra (coqui-tts, torch), "
            "or unset CHAT_XTTS_DIR to speak with espeak-ng."
        ) from None
    with _lock:
        device = settings.CHAT_XTTS_DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (str(folder), _fingerprint(folder), device)
        if key in _loaded:
            return _loaded[key]
        try:
            config = XttsConfig()
            config.load_json(str(folder / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
        except Exception as exc:  # a damaged or mismatched checkpoint: torch and coqui raise many kinds
            raise TTSError(
                f"The XTTS model in CHAT_XTTS_DIR={folder} could not be loaded ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Put an XTTS v2 checkpoint there (config.json, model.pth, vocab.json)."
            ) from None
        model.to(device)
        model.fingerprint = key[1]
        _loaded.clear()  # one model per process: changed weights replace it
        _loaded[key] = model
        return model


def latents_path(voice_folder: Path, model) -> Path:
    return voice_folder / f"xtts-latents-{model.fingerprint}.pt"


def speaker_latents(*, reference: Path, cache: Path):
    """(gpt_cond_latent, speaker_embedding) of the voice in ``reference``: read from ``cache`` when it is
    there, else computed by XTTS and written to ``cache`` (atomically, so a crash leaves no half file)."""
    import torch

    model = get_xtts()
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location=model.device, weights_only=True)
            return saved["gpt_cond_latent"], saved["speaker_embedding"]
        except Exception:  # noqa: S110 - unreadable cache: compute it again below
            pass
    config = model.config
    try:
        gpt_cond_latent, speaker_embedding = model.get_conditioning_latents(
            audio_path=str(reference),
            gpt_cond_len=config.gpt_cond_len,
            gpt_cond_chunk_len=config.gpt_cond_chunk_len,
            max_ref_length=config.max_ref_len,
            sound_norm_refs=config.sound_norm_refs,
        )
    except (RuntimeError, OSError) as exc:
        raise TTSError(f"The voice's reference recording could not be used ({str(exc)[:200]}).") from None
    partial = cache.with_name(f".{cache.name}.{os.getpid()}.part")
    torch.save(
        {"gpt_cond_latent": gpt_cond_latent.cpu(), "speaker_embedding": speaker_embedding.cpu()}, partial
    )
    partial.replace(cache)
    return gpt_cond_latent, speaker_embedding


def _write_wav(path: Path, samples, sample_rate: int) -> None:
    import numpy as np

    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    partial = path.with_name(f".{path.name}.part")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    partial.replace(path)


def _xtts_speak(text: str, *, language: str, reference: Path, voice_folder: Path, out: Path) -> Speech:
    started = time.monotonic()
    model = get_xtts()
    gpt_cond_latent, speaker_embedding = speaker_latents(
        reference=reference, cache=latents_path(voice_folder, model)
    )
    config = model.config
    try:
        result = model.inference(
            text,
            language,
            gpt_cond_latent,
            speaker_embedding,
            temperature=config.temperature,
            length_penalty=config.length_penalty,
            repetition_penalty=config.repetition_penalty,
            top_k=config.top_k,
            top_p=config.top_p,
        )
    except (RuntimeError, AssertionError, KeyError, NotImplementedError) as exc:
        raise TTSError(
            f"XTTS could not speak this sentence ({type(exc).__name__}: {str(exc)[:200]})."
        ) from None
    rate = config.audio.output_sample_rate
    _write_wav(out, result["wav"], rate)
    return Speech(
        path=out,
        sample_rate=rate,
        seconds=len(result["wav"]) / rate,
        engine=ENGINE_XTTS,
        note="",
        synthesis_seconds=time.monotonic() - started,
    )


# --- espeak-ng -------------------------------------------------------------------------------------


def _espeak_speak(text: str, *, language: str, out: Path, note: str) -> Speech:
    started = time.monotonic()
    try:
        spoken = espeak_speak(text, out=out, language=language or "en", timeout=120)
    except EspeakError as error:
        raise TTSError(str(error)) from None
    return Speech(
        path=out,
        sample_rate=spoken.sample_rate,
        seconds=spoken.seconds,
        engine=ENGINE_ESPEAK,
        note=note,
        synthesis_seconds=time.monotonic() - started,
    )


# --- the one entry point ----------------------------------------------------------------------------


def synthesize(
    text: str, *, language: str, out: Path, reference: Path | None = None, voice_folder: Path | None = None
) -> Speech:
    """Speak ``text`` into the WAV file ``out``: with XTTS in the voice of ``reference`` (its latents
    cached in ``voice_folder``) when both the weights and a voice exist, else with espeak-ng."""
    text = text.strip()
    if not text:
        raise TTSError("There is no text to speak.")
    # The note is shown to the person (in their terms); what the operator must fix goes to the log.
    if reference is None:
        return _espeak_speak(
            text, language=language, out=out, note="no voice was chosen for this conversation"
        )
    missing = xtts_missing()
    if missing:
        if missing not in _logged_missing:
            _logged_missing.add(missing)
            logger.warning("Replies are spoken by espeak-ng, not the cloned voice: %s.", missing)
        return _espeak_speak(text, language=language, out=out, note=XTTS_NOT_SET_UP)
    if language not in XTTS_LANGUAGES:
        return _espeak_speak(
            text,
            language=language,
            out=out,
            note=f"the cloned voice does not speak this language ({language})",
        )
    return _xtts_speak(
        text, language=language, reference=reference, voice_folder=voice_folder or reference.parent, out=out
    )
