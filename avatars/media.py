"""ffprobe and ffmpeg, the one place the platform reads and rewrites media files.

Every call has a time limit and turns ffmpeg's failures into messages a person can act on."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ServiceError

logger = logging.getLogger(__name__)

# Both engines extract frames at 25 fps and align one audio window per frame (docs/engines.md).
ENGINE_FPS = 25


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
    video_codec: str
    audio_codec: str | None

    @property
    def frames_at_engine_fps(self) -> int:
        return int(round(self.duration * ENGINE_FPS))


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


def _fraction(text: str) -> float:
    try:
        numerator, _, denominator = text.partition("/")
        return float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _reason(result: subprocess.CompletedProcess, *paths: Path, last_line: bool = False) -> str:
    """ffmpeg's complaint in words a person can read: the paths on this machine it names (an upload's
    temporary file, the media folder) become "the file"; the whole text goes to the log for the operator."""
    text = result.stderr.decode("utf-8", "replace").strip()
    logger.warning("ffmpeg/ffprobe failed (exit %s): %s", result.returncode, text[-2000:])
    for path in paths:
        text = text.replace(str(path), "the file")
    text = re.sub(r"(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]*", "the file", text)  # any other absolute path
    if last_line:
        return (text.splitlines()[-1:] or ["unknown error"])[0]
    return text[-300:]


def probe(path: Path) -> VideoInfo:
    """What the file holds; ServiceError when it is not a readable video."""
    result = _run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        timeout=60, what="Reading the video",
    )  # fmt: skip
    if result.returncode != 0:
        reason = _reason(result, path, last_line=True)
        raise ServiceError(
            f"The file could not be read as a video ({reason}). Upload an MP4, MOV, MKV or WebM file."
        )
    data = json.loads(result.stdout or b"{}")
    streams = data.get("streams", [])
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic") != 1
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise ServiceError("The file has no video stream. Upload a video of the person speaking.")
    duration = float(data.get("format", {}).get("duration") or video.get("duration") or 0)
    return VideoInfo(
        duration=duration,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=_fraction(video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1"),
        has_audio=audio is not None,
        video_codec=video.get("codec_name", ""),
        audio_codec=audio.get("codec_name") if audio else None,
    )


def normalise(source: Path, target: Path, *, start: float = 0.0, end: float | None = None) -> None:
    """Re-encode to what the engines expect: 25 fps constant frame rate, H.264 + AAC, in an MP4; only the
    part from ``start`` to ``end`` seconds when the person trimmed the clip.

    (The engines extract 16 kHz audio themselves.) Written under a temporary name, then renamed."""
    partial = target.with_name(f".{target.name}.part.mp4")
    trim = ["-ss", f"{start:.3f}"] if start else []
    if end is not None:
        trim += ["-t", f"{end - start:.3f}"]
    command = [
        "ffmpeg", "-nostdin", "-y", "-v", "error", *trim, "-i", str(source),
        "-map", "0:v:0", "-map", "0:a:0", "-r", str(ENGINE_FPS), "-vsync", "cfr",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart", str(partial),
    ]  # fmt: skip
    result = _run(command, timeout=3600, what="Converting the video")
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = _reason(result, source, partial)
        raise ServiceError(f"The video could not be converted to 25 fps H.264 ({reason}).")
    partial.replace(target)


def grab_gray_frame(path: Path, at_seconds: float, height: int = 360) -> np.ndarray | None:
    """One frame near ``at_seconds`` as an 8-bit grayscale array ``height`` pixels high."""
    result = _run(
        ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{at_seconds:.3f}", "-i", str(path), "-frames:v", "1",
         "-vf", f"scale=-2:{height},format=gray", "-f", "rawvideo", "-"],
        timeout=60, what="Reading a frame",
    )  # fmt: skip
    if result.returncode != 0 or not result.stdout:
        return None
    width = len(result.stdout) // height
    if width == 0 or width * height != len(result.stdout):
        return None
    return np.frombuffer(result.stdout, dtype=np.uint8).reshape(height, width)


def audio_levels(path: Path) -> tuple[float, float] | None:
    """(mean, max) volume in dBFS of the first audio stream, or None without audio."""
    result = _run(
        ["ffmpeg", "-nostdin", "-v", "info", "-i", str(path), "-map", "0:a:0", "-af", "volumedetect",
         "-f", "null", "-"],
        timeout=600, what="Measuring the audio",
    )  # fmt: skip
    text = result.stderr.decode("utf-8", "replace")
    mean = re.search(r"mean_volume: (-?[\d.]+|-inf) dB", text)
    peak = re.search(r"max_volume: (-?[\d.]+|-inf) dB", text)
    if not mean or not peak:
        return None
    return float(mean.group(1)), float(peak.group(1))


# --- driving audio (video generation) ------------------------------------------------------------------

ENGINE_SAMPLE_RATE = 16000  # the engines' audio features want mono 16 kHz 16-bit PCM WAV (docs/engines.md)


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    codec: str
    sample_rate: int
    channels: int


def probe_audio(path: Path) -> AudioInfo:
    """What the file's first audio stream is; ServiceError when it is not readable audio."""
    info = pcm_wav_info(path)
    if info is not None:
        return info
    result = _run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        timeout=60, what="Reading the audio",
    )  # fmt: skip
    if result.returncode != 0:
        reason = _reason(result, path, last_line=True)
        raise ServiceError(
            f"The file could not be read as audio ({reason}). Upload a WAV, MP3, M4A, OGG, FLAC or WebM file."
        )
    data = json.loads(result.stdout or b"{}")
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise ServiceError(
            "The file has no audio stream. Upload a recording of the speech: WAV, MP3, M4A, OGG, FLAC or "
            "WebM."
        )
    duration = float(audio.get("duration") or data.get("format", {}).get("duration") or 0)
    if not duration:
        duration = _packet_duration(path)
    return AudioInfo(
        duration=duration,
        codec=audio.get("codec_name", ""),
        sample_rate=int(audio.get("sample_rate") or 0),
        channels=int(audio.get("channels") or 0),
    )


def pcm_wav_info(path: Path) -> AudioInfo | None:
    """What ffprobe would say of a plain 16-bit PCM WAV whose samples are all there, read by Python's
    ``wave`` without starting ffprobe (~50 ms a process here); None for anything else (compressed, float,
    extensible, empty or cut short), which ffprobe then reads. The browser's hands-free turns are such files
    (static/js/voice_activity.js writes 16 kHz mono), and a chat turn waits for this."""
    try:
        with wave.open(str(path), "rb") as audio:
            channels, width, rate = audio.getnchannels(), audio.getsampwidth(), audio.getframerate()
            frames, present = audio.getnframes(), 0
            while chunk := audio.readframes(1 << 16):
                present += len(chunk)
    except (wave.Error, EOFError, OSError):
        return None
    if width != 2 or not rate or not frames or present != frames * channels * width:
        return None
    return AudioInfo(duration=frames / rate, codec="pcm_s16le", sample_rate=rate, channels=channels)


def _packet_duration(path: Path) -> float:
    """How long the first audio stream lasts, from its packets' timestamps: for files whose header does not
    say (a browser's MediaRecorder writes WebM without a duration)."""
    result = _run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time",
         "-print_format", "json", str(path)],
        timeout=120, what="Reading the audio",
    )  # fmt: skip
    if result.returncode != 0:
        return 0.0
    ends = [
        float(packet.get("pts_time") or 0) + float(packet.get("duration_time") or 0)
        for packet in json.loads(result.stdout or b"{}").get("packets", [])
    ]
    return max(ends, default=0.0)


def to_wav(source: Path, target: Path, *, sample_rate: int, max_seconds: float | None = None) -> None:
    """The first audio stream as mono 16-bit PCM WAV at ``sample_rate`` (at most ``max_seconds`` of it),
    written under a temporary name and then renamed, so a failure leaves no half file. A file that is that
    already is copied as it is, a short PCM WAV is converted here (``_resample``), ffmpeg does the rest."""
    partial = target.with_name(f".{target.name}.part.wav")
    info = pcm_wav_info(source) if max_seconds is None else None
    if info is not None and (info.sample_rate, info.channels) == (sample_rate, 1):
        shutil.copyfile(source, partial)
        partial.replace(target)
        return
    short = info is not None and info.duration <= PYTHON_RESAMPLE_SECONDS
    if short and _resample(source, partial, sample_rate):
        partial.replace(target)
        return
    command = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-i", str(source), "-map", "0:a:0", "-vn"]
    if max_seconds is not None:
        command += ["-t", f"{max_seconds:.3f}"]
    command += ["-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(partial)]
    result = _run(command, timeout=600, what="Converting the audio")
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = _reason(result, source, partial)
        raise ServiceError(f"The audio could not be converted to {sample_rate / 1000:g} kHz WAV ({reason}).")
    partial.replace(target)


# A PCM WAV up to this long is mixed down and resampled in this process (scipy's polyphase filter, ~4 ms
# for a 3 s sentence against ~80 ms for starting ffmpeg): every sentence of a chat reply goes from its
# speech's rate (22.05 kHz espeak-ng, 24 kHz XTTS) to the engines' 16 kHz on the way to its render.
# Longer files go to ffmpeg, which streams instead of holding the whole signal in memory.
PYTHON_RESAMPLE_SECONDS = 60.0


def _resample(source: Path, target: Path, sample_rate: int) -> bool:
    """``source`` (a PCM WAV ``pcm_wav_info`` accepted) as mono 16-bit PCM at ``sample_rate`` in ``target``;
    False without scipy (it comes with the ML extra, which the web tier's install leaves out)."""
    try:
        from scipy.signal import resample_poly
    except ImportError:
        return False
    with wave.open(str(source), "rb") as audio:
        channels, rate = audio.getnchannels(), audio.getframerate()
        samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2")
    mono = samples.reshape(-1, channels).astype(np.float32).mean(axis=1)
    if rate != sample_rate:
        common = math.gcd(sample_rate, rate)
        mono = resample_poly(mono, sample_rate // common, rate // common)
    pcm = np.clip(np.round(mono), -32768, 32767).astype("<i2")
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return True


def engine_wav(source: Path, target: Path) -> None:
    """Mono 16 kHz 16-bit PCM WAV, what the engines' audio features need."""
    to_wav(source, target, sample_rate=ENGINE_SAMPLE_RATE)
