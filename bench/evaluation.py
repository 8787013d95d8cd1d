"""Quality figures: PSNR/SSIM of a 512×512 rendered video against its ground-truth frames, end to end
(decode, read the ground truth, compute), beside the prototype's method and ffmpeg's filters in the same run.

Run from the repository root: ``.venv/bin/python bench/evaluation.py`` (no database or Redis needed).

Input, built in a temp folder (removed at the end): ``--frames`` ground-truth frames ``gt_imgs/<id>.jpg``
(ids from 1000) made from scikit-image's astronaut resized to 512×512, each moved, turned and scaled a
little and given sensor-like noise, written by ``cv2.imwrite`` (JPEG quality 95);
``transforms_val.json`` listing their ``img_id``s; the "render" = the ground truth with ffmpeg's noise
filter, encoded with libx264/yuv420p into a .mov, as ``avatars/engines/demo/node/render.py`` does. Every file
is read once before timing, so the disk is not what is measured.

Methods, each run ``--repetitions`` times, in a rotating order:
- ours: ``avatars.engines.node.evaluate.evaluate(video, data_dir)`` (ffmpeg decode process, ground truth read
  by a thread, exact integer window sums);
- seed: the original prototype's evaluate.py method (docs/engines.md) — all frames decoded with
  ``cv2.VideoCapture`` into a list, then per frame ``cv2.imread`` of the ground truth,
  ``skimage.metrics.peak_signal_noise_ratio`` on the colour frames and ``structural_similarity`` on
  ``cv2.cvtColor(..., COLOR_BGR2GRAY)``;
- ffmpeg: ``ffmpeg -i render -framerate 25 -start_number <first> -i gt_imgs/%d.jpg`` with
  ``[1:v]split[g1][g2];[0:v][g1]psnr=stats_file=…[m];[m][g2]ssim=stats_file=…`` to ``-f null`` (per-frame
  figures to files, as ours keeps them). ffmpeg's own definitions — YUV planes, SSIM on 8×8 blocks at a
  4-pixel stride — are not the prototype's, so only its speed is comparable; its figures are reported for
  information.

ms/frame = wall seconds of the whole call / frames, median over repetitions. ``value`` = ours,
``baseline`` = seed, ``ratio`` = seed / ours (target ≥ 5, and faster than ffmpeg). The run fails if any
per-frame PSNR or SSIM of ours differs from the prototype method's by more than 1e-6; the largest differences
are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _harness import log, report

FIRST_ID = 1000
SIZE = 512


def build_input(folder: Path, frames: int) -> tuple[Path, Path, list[int]]:
    """(render video, dataset folder, img_ids) of a synthetic validation split."""
    from skimage import data

    dataset = folder / "data"
    (dataset / "gt_imgs").mkdir(parents=True)
    base = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (SIZE, SIZE), cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    ids = list(range(FIRST_ID, FIRST_ID + frames))
    for k, img_id in enumerate(ids):
        centre = (SIZE / 2 + 6 * np.sin(k / 11), SIZE / 2 + 4 * np.cos(k / 7))
        matrix = cv2.getRotationMatrix2D(centre, 2 * np.sin(k / 17), 1 + 0.02 * np.sin(k / 23))
        matrix[:, 2] += (3 * np.sin(k / 5), 2 * np.cos(k / 9))
        frame = cv2.warpAffine(base, matrix, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
        frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(dataset / "gt_imgs" / f"{img_id}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (dataset / "transforms_val.json").write_text(json.dumps({"frames": [{"img_id": i} for i in ids]}))
    video = folder / "render.mov"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-framerate", "25", "-start_number", str(ids[0]),
         "-i", str(dataset / "gt_imgs" / "%d.jpg"), "-vf", "noise=alls=12:allf=t", "-frames:v", str(frames),
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )  # fmt: skip
    return video, dataset, ids


def seed_method(video: Path, dataset: Path, ids: list[int]) -> tuple[list[float], list[float]]:
    """The prototype's evaluate.py, as it computes (its printing and JSON left out)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    capture = cv2.VideoCapture(str(video))
    generated = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        generated.append(frame)
    capture.release()
    psnr_values, ssim_values = [], []
    for i, img_id in enumerate(ids[: len(generated)]):
        gt = cv2.imread(str(dataset / "gt_imgs" / f"{img_id}.jpg"))
        gen = generated[i]
        if gt.shape != gen.shape:
            gen = cv2.resize(gen, (gt.shape[1], gt.shape[0]))
        psnr_values.append(peak_signal_noise_ratio(gt, gen, data_range=255))
        gt_gray = cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY)
        gen_gray = cv2.cvtColor(gen, cv2.COLOR_BGR2GRAY)
        ssim_values.append(structural_similarity(gt_gray, gen_gray, data_range=255))
    return psnr_values, ssim_values


def ffmpeg_filters(video: Path, dataset: Path, ids: list[int], folder: Path) -> dict[str, float]:
    """ffmpeg's psnr and ssim filters over the same pairs, per-frame figures to stats files (as ours keeps
    per-frame figures); their averages as ffmpeg prints them."""
    graph = (
        f"[1:v]split[g1][g2];[0:v][g1]psnr=stats_file={folder / 'psnr.log'}[m];"
        f"[m][g2]ssim=stats_file={folder / 'ssim.log'}"
    )
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(video), "-framerate", "25", "-start_number",
         str(ids[0]), "-i", str(dataset / "gt_imgs" / "%d.jpg"), "-filter_complex", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    psnr = re.search(r"PSNR .*average:([\d.]+|inf)", result.stderr)
    ssim = re.search(r"SSIM .*All:([\d.]+)", result.stderr)
    frames = len((folder / "ssim.log").read_text().splitlines())
    return {
        "psnr": float(psnr[1]) if psnr else None,
        "ssim": float(ssim[1]) if ssim else None,
        "frames": frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    from avatars.engines.node.evaluate import evaluate

    load = round(os.getloadavg()[0], 2)
    folder = Path(tempfile.mkdtemp(prefix="talkforge-bench-evaluation-"))
    try:
        started = time.monotonic()
        video, dataset, ids = build_input(folder, args.frames)
        log(f"{args.frames} frames of {SIZE}×{SIZE} built in {time.monotonic() - started:.1f} s in {folder}")
        for path in [video, *sorted((dataset / "gt_imgs").iterdir())]:
            path.read_bytes()  # into the page cache

        outputs = {}
        methods = {
            "ours": lambda: evaluate(str(video), str(dataset)),
            "seed": lambda: seed_method(video, dataset, ids),
            "ffmpeg": lambda: ffmpeg_filters(video, dataset, ids, folder),
        }
        seconds = {name: [] for name in methods}
        names = list(methods)
        for repetition in range(args.repetitions):
            for name in names[repetition % 3 :] + names[: repetition % 3]:
                began = time.perf_counter()
                outputs[name] = methods[name]()
                seconds[name].append(time.perf_counter() - began)
                log(f"  {name:6s} {1000 * seconds[name][-1] / args.frames:6.2f} ms/frame")

        ours, (seed_psnr, seed_ssim) = outputs["ours"], outputs["seed"]
        if ours["frames"] != len(seed_psnr) or ours["frames"] != args.frames:
            raise RuntimeError(f"ours compared {ours['frames']} frames, the seed {len(seed_psnr)}")
        diff_psnr = max(abs(a - b) for a, b in zip(ours["per_frame"]["psnr"], seed_psnr, strict=True))
        diff_ssim = max(abs(a - b) for a, b in zip(ours["per_frame"]["ssim"], seed_ssim, strict=True))
        if max(diff_psnr, diff_ssim) > 1e-6:
            raise RuntimeError(f"values differ from the seed method's: PSNR {diff_psnr}, SSIM {diff_ssim}")
        ms = {name: 1000 * statistics.median(values) / args.frames for name, values in seconds.items()}
        report(
            bench="evaluation",
            value=round(ms["ours"], 3),
            unit="ms/frame",
            baseline=round(ms["seed"], 3),
            baseline_name="seed evaluate.py method (OpenCV + scikit-image)",
            ratio=round(ms["seed"] / ms["ours"], 2),
            ffmpeg_ms_per_frame=round(ms["ffmpeg"], 3),
            ffmpeg_over_ours=round(ms["ffmpeg"] / ms["ours"], 2),
            max_abs_diff_psnr=diff_psnr,
            max_abs_diff_ssim=diff_ssim,
            psnr=round(ours["psnr"], 4),
            ssim=round(ours["ssim"], 6),
            ffmpeg_figures=outputs["ffmpeg"],
            frames=args.frames,
            size=f"{SIZE}x{SIZE}",
            repetitions=args.repetitions,
            cpus=os.cpu_count(),
            load_at_start=load,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
