"""Whisper through our ASR module: a tiny randomly initialised checkpoint, saved by the test and loaded by
``whisper.load_model(path)``; recognition runs end to end on a real recording (its text is noise)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from chat import asr

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    # 80 mel bins and 1500 audio positions are fixed by Whisper's 30 s window; 51865 tokens make it
    # multilingual (language detection runs). The rest is as small as it goes.
    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
        n_vocab=51865, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1,
    )  # fmt: skip
    model = Whisper(dims)
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en", "-w", str(path), "Hello, how are you today?"], check=True, timeout=60
    )
    return path


@pytest.fixture
def whisper_settings(settings, tiny_whisper, tmp_path):
    settings.CHAT_WHISPER_MODEL = str(tiny_whisper)
    settings.CHAT_WHISPER_DOWNLOAD_DIR = str(tmp_path / "whisper-cache")
    settings.CHAT_WHISPER_DEVICE = "cpu"
    return settings


def test_a_recording_is_transcribed_and_the_model_reused(whisper_settings, speech_wav):
    first = asr.transcribe(speech_wav)
    assert isinstance(first.text, str)
    assert first.language in whisper.tokenizer.LANGUAGES  # detected (noise, but one of Whisper's)
    model = asr.get_model()
    assert model.dims.n_text_state == 32  # our checkpoint, through whisper.load_model
    second = asr.transcribe(speech_wav, language="de")
    assert second.language == "de"  # a set language is used as given
    assert asr.get_model() is model  # loaded once, reused


def test_changing_the_setting_loads_the_new_model(whisper_settings, tiny_whisper, tmp_path):
    first = asr.get_model()
    copy = tmp_path / "copy.pt"
    copy.write_bytes(tiny_whisper.read_bytes())
    whisper_settings.CHAT_WHISPER_MODEL = str(copy)
    assert asr.get_model() is not first


def test_an_unknown_model_name_names_the_setting(whisper_settings):
    whisper_settings.CHAT_WHISPER_MODEL = "gigantic"
    with pytest.raises(asr.ASRError, match="CHAT_WHISPER_MODEL='gigantic' is neither a Whisper model size"):
        asr.get_model()


def test_a_damaged_checkpoint_names_the_setting(whisper_settings, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    whisper_settings.CHAT_WHISPER_MODEL = str(broken)
    with pytest.raises(asr.ASRError, match="CHAT_WHISPER_MODEL=.*could not be loaded"):
        asr.get_model()


def test_offline_without_weights_says_where_to_put_them(whisper_settings, monkeypatch, tmp_path):
    # Offline, as a worker without internet is: every download goes through a proxy that nothing serves.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    whisper_settings.CHAT_WHISPER_MODEL = "tiny"
    with pytest.raises(asr.ASRError) as caught:
        asr.get_model()
    message = str(caught.value)
    assert "'tiny' is not in" in message
    assert str(tmp_path / "whisper-cache") in message
    assert "CHAT_WHISPER_MODEL" in message
    assert not any((tmp_path / "whisper-cache").glob("*.pt"))  # no half-downloaded file left behind


def test_an_unreadable_recording_is_explained(whisper_settings, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    with pytest.raises(asr.ASRError, match="could not be read"):
        asr.transcribe(bad)
