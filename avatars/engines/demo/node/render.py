#!/usr/bin/env python3
"""Shipped to and run on the node, GPU or CPU (standard library and ffmpeg).

Talkforge demo engine: a CPU stand-in for GaussianTalker's ``render.py``. NOT a trained model.

Validation render (``--skip_train``): prints render.py's console (docs/engines.md: ``Loading trained model
at iteration N``, ``test set rendering : N frames``, the ``Rendering progress`` bar, ``total frame``,
``FPS``) and writes its layout (render.py:137–139 at GaussianTalker 8ec613b):
``<model>/test/ours_<iter>/renders/<P>_test_<iter>iter_renders.mov`` with the val split's audio muxed in,
and ``gt/<P>_test_<iter>iter_gt.mov``. The "rendering" is the val split's own ground-truth frames with
added noise, made by ffmpeg: honest stand-in files, so that the platform's evaluation has something real
to compare.

Custom audio (``--custom_aud x.npy --custom_wav x.wav``, both joined to ``-s`` like render.py does): the
``custom`` set, rendered before the others, drives the val pose sequence of ``-s`` with the audio. As in the
original prototype's patched reader (docs/engines.md), the frames rendered are min(val frames, audio
frames) — the audio's frame count is T of its features ``[T, 16, 29]`` (here read from the demo features
placeholder) — with
``[INFO] Custom audio mode: limiting render frames to N`` when the audio is the shorter. The result is
``<model>/custom/ours_<loaded iter>/renders/<P>_custom_<iter>iter_renders.mov``: the val split's
ground-truth frames listed in ``transforms_val.json``, in that order, with visible noise (the honest marker
that nothing was rendered), and ``--custom_wav`` muxed in (AAC, no ``-shortest``). Standard library + ffmpeg
only.
"""

import argparse
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def stamp(message):
    print(f"{message} [{time.strftime('%d/%m %H:%M:%S')}]", flush=True)


def latest_iteration(model_path):
    found = [int(m.group(1)) for p in glob.glob(os.path.join(model_path, "point_cloud", "iteration_*"))
             if (m := re.search(r"iteration_(\d+)$", p))]  # fmt: skip
    if not found:
        print(f"[ERROR] no point_cloud/iteration_* under {model_path}: train first", file=sys.stderr)
        sys.exit(1)
    return max(found)


def feature_frames(path):
    """T of the features ``[T, 16, 29]``: the demo placeholder records the shape real features would have."""
    try:
        with open(path, errors="replace") as handle:
            text = handle.read(4096)
    except OSError as error:
        print(f"[ERROR] cannot read the audio features {path}: {error}", file=sys.stderr)
        sys.exit(1)
    match = re.search(r"^shape: \[(\d+), 16, 29\]$", text, re.M)
    if match is None:
        print(f"[ERROR] aud_features.shape of {path} not supported (demo: no [T, 16, 29] shape recorded)",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
    return int(match.group(1))


def progress(batches):
    started = time.monotonic()
    for done in range(1, batches + 1):
        rate = done / max(time.monotonic() - started, 1e-3)
        percent = int(100 * done / batches)
        sys.stderr.write(
            f"\rRendering progress: {percent:3d}%|##########| {done}/{batches} [00:00<00:00, {rate:.2f}it/s]"
        )
        sys.stderr.flush()
    sys.stderr.write("\n")
    return started


def render_custom(args, loaded):
    """The custom-audio set: see the module docstring."""
    with open(os.path.join(args.source_path, "transforms_val.json")) as handle:
        ids = [frame["img_id"] for frame in json.load(handle)["frames"]]
    stamp("Reading Custom Transforms")
    audio_frames = feature_frames(os.path.join(args.source_path, args.custom_aud))
    stamp(f"[INFO] load aud_features: torch.Size([{audio_frames}, 16, 29])")
    if audio_frames < len(ids):
        print(f"[INFO] Custom audio mode: limiting render frames to {audio_frames}", flush=True)
        ids = ids[:audio_frames]
    stamp(" " + "-" * 49)
    stamp(f"        test set rendering  :   {len(ids)}  frames  ")
    stamp(" " + "-" * 49)
    print("point nums: 34650", flush=True)
    started = progress(math.ceil(len(ids) / args.batch))
    print(f"total frame: {len(ids)}", flush=True)
    print(f"FPS: {len(ids) / max(time.monotonic() - started, 1e-3):.1f}", flush=True)
    prefix = args.model_path.split("/")[-2]
    renders = os.path.join(args.model_path, "custom", f"ours_{loaded}", "renders")
    os.makedirs(renders, exist_ok=True)
    # The listed frames in their order (a ping-pong view repeats and reverses them): a numbered sequence.
    sequence = tempfile.mkdtemp(prefix=".frames-", dir=renders)
    try:
        for index, img_id in enumerate(ids):
            os.symlink(os.path.abspath(os.path.join(args.source_path, "gt_imgs", f"{img_id}.jpg")),
                       os.path.join(sequence, f"{index:06d}.jpg"))  # fmt: skip
        ffmpeg(
            "-framerate", "25", "-i", os.path.join(sequence, "%06d.jpg"),
            "-i", os.path.join(args.source_path, args.custom_wav),
            "-vf", "noise=alls=12:allf=t", "-frames:v", str(len(ids)),
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
            os.path.join(renders, f"{prefix}_custom_{loaded}iter_renders.mov"),
        )  # fmt: skip
    finally:
        shutil.rmtree(sequence, ignore_errors=True)


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args], check=True)


def main():
    parser = argparse.ArgumentParser(description="Talkforge demo render (GaussianTalker-shaped, not a model)")
    parser.add_argument("-s", "--source_path", required=True)
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("--configs", default="arguments/64_dim_1_transformer.py")
    parser.add_argument("--iteration", type=int, default=-1)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_test", action="store_true")
    parser.add_argument("--custom_aud", default="")
    parser.add_argument("--custom_wav", default="")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.model_path, "cfg_args")):
        print(
            f"[ERROR] {args.model_path}/cfg_args is missing: this folder holds no trained model",
            file=sys.stderr,
        )
        return 1
    loaded = latest_iteration(args.model_path) if args.iteration == -1 else args.iteration
    stamp(f"Loading trained model at iteration {loaded}")
    ply = os.path.join(args.model_path, "point_cloud", f"iteration_{loaded}", "point_cloud.ply")
    if not os.path.isdir(os.path.dirname(ply)):
        # What render.py dies of when asked for an iteration that was never saved.
        print("Traceback (most recent call last):", file=sys.stderr)
        print(f"FileNotFoundError: [Errno 2] No such file or directory: '{ply}'", file=sys.stderr)
        return 1
    if args.custom_aud:
        render_custom(args, loaded)
    if args.skip_test:
        return 0
    with open(os.path.join(args.source_path, "transforms_val.json")) as handle:
        ids = [frame["img_id"] for frame in json.load(handle)["frames"]]
    stamp("Reading Test Transforms")
    print(f"        test set rendering  :   {len(ids)}  frames  ", flush=True)
    print("point nums: 34650", flush=True)
    started = progress(math.ceil(len(ids) / args.batch))
    print(f"total frame: {len(ids)}", flush=True)
    print(f"FPS: {len(ids) / max(time.monotonic() - started, 1e-3):.1f}", flush=True)
    prefix = args.model_path.split("/")[-2]
    folder = os.path.join(args.model_path, "test", f"ours_{args.iteration}")
    renders, gt = os.path.join(folder, "renders"), os.path.join(folder, "gt")
    os.makedirs(renders, exist_ok=True)
    os.makedirs(gt, exist_ok=True)
    pattern = os.path.join(args.source_path, "gt_imgs", "%d.jpg")
    frames = ["-framerate", "25", "-start_number", str(ids[0]), "-i", pattern]
    audio = ["-i", os.path.join(args.source_path, "aud_novel.wav")]
    encode = ["-frames:v", str(len(ids)), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    name = f"{prefix}_test_{args.iteration}iter"
    ffmpeg(
        *frames, *audio, "-vf", "noise=alls=12:allf=t", *encode, os.path.join(renders, f"{name}_renders.mov")
    )
    ffmpeg(*frames, *audio, *encode, os.path.join(gt, f"{name}_gt.mov"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
