"""Speech synthesis: a tiny randomly initialised XTTS v2 (tokenizer vocabulary built here), saved as coqui
publishes it and loaded by coqui-tts's own loader; voice latents and synthesis run end to end (the audio
is noise). espeak-ng speaks when there are no weights or no voice, and the result says so."""

from __future__ import annotations

import string
import subprocess
import wave
from pathlib import Path

import pytest

from chat import tts

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

XTTS_SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]", "[de]", "[zh-cn]"]


def build_tiny_xtts(folder: Path) -> Path:
    """An XTTS v2 checkpoint folder (config.json, model.pth, vocab.json) with a one-layer, 32-channel GPT
    and random weights. The vocabulary is a character-level BPE model in the `tokenizers` JSON format the
    real vocab.json uses, with the special and language tokens XTTS's tokenizer adds to the text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    folder.mkdir(parents=True, exist_ok=True)
    characters = list(string.ascii_lowercase + string.digits + ".,!?'-:;\"()")
    vocab = {token: index for index, token in enumerate(XTTS_SPECIAL_TOKENS + characters)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(XTTS_SPECIAL_TOKENS)
    tokenizer.save(str(folder / "vocab.json"))

    torch.manual_seed(0)
    args = XttsArgs(
        gpt_layers=1, gpt_n_model_channels=32, gpt_n_heads=2, decoder_input_dim=32,
        # XTTS v2's own choices: the perceiver resampler and masked ground-truth prompts.
        gpt_use_perceiver_resampler=True, gpt_use_masking_gt_prompt_approach=True,
        gpt_max_audio_tokens=20,  # random weights never say stop: keep each sentence under a second
    )  # fmt: skip
    config = XttsConfig(model_args=args, languages=["en", "de", "zh-cn"])
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


@pytest.fixture(scope="module")
def tiny_xtts(tmp_path_factory) -> Path:
    return build_tiny_xtts(tmp_path_factory.mktemp("xtts") / "xtts_v2")


@pytest.fixture(scope="module")
def reference_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("voice") / "reference.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "This is the reference voice, speaking for a few seconds."],
        check=True, timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture
def xtts_settings(settings, tiny_xtts):
    settings.CHAT_XTTS_DIR = str(tiny_xtts)
    settings.CHAT_XTTS_DEVICE = "cpu"
    return settings


def _wav(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path), "rb") as audio:
        return audio.getframerate(), audio.getnchannels(), audio.getnframes()


def test_xtts_clones_the_voice_and_caches_its_latents(xtts_settings, reference_wav, tmp_path):
    voice_folder = tmp_path / "voice"
    voice_folder.mkdir()
    speech = tts.synthesize(
        "Hello there, how are you?", language="en", out=tmp_path / "one.wav",
        reference=reference_wav, voice_folder=voice_folder,
    )  # fmt: skip
    assert speech.engine == tts.ENGINE_XTTS
    assert speech.note == ""
    assert speech.sample_rate == 24000
    rate, channels, frames = _wav(speech.path)
    assert (rate, channels) == (24000, 1)
    assert frames > 0
    assert speech.seconds == pytest.approx(frames / 24000)

    model = tts.get_xtts()
    assert model.gpt.layers == 1  # our tiny checkpoint, through coqui's loader
    cached = list(voice_folder.glob("xtts-latents-*.pt"))
    assert cached == [tts.latents_path(voice_folder, model)]
    saved = torch.load(cached[0], weights_only=True)
    assert saved["gpt_cond_latent"].shape == (1, 32, 32)  # perceiver latents × GPT channels
    assert saved["speaker_embedding"].shape == (1, 512, 1)

    # The second sentence reuses the model and the cached latents (the reference is not read again).
    written = cached[0].stat().st_mtime_ns
    moved = tmp_path / "gone.wav"
    reference_copy = tmp_path / "reference-copy.wav"
    reference_copy.write_bytes(reference_wav.read_bytes())
    reference_copy.rename(moved)  # a reference path that no longer exists
    again = tts.synthesize(
        "Fine, thanks.", language="en", out=tmp_path / "two.wav",
        reference=reference_copy, voice_folder=voice_folder,
    )  # fmt: skip
    assert again.engine == tts.ENGINE_XTTS
    assert tts.get_xtts() is model
    assert cached[0].stat().st_mtime_ns == written


def test_latents_of_other_weights_are_not_reused(xtts_settings, reference_wav, tmp_path):
    voice_folder = tmp_path / "voice"
    voice_folder.mkdir()
    first = tts.speaker_latents(reference=reference_wav, cache=tts.latents_path(voice_folder, tts.get_xtts()))
    assert first[0].shape == (1, 32, 32)
    (Path(xtts_settings.CHAT_XTTS_DIR) / "config.json").touch()  # "new weights": another fingerprint
    assert tts.latents_path(voice_folder, tts.get_xtts()) != next(voice_folder.glob("xtts-latents-*.pt"))


def test_espeak_speaks_without_xtts_weights_and_says_why(
    settings, reference_wav, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(tts, "_logged_missing", set())  # each reason is logged once per process
    settings.CHAT_XTTS_DIR = ""
    speech = tts.synthesize("Hello there.", language="en", out=tmp_path / "e.wav", reference=reference_wav)
    assert speech.engine == tts.ENGINE_ESPEAK
    assert speech.note == "voice cloning is not set up on this platform yet"  # people's words
    assert "CHAT_XTTS_DIR is not set" in caplog.text  # the operator's
    rate, channels, frames = _wav(speech.path)
    assert channels == 1 and rate == speech.sample_rate and frames > rate * 0.3

    settings.CHAT_XTTS_DIR = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    speech = tts.synthesize("Hello.", language="en", out=tmp_path / "f.wav", reference=reference_wav)
    assert speech.note == tts.XTTS_NOT_SET_UP
    assert "lacks config.json, model.pth, vocab.json" in caplog.text


def test_espeak_speaks_chinese_and_text_that_looks_like_an_option(settings, tmp_path):
    settings.CHAT_XTTS_DIR = ""
    speech = tts.synthesize("你好，今天天气很好。", language="zh", out=tmp_path / "zh.wav")
    assert speech.engine == tts.ENGINE_ESPEAK and speech.seconds > 0.5
    assert speech.note == "no voice was chosen for this conversation"
    dash = tts.synthesize("-v xx --help", language="en", out=tmp_path / "dash.wav")
    assert dash.seconds > 0.3


def test_a_language_espeak_does_not_know_is_explained(settings, tmp_path):
    settings.CHAT_XTTS_DIR = ""
    with pytest.raises(tts.TTSError, match="could not speak in language 'xx-nonexistent'"):
        tts.synthesize("Hello.", language="xx-nonexistent", out=tmp_path / "x.wav")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_damaged_checkpoint_names_the_setting(settings, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in tts.XTTS_FILES:
        (folder / name).write_text("{}" if name.endswith(".json") else "not a checkpoint")
    settings.CHAT_XTTS_DIR = str(folder)
    with pytest.raises(tts.TTSError, match="CHAT_XTTS_DIR=.*could not be loaded"):
        tts.get_xtts()
