"""The web tier installs without the ML extra: with torch, whisper and coqui-tts unimportable, Django
starts, every chat module imports, and the speech edges say what to install instead of crashing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

WITHOUT_ML = """
import importlib.abc, sys

class NoMachineLearning(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchaudio", "whisper", "TTS", "transformers"}:
            raise ImportError(f"No module named {name!r}")

sys.meta_path.insert(0, NoMachineLearning())
import django
django.setup()
from django.core.management import call_command
call_command("check")
import chat.admin, chat.api.views, chat.turn, chat.views
from django.conf import settings
from chat import asr, tts
try:
    asr.get_model()
except asr.ASRError as error:
    print("ASR:", error)
settings.CHAT_XTTS_DIR = sys.argv[1]
try:
    tts.get_xtts()
except tts.TTSError as error:
    print("TTS:", error)
"""


def test_chat_runs_without_the_ml_packages(tmp_path):
    xtts = tmp_path / "xtts"
    xtts.mkdir()
    for name in ("config.json", "model.pth", "vocab.json"):
        (xtts / name).write_text("{}")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "talkforge.settings.test", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_ML, str(xtts)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "ASR: Speech recognition needs the ML packages on this worker" in result.stdout
    assert "TTS: XTTS needs the ML packages on this worker" in result.stdout
