#!/usr/bin/env python3
"""PSNR and SSIM of a GaussianTalker render against the dataset's ground-truth frames.

The prototype's evaluate.py (xiaobai-cn21/TFG_ui_GaussianTalker @ 5b957d1, GaussianTalker/evaluate.py), fixed:

* GaussianTalker's transforms_val.json frames have no ``file_path``: each frame's ``img_id`` names its
  ground truth, ``gt_imgs/<img_id>.jpg`` (``<img_id:04d>.jpg`` is still accepted, as the prototype did).
  Frames are paired in the file's order, which is the order render.py renders them in.
* The metric is the prototype's: PSNR (scikit-image, data range 255) on the full colour frames, SSIM
  (scikit-image defaults, data range 255) on grayscale frames. Grayscale is OpenCV's BGR2GRAY for 8-bit
  images, written out here: Y = (9798 R + 19235 G + 3735 B + 2^14) >> 15, i.e. BT.601 weights in
  15-bit fixed point, so the figure does not depend on having OpenCV installed.
* Frames are streamed: the video is decoded by ffmpeg one frame at a time, ground truths are read one
  at a time. Nothing holds the whole video.
* A video whose frame count differs from transforms_val.json is reported (with --strict it is an
  error) instead of being silently paired frame by frame with the wrong ground truth.
* Missing inputs are an error with a non-zero exit status (the prototype printed a message and exited 0).

For a self-driven score, evaluate ``test/ours_<N>/renders/*_renders.mov`` (render.py without
--skip_test): it renders the val split. A custom-audio render has other mouth shapes than the ground
truth, so its figures say little.

Usage: evaluate.py --generated_video V --data_dir D [--output_json J] [--strict]
Needs numpy, Pillow, scikit-image, and ffmpeg/ffprobe on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

EXIT_ERROR = 1
EXIT_MISMATCH = 3  # --strict and the frame counts differ


class EvaluationError(Exception):
    """A problem with the inputs, reported as one clear line."""

    exit_code = EXIT_ERROR


class FrameCountMismatch(EvaluationError):
    exit_code = EXIT_MISMATCH


# --- inputs --------------------------------------------------------------------------------------------


def val_image_ids(transforms_path: str) -> list[int]:
    """The ``img_id`` of every frame of transforms_val.json, in the file's order."""
    try:
        with open(transforms_path, encoding="utf-8") as handle:
            contents = json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{transforms_path} is not valid JSON: {error}") from None
    frames = contents.get("frames") if isinstance(contents, dict) else None
    if not isinstance(frames, list) or not frames:
        raise EvaluationError(f"{transforms_path} has no frames")
    ids = []
    for number, frame in enumerate(frames):
        img_id = frame.get("img_id") if isinstance(frame, dict) else None
        if isinstance(img_id, bool) or not isinstance(img_id, int) or img_id < 0:
            raise EvaluationError(
                f"{transforms_path}: frame {number} has no integer img_id (GaussianTalker's "
                "data_utils/process.py writes one per frame); is this a GaussianTalker dataset?"
            )
        ids.append(img_id)
    return ids


def ground_truth_path(gt_dir: str, img_id: int) -> str:
    for name in (f"{img_id}.jpg", f"{img_id:04d}.jpg"):
        path = os.path.join(gt_dir, name)
        if os.path.isfile(path):
            return path
    raise EvaluationError(
        f"ground truth for img_id {img_id} not found: {os.path.join(gt_dir, f'{img_id}.jpg')}"
    )


def read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def video_size(video_path: str) -> tuple[int, int]:
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height"]
    result = subprocess.run(
        [*command, "-of", "json", video_path], capture_output=True, text=True, check=False
    )
    try:
        stream = json.loads(result.stdout)["streams"][0]
        return int(stream["width"]), int(stream["height"])
    except (ValueError, KeyError, IndexError):
        detail = result.stderr.strip().splitlines()[-1:] or ["no video stream"]
        raise EvaluationError(f"{video_path} is not a readable video: {detail[0]}") from None


def video_frames(
    video_path: str, width: int, height: int, scale_to: tuple[int, int] | None
) -> Iterator[np.ndarray]:
    """Decoded RGB frames, one at a time (ffmpeg writes raw rgb24 to a pipe)."""
    out_w, out_h = scale_to or (width, height)
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", video_path, "-map", "0:v:0"]
    if scale_to:
        command += ["-vf", f"scale={out_w}:{out_h}:flags=bilinear"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = out_w * out_h * 3
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reached_end = False
    try:
        while True:
            data = process.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                reached_end = True
                break
            yield np.frombuffer(data, dtype=np.uint8).reshape(out_h, out_w, 3)
    finally:
        if not reached_end:  # the caller stopped early: no need to decode the rest
            process.kill()
        process.stdout.close()
        stderr = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        status = process.wait()
    if status != 0:
        raise EvaluationError(f"ffmpeg could not decode {video_path}: {stderr.strip() or f'exit {status}'}")


# --- the metric ----------------------------------------------------------------------------------------


def gray(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's COLOR_BGR2GRAY for 8-bit images (BT.601 weights, 15-bit fixed point, rounded)."""
    r, g, b = (rgb[..., channel].astype(np.uint32) for channel in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def frame_scores(ground_truth: np.ndarray, generated: np.ndarray) -> tuple[float, float]:
    with np.errstate(divide="ignore"):  # identical frames: PSNR is +inf, counted below
        psnr = float(peak_signal_noise_ratio(ground_truth, generated, data_range=255))
    ssim = float(structural_similarity(gray(ground_truth), gray(generated), data_range=255))
    return psnr, ssim


def evaluate(video_path: str, data_dir: str, strict: bool = False, progress_every: int = 50) -> dict:
    gt_dir = os.path.join(data_dir, "gt_imgs")
    transforms_path = os.path.join(data_dir, "transforms_val.json")
    for path, what in ((video_path, "generated video"), (transforms_path, "transforms_val.json")):
        if not os.path.isfile(path):
            raise EvaluationError(f"{what} not found: {path}")
    if not os.path.isdir(gt_dir):
        raise EvaluationError(f"ground-truth folder not found: {gt_dir} (made by data_utils/process.py)")

    ids = val_image_ids(transforms_path)
    first_gt = read_rgb(ground_truth_path(gt_dir, ids[0]))
    gt_h, gt_w = first_gt.shape[:2]
    width, height = video_size(video_path)
    scale_to = None
    if (width, height) != (gt_w, gt_h):
        scale_to = (gt_w, gt_h)
        note = f"the video is {width}x{height}, the ground truth {gt_w}x{gt_h}: frames are scaled to fit"
        print(f"note: {note} (bilinear)", file=sys.stderr)
    print(f"transforms_val.json lists {len(ids)} frames")

    psnr_sum = ssim_sum = 0.0
    compared = identical = 0
    video_count = 0
    with contextlib.closing(video_frames(video_path, width, height, scale_to)) as frames:
        for generated in frames:
            video_count += 1
            if compared == len(ids):
                continue  # count the surplus frames, compare nothing
            img_id = ids[compared]
            ground_truth = first_gt if compared == 0 else read_rgb(ground_truth_path(gt_dir, img_id))
            if ground_truth.shape != generated.shape:
                raise EvaluationError(
                    f"gt_imgs for img_id {img_id} is {ground_truth.shape[1]}x{ground_truth.shape[0]}, "
                    f"unlike the first ground truth ({gt_w}x{gt_h})"
                )
            psnr, ssim = frame_scores(ground_truth, generated)
            if math.isinf(psnr):
                identical += 1
            else:
                psnr_sum += psnr
            ssim_sum += ssim
            compared += 1
            if progress_every and compared % progress_every == 0:
                print(f"compared {compared}/{len(ids)} frames")
    if compared == 0:
        raise EvaluationError(f"{video_path} has no video frames")

    mismatch = video_count != len(ids)
    if mismatch:
        message = (
            f"frame count mismatch: the video has {video_count} frames, transforms_val.json lists "
            f"{len(ids)}; compared the first {compared} pairs"
        )
        if strict:
            raise FrameCountMismatch(message + " (--strict)")
        print(f"warning: {message}", file=sys.stderr)

    # PSNR of identical frames is infinite: the mean is then infinite too, and JSON has no such number.
    psnr_mean = math.inf if identical else psnr_sum / compared
    return {
        "psnr": None if identical else psnr_mean,
        "ssim": ssim_sum / compared,
        "num_frames": compared,
        "video_frames": video_count,
        "reference_frames": len(ids),
        "identical_frames": identical,
        "frame_count_mismatch": mismatch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PSNR/SSIM of a GaussianTalker render against gt_imgs/")
    parser.add_argument(
        "--generated_video", required=True, help="e.g. output/<name>/test/ours_10000/renders/…mov"
    )
    parser.add_argument("--data_dir", required=True, help="the dataset folder, e.g. data/<name>")
    parser.add_argument("--output_json", help="also write {psnr, ssim, num_frames, …} here")
    parser.add_argument("--strict", action="store_true", help="a frame-count mismatch is an error")
    args = parser.parse_args(argv)
    try:
        results = evaluate(args.generated_video, args.data_dir, strict=args.strict)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code

    psnr_text = (
        "inf (some frames are identical to the ground truth)"
        if results["psnr"] is None
        else (f"{results['psnr']:.2f}")
    )
    print("=" * 50)
    print(f"Average PSNR: {psnr_text} dB")
    print(f"Average SSIM: {results['ssim']:.4f}")
    print(f"Frames evaluated: {results['num_frames']}")
    print("=" * 50)
    if args.output_json:
        try:
            with open(args.output_json, "w", encoding="utf-8") as handle:
                json.dump(results, handle, indent=2)
                handle.write("\n")
        except OSError as error:
            print(f"error: cannot write {args.output_json}: {error}", file=sys.stderr)
            return EXIT_ERROR
        print(f"Results written to {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
