"""Quality figures (avatars/engines/node/evaluate.py): PSNR/SSIM equal scikit-image's on the prototype's
definition, end to end on real encoded videos and ground-truth folders, with clear errors and the console
contract."""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from avatars.engines.console import parse_bar
from avatars.engines.node import evaluate as evaluate_module
from avatars.engines.node.evaluate import EvaluationError, evaluate, frame_scores, gray, psnr, ssim

SCRIPT = Path(evaluate_module.__file__)
FIRST_ID = 40
SIZE = (96, 64)  # width, height of the small test videos


def bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def variants():
    """(name, ground truth, test frame) pairs of real images: noise, shifts, resampling, odd sizes."""
    rng = np.random.default_rng(1)
    astronaut = bgr(data.astronaut())
    coffee = bgr(data.coffee())[:201, :333]  # odd sizes
    chelsea = bgr(data.chelsea())
    noisy = np.clip(astronaut + rng.normal(0, 9, astronaut.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(coffee, (2, -3), axis=(0, 1))
    resampled = cv2.resize(cv2.resize(chelsea, (150, 100)), chelsea.shape[1::-1])
    saturated = np.where(chelsea > 128, 255, 0).astype(np.uint8)
    tiny = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
    thin = rng.integers(0, 256, (7, 90, 3), dtype=np.uint8)
    return [
        ("noisy", astronaut, noisy),
        ("shifted odd size", coffee, shifted),
        ("resampled", chelsea, resampled),
        ("extremes", saturated, 255 - saturated),
        ("7x7 minimum", tiny, rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)),
        ("7 rows", thin, np.roll(thin, 1, axis=1)),
    ]


@pytest.mark.parametrize(("name", "truth", "test"), variants(), ids=[v[0] for v in variants()])
def test_psnr_and_ssim_equal_scikit_image_within_1e_6(name, truth, test):
    ours_psnr, ours_ssim = frame_scores(truth, test)
    assert ours_psnr == pytest.approx(peak_signal_noise_ratio(truth, test, data_range=255), abs=1e-6)
    expected = structural_similarity(
        cv2.cvtColor(truth, cv2.COLOR_BGR2GRAY), cv2.cvtColor(test, cv2.COLOR_BGR2GRAY), data_range=255
    )
    assert ours_ssim == pytest.approx(expected, abs=1e-6)


def test_a_smooth_image_and_its_shifted_copy_also_agree():
    y, x = np.mgrid[0:120, 0:160]
    reference = ((np.sin(x / 9) + np.cos(y / 13)) * 60 + 128).astype(np.uint8)
    shifted = np.roll(reference, 3, axis=1)
    assert ssim(reference, shifted) == pytest.approx(
        structural_similarity(reference, shifted, data_range=255), abs=1e-6
    )


def test_gray_is_opencvs_bgr_conversion():
    frame = bgr(data.astronaut())
    assert np.array_equal(gray(frame), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))


def test_identical_frames_and_bad_input():
    frame = bgr(data.chelsea())
    assert math.isinf(psnr(frame, frame))
    assert ssim(gray(frame), gray(frame)) == 1.0
    with pytest.raises(ValueError, match="sizes differ"):
        frame_scores(frame, frame[:-1])
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.zeros((5, 9), np.uint8), np.zeros((5, 9), np.uint8))
    with pytest.raises(ValueError, match="8-bit"):
        ssim(np.zeros((9, 9)), np.zeros((9, 9)))


# --- whole videos -----------------------------------------------------------------------------------


def ground_truth_frames(count: int, size=SIZE) -> list[np.ndarray]:
    base = cv2.resize(bgr(data.astronaut()), (size[0] + 16, size[1] + 16), interpolation=cv2.INTER_AREA)
    return [base[k % 9 : k % 9 + size[1], k % 7 : k % 7 + size[0]].copy() for k in range(count)]


def write_dataset(folder: Path, frames: list[np.ndarray], listed: int | None = None) -> list[int]:
    """gt_imgs/<id>.jpg for ``frames`` and a transforms_val.json listing the first ``listed`` of them."""
    (folder / "gt_imgs").mkdir(parents=True, exist_ok=True)
    ids = [FIRST_ID + k for k in range(len(frames))]
    for img_id, frame in zip(ids, frames, strict=True):
        cv2.imwrite(str(folder / "gt_imgs" / f"{img_id}.jpg"), frame)
    listed_ids = ids[: len(frames) if listed is None else listed]
    (folder / "transforms_val.json").write_text(json.dumps({"frames": [{"img_id": i} for i in listed_ids]}))
    return listed_ids


def encode(path: Path, frames: list[np.ndarray], *, lossless: bool = False) -> Path:
    """A video of ``frames`` (BGR): libx264/yuv420p as renders are, or FFV1 RGB that decodes exactly."""
    height, width = frames[0].shape[:2]
    codec = ["-c:v", "ffv1", "-pix_fmt", "bgr0"] if lossless else ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
         f"{width}x{height}", "-framerate", "25", "-i", "-", *codec, str(path)],
        input=b"".join(frame.tobytes() for frame in frames), check=True,
    )  # fmt: skip
    return path


def noisy(frames: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0, 8, f.shape), 0, 255).astype(np.uint8) for f in frames]


def seed_method(video: Path, dataset: Path, ids: list[int]) -> tuple[list[float], list[float]]:
    """The prototype's evaluate.py computation: cv2.VideoCapture frames, resized to the ground truth's size,
    scikit-image's PSNR on colour and SSIM on OpenCV gray."""
    capture = cv2.VideoCapture(str(video))
    generated = []
    while (frame := capture.read())[0]:
        generated.append(frame[1])
    capture.release()
    psnrs, ssims = [], []
    for i, img_id in enumerate(ids[: len(generated)]):
        truth = cv2.imread(str(dataset / "gt_imgs" / f"{img_id}.jpg"))
        render = generated[i]
        if truth.shape != render.shape:
            render = cv2.resize(render, (truth.shape[1], truth.shape[0]))
        psnrs.append(peak_signal_noise_ratio(truth, render, data_range=255))
        to_gray = cv2.COLOR_BGR2GRAY
        ssims.append(
            structural_similarity(cv2.cvtColor(truth, to_gray), cv2.cvtColor(render, to_gray), data_range=255)
        )
    return psnrs, ssims


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 ground-truth frames and a 12-frame render of them with noise (libx264)."""
    folder = tmp_path_factory.mktemp("evaluation")
    truth = ground_truth_frames(12)
    ids = write_dataset(folder / "data", truth)
    video = encode(folder / "render.mov", noisy(truth))
    return folder, folder / "data", video, ids, truth


def assert_equals_seed(result: dict, video: Path, data_dir: Path, ids: list[int]) -> None:
    expected_psnr, expected_ssim = seed_method(video, data_dir, ids)
    assert result["frames"] == len(expected_psnr) == len(result["per_frame"]["psnr"])
    assert result["per_frame"]["img_id"] == ids[: result["frames"]]
    assert result["per_frame"]["psnr"] == pytest.approx(expected_psnr, abs=1e-6)
    assert result["per_frame"]["ssim"] == pytest.approx(expected_ssim, abs=1e-6)
    assert result["psnr"] == pytest.approx(np.mean(expected_psnr), abs=1e-6)
    assert result["ssim"] == pytest.approx(np.mean(expected_ssim), abs=1e-6)


def test_a_video_evaluates_to_the_seed_methods_figures(dataset):
    _, data_dir, video, ids, _ = dataset
    calls = []
    result = evaluate(str(video), str(data_dir), progress=lambda *args: calls.append(args))
    assert_equals_seed(result, video, data_dir, ids)
    assert (result["rendered_frames"], result["reference_frames"], result["lpips"]) == (12, 12, None)
    assert result["notes"] == [evaluate_module.LPIPS_NOTE]
    assert calls[0] == (0, 12, None, None)
    assert [call[:2] for call in calls[1:]] == [(n, 12) for n in range(1, 13)]
    assert calls[-1][2:] == (pytest.approx(result["psnr"]), pytest.approx(result["ssim"]))
    json.dumps(result, allow_nan=False)  # JSON-safe


def test_the_ffmpeg_pipe_decoder_gives_the_same_figures(dataset, monkeypatch):
    """Where OpenCV cannot open the video, an ffmpeg process decodes it (same frames here)."""
    _, data_dir, video, ids, _ = dataset
    monkeypatch.setattr(evaluate_module, "_opencv_capture", lambda video: None)
    assert_equals_seed(evaluate(str(video), str(data_dir)), video, data_dir, ids)


@pytest.mark.parametrize("opencv", [True, False], ids=["opencv", "ffmpeg"])
def test_a_render_shorter_or_longer_than_the_ground_truth_is_compared_as_far_as_both_go(
    dataset, tmp_path, monkeypatch, opencv
):
    folder, data_dir, video, ids, truth = dataset
    if not opencv:
        monkeypatch.setattr(evaluate_module, "_opencv_capture", lambda video: None)
    short = encode(tmp_path / "short.mov", noisy(truth[:9]))
    result = evaluate(str(short), str(data_dir))
    assert_equals_seed(result, short, data_dir, ids)
    assert (result["frames"], result["rendered_frames"], result["reference_frames"]) == (9, 9, 12)
    assert "The render has 9 frames, the ground truth 12: compared the first 9." in result["notes"]

    fewer = tmp_path / "fewer"
    few_ids = write_dataset(fewer, truth, listed=8)
    result = evaluate(str(video), str(fewer))
    assert_equals_seed(result, video, fewer, few_ids)
    assert (result["frames"], result["rendered_frames"], result["reference_frames"]) == (8, 12, 8)
    assert "The render has 12 frames, the ground truth 8: compared the first 8." in result["notes"]


def test_a_render_of_another_size_is_resized_to_the_ground_truth(dataset, tmp_path):
    _, data_dir, _, ids, truth = dataset
    small = encode(tmp_path / "small.mov", [cv2.resize(f, (48, 32)) for f in noisy(truth)])
    result = evaluate(str(small), str(data_dir))
    assert_equals_seed(result, small, data_dir, ids)
    assert any(note.startswith("The render is 48×32, the ground truth 96×64: ") for note in result["notes"])


def test_frames_equal_to_their_ground_truth_have_null_psnr(tmp_path):
    truth = ground_truth_frames(4)
    ids = write_dataset(tmp_path / "data", truth)
    decoded = [cv2.imread(str(tmp_path / "data" / "gt_imgs" / f"{i}.jpg")) for i in ids]
    video = encode(tmp_path / "exact.mkv", decoded[:2] + noisy(decoded[2:]), lossless=True)
    result = evaluate(str(video), str(tmp_path / "data"))
    assert result["per_frame"]["psnr"][:2] == [None, None]
    assert result["per_frame"]["ssim"][:2] == [1.0, 1.0]
    assert result["psnr"] == pytest.approx(np.mean(result["per_frame"]["psnr"][2:]))
    assert any(note.startswith("2 of 4 frames equal their ground truth exactly") for note in result["notes"])
    json.dumps(result, allow_nan=False)

    all_equal = encode(tmp_path / "all.mkv", decoded, lossless=True)
    result = evaluate(str(all_equal), str(tmp_path / "data"))
    assert (result["psnr"], result["ssim"]) == (None, 1.0)


# --- errors -----------------------------------------------------------------------------------------


@pytest.fixture
def small_dataset(tmp_path):
    truth = ground_truth_frames(3)
    ids = write_dataset(tmp_path / "data", truth)
    return tmp_path / "data", encode(tmp_path / "render.mov", noisy(truth)), ids


def test_a_missing_ground_truth_frame_is_named(small_dataset):
    data_dir, video, ids = small_dataset
    missing = data_dir / "gt_imgs" / f"{ids[1]}.jpg"
    missing.unlink()
    with pytest.raises(EvaluationError, match=re.escape(f"{missing} is missing")):
        evaluate(str(video), str(data_dir))


def test_a_corrupted_ground_truth_frame_is_named(small_dataset):
    data_dir, video, ids = small_dataset
    corrupted = data_dir / "gt_imgs" / f"{ids[2]}.jpg"
    corrupted.write_bytes(b"\xff\xd8 not really a jpeg " * 20)
    with pytest.raises(EvaluationError, match=re.escape(f"{corrupted} is corrupted")):
        evaluate(str(video), str(data_dir))


def test_bad_transforms_and_videos_are_explained(small_dataset, tmp_path):
    data_dir, video, _ = small_dataset
    with pytest.raises(EvaluationError, match="transforms_test.json does not exist"):
        evaluate(str(video), str(data_dir), split="test")
    (data_dir / "transforms_val.json").write_text('{"frames": [{"file_path": "./gt_imgs/0"}]}')
    with pytest.raises(EvaluationError, match="not a valid transforms file .*img_id"):
        evaluate(str(video), str(data_dir))
    write_dataset(data_dir, ground_truth_frames(3))
    with pytest.raises(EvaluationError, match="does not exist: render the validation split first"):
        evaluate(str(tmp_path / "nowhere.mov"), str(data_dir))
    garbage = tmp_path / "garbage.mov"
    garbage.write_bytes(b"this is no video at all" * 100)
    with pytest.raises(EvaluationError, match=re.escape(f"The video {garbage} cannot be read")):
        evaluate(str(garbage), str(data_dir))
    audio_only = tmp_path / "audio.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=0.2",
                    str(audio_only)], check=True)  # fmt: skip
    with pytest.raises(EvaluationError, match="cannot be read"):
        evaluate(str(audio_only), str(data_dir))


# --- command line -----------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The script as a GPU node runs it: on its own, no Django, no project on the path. Bytes are decoded
    by hand: text mode would turn the bar's carriage returns into newlines."""
    done = subprocess.run([sys.executable, "-I", "-u", str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          timeout=60)  # fmt: skip
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


def test_the_command_line_prints_the_bar_and_the_figures_and_writes_json(dataset, tmp_path):
    _, data_dir, video, _, _ = dataset
    output = tmp_path / "figures.json"
    done = run_cli("--video", str(video), "--data", str(data_dir), "--output-json", str(output), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    lines = done.stdout.splitlines()
    assert lines[0] == "[INFO] ===== evaluate 12 frames ====="
    assert lines[1:] == [
        f"PSNR: {result['psnr']:.2f} dB",
        f"SSIM: {result['ssim']:.4f}",
        "frames: 12",
        f"[NOTE] {evaluate_module.LPIPS_NOTE}",
    ]
    assert done.stderr.startswith("\rEvaluating:   0%|") and done.stderr.endswith("]\n")
    last = parse_bar(done.stderr.rstrip("\n").split("\r")[-1])
    assert (last.desc, last.n, last.total) == ("Evaluating", 12, 12)
    assert last.postfix == {"psnr": round(result["psnr"], 2), "ssim": round(result["ssim"], 4)}
    assert not list(tmp_path.glob(".evaluate-*"))  # the temp file was renamed into place


def test_the_command_line_exits_2_with_an_error_line(small_dataset, tmp_path):
    data_dir, video, ids = small_dataset
    (data_dir / "gt_imgs" / f"{ids[0]}.jpg").unlink()
    output = tmp_path / "figures.json"
    done = run_cli("--video", str(video), "--data", str(data_dir), "--output-json", str(output), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"[ERROR] The ground-truth frame {data_dir}/gt_imgs/")
    assert not output.exists()


def test_the_script_stands_alone_in_python_3_8_syntax():
    source = SCRIPT.read_text()
    ast.parse(source, feature_version=(3, 8))
    probe = "import runpy, sys; runpy.run_path(sys.argv[1]); print([m for m in sys.modules if 'django' in m])"
    done = subprocess.run([sys.executable, "-I", "-c", probe, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
