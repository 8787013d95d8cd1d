"""The engine images' patch scripts (docker/engines/<engine>/patches/), run on upstream's own lines.

Each test builds a checkout from the upstream files at the pinned commit: the whole files from the local
mirror when there is one, and in any case from the excerpts in tests/fixtures/upstream/ (written from the
mirror by tests/upstream.py), so the tests run on a machine without the mirror too. The script must patch
every anchor, say what it did, change nothing on a second run, and fail loudly (exit 1, naming the file,
the upstream line and the anchor, writing nothing) when an anchor is missing or ambiguous.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests import upstream

ROOT = Path(__file__).resolve().parent.parent.parent
ENGINES = ROOT / "docker" / "engines"
PATCHED_ENGINES = sorted(path.parent.parent.name for path in ENGINES.glob("*/patches/edits.py"))
DEEPSPEECH = "data_utils/deepspeech_features/deepspeech_features.py"
READERS = "scene/talking_dataset_readers.py"


def patches(engine: str):
    """``PATCHES`` of the engine's edits.py: (name, path, ((cites, upstream, fixed), …)), …"""
    spec = importlib.util.spec_from_file_location(
        f"{engine}_edits", ENGINES / engine / "patches" / "edits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PATCHES


def block(lines: tuple[str, ...]) -> str:
    return "".join(f"{line}\n" for line in lines)


def every_edit():
    return [
        pytest.param(engine, path, cites, block(before), block(after), id=cites)
        for engine in PATCHED_ENGINES
        for _, path, edits in patches(engine)
        for cites, before, after in edits
    ]


@pytest.fixture(params=["mirror", "fixtures"])
def source(request, monkeypatch, tmp_path):
    """Upstream from the mirror (whole files), or from the committed excerpts alone."""
    if request.param == "fixtures":
        monkeypatch.setattr(upstream, "MIRROR", tmp_path / "no-mirror")
    elif upstream.mirror_dir("gaussiantalker") is None or upstream.mirror_dir("synctalk") is None:
        pytest.skip(f"no mirror of the upstream repositories at {upstream.MIRROR}")
    return request.param


def checkout(engine: str, folder: Path) -> dict[str, bytes]:
    """The engine's patched files, as upstream has them, under ``folder``; returns their bytes."""
    originals = {}
    for _, path, _ in patches(engine):
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(upstream.upstream_text(engine, path).encode("utf-8"))
        originals[path] = target.read_bytes()
    return originals


def run_patcher(engine: str, folder: Path) -> subprocess.CompletedProcess:
    script = ENGINES / engine / "patches" / "apply_patches.py"
    return subprocess.run(
        [sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=60
    )


def numbered(data: bytes) -> dict[int, str]:
    return dict(enumerate(data.decode("utf-8").splitlines(), start=1))


# --- every anchor is upstream's exact text ----------------------------------------------------------------


@pytest.mark.parametrize("engine, path, cites, before, after", every_edit())
def test_every_anchor_is_upstreams_exact_lines_at_the_cited_place(source, engine, path, cites, before, after):
    cited_path, _, lines = cites.rpartition(":")
    first, _, last = lines.partition("-")
    assert cited_path == path, f"{cites} cites another file than the one it patches"
    text = upstream.upstream_lines(engine, path)
    quoted = [text[number] for number in range(int(first), int(last or first) + 1)]
    assert quoted == before.splitlines(), f"{cites}: the anchor is not upstream's text there"
    assert before != after


def test_the_patch_script_is_the_same_for_every_engine():
    scripts = {
        engine: (ENGINES / engine / "patches" / "apply_patches.py").read_bytes() for engine in PATCHED_ENGINES
    }
    assert len(set(scripts.values())) == 1, "the engines' apply_patches.py copies differ"


# --- on upstream's files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", PATCHED_ENGINES)
def test_patch_script_patches_upstreams_files_and_a_second_run_changes_nothing(source, engine, tmp_path):
    originals = checkout(engine, tmp_path)
    result = run_patcher(engine, tmp_path)
    assert result.returncode == 0, result.stderr  # the old GaussianTalker script exited 1 here
    assert [line.split(" (")[0] for line in result.stdout.splitlines()] == [
        f"patched: {name}" for name, _, _ in patches(engine)
    ]
    for _, path, edits in patches(engine):
        expected = originals[path].decode("utf-8")
        crlf = "\r\n" in expected
        for _, before, after in edits:
            before, after = block(before), block(after)
            if crlf:
                before, after = before.replace("\n", "\r\n"), after.replace("\n", "\r\n")
            assert expected.count(before) == 1
            expected = expected.replace(before, after)
        assert (tmp_path / path).read_bytes() == expected.encode("utf-8"), path  # and nothing else changed

    stamps = {path: (tmp_path / path).stat().st_mtime_ns for path in originals}
    contents = {path: (tmp_path / path).read_bytes() for path in originals}
    again = run_patcher(engine, tmp_path)
    assert again.returncode == 0, again.stderr
    assert [line.split(" (")[0] for line in again.stdout.splitlines()] == [
        f"already applied: {name}" for name, _, _ in patches(engine)
    ]
    assert {path: (tmp_path / path).read_bytes() for path in originals} == contents
    assert {path: (tmp_path / path).stat().st_mtime_ns for path in originals} == stamps  # not even rewritten


def test_gaussiantalker_deepspeech_resampling_no_longer_uses_np_float(source, tmp_path):
    # Upstream deepspeech_features.py at 8ec613b (Windows line ends):
    #   :143        resampled_audio = resampy.resample(
    #   :144            x=audio.astype(np.float),
    #   :148        resampled_audio = audio.astype(np.float32)
    lines = upstream.upstream_lines("gaussiantalker", DEEPSPEECH)
    assert lines[144] == "            x=audio.astype(np.float),"
    assert lines[148] == "        resampled_audio = audio.astype(np.float32)"  # already fine: not an anchor
    originals = checkout("gaussiantalker", tmp_path)
    assert run_patcher("gaussiantalker", tmp_path).returncode == 0
    patched = numbered((tmp_path / DEEPSPEECH).read_bytes())
    assert patched[144].startswith("            x=audio.astype(np.float32),  # Talkforge patch")
    assert patched[148] == lines[148]
    assert (tmp_path / DEEPSPEECH).read_bytes().count(b"\r\n") == originals[DEEPSPEECH].count(b"\r\n")
    assert not re.search(r"\bnp\.float\b(?!\d)", (tmp_path / DEEPSPEECH).read_text())

    def to_16k(numbered_lines):
        # Lines 141-148 are the start of pure_conv_audio_to_deepspeech's body: run them as a function.
        body = "\n".join(numbered_lines[n] for n in range(141, 149))
        namespace = {"np": np, "resampy": SimpleNamespace(resample=lambda x, sr_orig, sr_new: x)}
        exec(f"def to_16k(audio, audio_sample_rate):\n{body}\n    return resampled_audio\n", namespace)
        return namespace["to_16k"]

    audio = np.array([1, -2, 3], dtype=np.int16)
    assert not hasattr(np, "float")  # numpy >= 1.24, as SyncTalk pins and this suite runs
    with pytest.raises(AttributeError, match="float"):
        to_16k(numbered(originals[DEEPSPEECH]))(audio, 44100)  # what upstream does with a 44.1 kHz WAV
    assert to_16k(patched)(audio, 44100).dtype == np.float32
    assert to_16k(patched)(audio, 16000).dtype == np.float32


def test_gaussiantalker_custom_audio_renders_no_more_frames_than_the_audio(source, tmp_path, capsys):
    # Upstream talking_dataset_readers.py at 8ec613b, readCamerasFromTracksTransforms:
    #   :237    if custom_aud:
    #   :238        auds = aud_features
    #   :239    else:    (sic, trailing blanks)
    #   :243    for idx, frame in enumerate(frames): # len(frames): 7272
    # and :374 `    if custom_aud:` again, loading the features: it must not match.
    lines = upstream.upstream_lines("gaussiantalker", READERS)
    assert (lines[237], lines[238], lines[374]) == (
        "    if custom_aud:",
        "        auds = aud_features",
        lines[237],
    )
    assert lines[375].startswith("        aud_features = np.load(")
    checkout("gaussiantalker", tmp_path)
    assert run_patcher("gaussiantalker", tmp_path).returncode == 0
    patched = numbered((tmp_path / READERS).read_bytes())
    assert [patched[n] for n in range(237, 244)] == [
        "    if custom_aud:",
        "        auds = aud_features",
        "        # Talkforge patch (GaussianTalker PR #80): no more frames than the audio has.",
        "        frames = frames[:min(len(frames), aud_features.shape[0])]",
        "        print(f'[INFO] Custom audio mode: limiting render frames to {len(frames)} '",
        "              f'(audio length: {aud_features.shape[0]})')",
        lines[239],
    ]
    assert patched[247] == lines[243]  # the loop, four lines further down
    assert all(patched[n + 4] == lines[n] for n in range(374, 384))  # the other `if custom_aud:` untouched

    # The patched branch (lines 237 to the else branch's torch.stack) run as a function.
    body = textwrap.dedent("\n".join(patched[n] for n in range(237, 246)))
    namespace = {"torch": SimpleNamespace(stack=lambda items, dim: items)}
    exec("def cameras(frames, aud_features, custom_aud=None):\n" + textwrap.indent(body, "    ")
         + "\n    return frames, auds\n", namespace)  # fmt: skip
    audio = np.zeros((3, 29, 16))
    frames, _ = namespace["cameras"]([{"aud_id": i} for i in range(10)], audio, custom_aud="x.npy")
    assert len(frames) == 3
    assert (
        "[INFO] Custom audio mode: limiting render frames to 3 (audio length: 3)" in capsys.readouterr().out
    )
    frames, _ = namespace["cameras"]([{"aud_id": i} for i in range(2)], audio, custom_aud="x.npy")
    assert len(frames) == 2  # a shorter pose sequence is left alone
    frames, auds = namespace["cameras"]([{"aud_id": i} for i in range(10)], audio)
    assert len(frames) == 10 and len(auds) == 10  # training and test sets are not touched


# --- loud failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine, path, cites, before, after", every_edit())
def test_a_missing_anchor_fails_naming_file_line_and_anchor_and_writes_nothing(
    source, engine, path, cites, before, after, tmp_path
):
    checkout(engine, tmp_path)
    target = tmp_path / path
    text = target.read_bytes().decode("utf-8")
    first = before.splitlines()[0]
    assert text.count(first) >= 1
    target.write_bytes(text.replace(first, first.rstrip() + "  # changed upstream", 1).encode("utf-8"))
    before_run = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run_patcher(engine, tmp_path)
    assert result.returncode == 1
    assert f"patch failed: {path}: the anchor of {cites} [" in result.stderr
    assert before.splitlines()[-1].strip() in result.stderr and "occurs 0 times" in result.stderr
    assert {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
    } == before_run  # not one file written


@pytest.mark.parametrize("engine", PATCHED_ENGINES)
def test_an_ambiguous_anchor_or_a_missing_file_fails_too(engine, tmp_path):
    checkout(engine, tmp_path)
    name, path, edits = patches(engine)[-1]
    cites, before, _ = edits[0]
    before = block(before)
    target = tmp_path / path
    text = target.read_bytes().decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    target.write_bytes((text + newline + before.replace("\n", newline)).encode("utf-8"))
    result = run_patcher(engine, tmp_path)
    assert result.returncode == 1 and f"{path}: the anchor of {cites}" in result.stderr
    assert "occurs 2 times, expected exactly once" in result.stderr

    target.unlink()
    missing = run_patcher(engine, tmp_path)
    assert missing.returncode == 1 and f"patch failed: {path}: not found under" in missing.stderr
    usage = subprocess.run(
        [sys.executable, str(ENGINES / engine / "patches" / "apply_patches.py")],
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 2


# --- the excerpts ------------------------------------------------------------------------------------------


def test_committed_excerpts_are_what_the_mirror_holds():
    if any(upstream.mirror_dir(engine) is None for engine in upstream.REPOSITORIES):
        pytest.skip(f"no mirror of the upstream repositories at {upstream.MIRROR}")
    for engine, paths in upstream.EXCERPTS.items():
        for path in paths:
            written = upstream.excerpt_text(engine, path, upstream.mirror_file(engine, path))
            assert upstream.fixture_path(engine, path).read_bytes() == written.encode("utf-8"), path
    committed = {p.relative_to(upstream.FIXTURES) for p in upstream.FIXTURES.rglob("*.txt")}
    listed = {
        upstream.fixture_path(e, p).relative_to(upstream.FIXTURES)
        for e in upstream.EXCERPTS
        for p in upstream.EXCERPTS[e]
    }
    assert committed == listed
