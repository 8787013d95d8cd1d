"""avatars/media.py reads plain 16-bit PCM WAV itself (no ffprobe, no ffmpeg when it is already the format
asked for, and converting a short one itself) and leaves everything else to ffprobe and ffmpeg."""

import math
import struct
import subprocess
import wave
from pathlib import Path

import numpy
import pytest

from avatars import media


def write_wav(path: Path, *, rate: int, seconds: float, channels: int = 1) -> Path:
    frames = int(rate * seconds)
    tone = [int(8000 * math.sin(2 * math.pi * 220 * i / rate)) for i in range(frames)]
    samples = [sample for sample in tone for _ in range(channels)]
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(channels)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(struct.pack(f"<{frames * channels}h", *samples))
    return path


@pytest.fixture
def no_processes(monkeypatch):
    def refuse(command, **kwargs):
        raise AssertionError(f"started {command[0]}")

    monkeypatch.setattr(media, "_run", refuse)


def test_a_16_khz_mono_wav_is_read_and_kept_as_it_is(tmp_path, no_processes):
    source = write_wav(tmp_path / "turn.wav", rate=16000, seconds=1.25)
    info = media.probe_audio(source)
    assert (info.duration, info.sample_rate, info.channels, info.codec) == (1.25, 16000, 1, "pcm_s16le")
    media.to_wav(source, tmp_path / "input.wav", sample_rate=16000)
    assert (tmp_path / "input.wav").read_bytes() == source.read_bytes()
    assert not list(tmp_path.glob(".*part*"))


def test_a_short_wav_at_another_rate_is_converted_here_as_ffmpeg_would(tmp_path, monkeypatch):
    """A sentence's speech (22.05 kHz espeak-ng, 48 kHz stereo) becomes 16 kHz mono in this process: the
    same length as ffmpeg's conversion and the same signal."""
    for rate, channels in ((22050, 1), (48000, 2)):
        source = write_wav(tmp_path / f"speech-{rate}.wav", rate=rate, seconds=1.3, channels=channels)
        by_ffmpeg = tmp_path / f"ffmpeg-{rate}.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-ac", "1", "-ar", "16000",
                        "-c:a", "pcm_s16le", str(by_ffmpeg)], check=True)  # fmt: skip
        with monkeypatch.context() as patched:
            patched.setattr(media, "_run", lambda command, **kwargs: pytest.fail(f"started {command[0]}"))
            media.to_wav(source, tmp_path / f"here-{rate}.wav", sample_rate=16000)
        here, theirs = samples(tmp_path / f"here-{rate}.wav"), samples(by_ffmpeg)
        assert len(here) == len(theirs) == round(1.3 * 16000)
        assert numpy.corrcoef(here, theirs)[0, 1] > 0.999


def test_a_long_wav_goes_to_ffmpeg(tmp_path, monkeypatch):
    source = write_wav(tmp_path / "long.wav", rate=22050, seconds=2.0)
    monkeypatch.setattr(media, "PYTHON_RESAMPLE_SECONDS", 1.0)
    started = []
    real_run = media._run
    monkeypatch.setattr(
        media, "_run", lambda command, **kwargs: started.append(command[0]) or real_run(command, **kwargs)
    )
    media.to_wav(source, tmp_path / "input.wav", sample_rate=16000)
    assert started == ["ffmpeg"]
    assert len(samples(tmp_path / "input.wav")) == 32000


def samples(path: Path):
    with wave.open(str(path), "rb") as audio:
        assert (audio.getframerate(), audio.getnchannels()) == (16000, 1)
        return numpy.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2").astype(float)


def test_a_cut_short_float_or_empty_wav_is_left_to_ffprobe_and_ffmpeg(tmp_path):
    whole = write_wav(tmp_path / "whole.wav", rate=16000, seconds=1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:20000])  # the header still says 1 s
    floats = tmp_path / "float.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(whole), "-c:a", "pcm_f32le", str(floats)], check=True)
    empty = write_wav(tmp_path / "empty.wav", rate=16000, seconds=0)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("RIFF but not really")
    assert [media.pcm_wav_info(path) for path in (cut, floats, empty, not_audio)] == [None] * 4

    # ffmpeg converts what it can read: the float file whole, the cut one as far as it goes.
    media.to_wav(floats, tmp_path / "from-float.wav", sample_rate=16000)
    media.to_wav(cut, tmp_path / "from-cut.wav", sample_rate=16000)
    with wave.open(str(tmp_path / "from-float.wav"), "rb") as converted:
        assert (converted.getsampwidth(), converted.getnframes()) == (2, 16000)
    with wave.open(str(tmp_path / "from-cut.wav"), "rb") as converted:
        assert converted.getnframes() < 16000
