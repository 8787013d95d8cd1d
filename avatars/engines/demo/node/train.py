#!/usr/bin/env python3
"""Shipped to and run on the node, GPU or CPU (standard library only).

Talkforge demo engine: a CPU stand-in for GaussianTalker's ``train.py``. NOT a trained model.

It takes the same arguments as the real ``train.py`` (plus ``--seconds``), prints the same console
(``safe_state`` timestamps on stdout, ``Training progress`` tqdm bars on stderr redrawn with ``\\r``,
``[ITER N] Saving Gaussians``, ``Training complete.``) and writes the same folder layout under
``--model_path`` (``cfg_args``, ``point_cloud/coarse_iteration_N/`` and ``point_cloud/iteration_N/``), so
the platform's whole job path runs on any laptop. The files it writes are honest placeholders: a tiny
random point cloud and, when ffmpeg is present, a test-pattern preview frame. Standard library only, so it
can be copied onto any node.
"""

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import time


class Tee:
    """Writes to a console stream (flushed at once) and to the console log (buffered, flushed at exit)."""

    def __init__(self, stream, copy):
        self.stream, self.copy = stream, copy

    def write(self, text):
        self.stream.write(text)
        self.stream.flush()  # the console goes out at once; the copy may wait for its buffer
        self.copy.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.copy.flush()


def stamp(message):
    print(f"{message} [{time.strftime('%d/%m %H:%M:%S')}]", flush=True)


def fmt_clock(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def bar(n, total, started, postfix):
    elapsed = time.monotonic() - started
    rate = n / elapsed if elapsed > 0 else 0.0
    remaining = (total - n) / rate if rate > 0 else 0
    pct = int(100 * n / total)
    filled = int(10 * n / total)
    body = "█" * filled + " " * (10 - filled)
    return (
        f"\rTraining progress: {pct:3d}%|{body}| {n}/{total} "
        f"[{fmt_clock(elapsed)}<{fmt_clock(remaining)}, {rate:5.2f}it/s, {postfix}]"
    )


def save_iteration(model_path, folder, iteration, points):
    target = os.path.join(model_path, "point_cloud", folder)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "point_cloud.ply"), "w") as ply:
        ply.write("ply\nformat ascii 1.0\ncomment talkforge demo engine: not a trained model\n")
        ply.write(
            f"element vertex {points}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
        )
        rng = random.Random(iteration)
        for _ in range(points):
            ply.write(f"{rng.uniform(-1, 1):.4f} {rng.uniform(-1, 1):.4f} {rng.uniform(-1, 1):.4f}\n")
    for name in ("deformation.pth", "deformation_table.pth", "deformation_accum.pth"):
        with open(os.path.join(target, name), "wb") as handle:
            handle.write(b"talkforge-demo\n")
    if shutil.which("ffmpeg"):
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=128x128:rate=1",
                "-frames:v",
                "1",
                os.path.join(target, "0.png"),
            ],
            check=False,
            # A preview is not urgent: at a low priority it does not delay other jobs' consoles.
            preexec_fn=lambda: os.nice(10),
        )
    stamp(f"\n[ITER {iteration}] Saving Gaussians")


def run_stage(args, stage, total, seconds, started_all, stop_at=0):
    folder_prefix = "coarse_iteration_" if stage == "coarse" else "iteration_"
    started = time.monotonic()
    delay = seconds / total if total else 0
    loss = 0.2
    # tqdm draws the empty bar when it is created.
    sys.stderr.write(f"\rTraining progress:   0%|          | 0/{total} [00:00<?, ?it/s]")
    sys.stderr.flush()
    for iteration in range(1, (stop_at or total) + 1):
        loss = max(0.001, loss * 0.999 + random.uniform(-0.0005, 0.0005))
        psnr = -10 * math.log10(loss)
        if iteration % 10 == 0 or iteration == total:
            if delay:  # paced against the clock once per printed bar, so the wall time holds at any rate
                time.sleep(max(0.0, started + iteration * delay - time.monotonic()))
            postfix = f"Loss={loss:.7f}, psnr={psnr:.2f}, point={34650 + iteration}"
            if args.stamp_lines:
                # The wall clock as the line leaves, for measuring engine line → browser latency.
                postfix += f", t={time.time():.6f}"
            sys.stderr.write(bar(iteration, total, started, postfix))
            sys.stderr.flush()
        if iteration == 1 or iteration % args.save_every == 0 or iteration == total:
            save_iteration(args.model_path, f"{folder_prefix}{iteration}", iteration, 64)
    sys.stderr.write("\n")
    sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser(description="Talkforge demo engine (GaussianTalker-shaped, not a model)")
    parser.add_argument("-s", "--source_path", required=True)
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("--configs", default="arguments/64_dim_1_transformer.py")
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--coarse_iterations", type=int, default=7999)
    parser.add_argument("--seconds", type=float, default=10.0, help="demo: wall time for both stages")
    parser.add_argument("--save_every", type=int, default=500)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6009)
    parser.add_argument("--fail_at", type=int, default=0, help="demo: exit 1 at this fine iteration")
    parser.add_argument(
        "--stamp_lines", action="store_true", help="demo: append t=<epoch seconds> to each bar's postfix"
    )
    args = parser.parse_args()

    os.makedirs(args.model_path, exist_ok=True)
    # Like SyncTalk's log_ngp.txt: a byte-exact copy of everything printed, in the order printed.
    console = open(os.path.join(args.model_path, "console.log"), "w", buffering=1)  # noqa: SIM115
    sys.stdout, sys.stderr = Tee(sys.stdout, console), Tee(sys.stderr, console)
    print(f"Optimizing {args.model_path}", flush=True)
    stamp(f"Output folder: {args.model_path}")
    with open(os.path.join(args.model_path, "cfg_args"), "w") as cfg:
        cfg.write(f"Namespace(source_path={args.source_path!r}, model_path={args.model_path!r}, demo=True)\n")
    stamp("[INFO] load aud_features: torch.Size([550, 29, 16])")
    stamp("Reading Training Transforms")
    stamp("Loading Training Cameras")
    stamp("Number of points at initialisation :  34650")
    stamp("data loading done")
    total = args.coarse_iterations + args.iterations
    started_all = time.monotonic()
    run_stage(
        args, "coarse", args.coarse_iterations, args.seconds * args.coarse_iterations / total, started_all
    )
    stamp("reset dataloader into random dataloader.")
    stop_at = min(args.iterations, args.fail_at) if args.fail_at else 0
    run_stage(args, "fine", args.iterations, args.seconds * args.iterations / total, started_all, stop_at)
    if args.fail_at:
        print("RuntimeError: demo failure requested with --fail_at", file=sys.stderr, flush=True)
        return 1
    stamp("\nTraining complete.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
