"""Sentence audio → first fMP4 piece out of a GaussianTalker (or SyncTalk) live session on a GPU node: warm vs
cold, through the platform's own code (chat/live.py, avatars/engines/live.py). For when a GPU is lent.

Run ON the GPU machine, from the repository root, with PostgreSQL and Redis up (each argument may come from
the environment instead: GPU_LIVE_DATASET, GPU_LIVE_MODEL, GPU_LIVE_ENGINE, GPU_LIVE_RUNTIME,
GPU_LIVE_INSTALL_DIR, GPU_LIVE_ENVIRONMENT, GPU_LIVE_IMAGE; with no dataset and model at all it says it
skipped and exits 0, so ``make bench`` can run it anywhere)::

    .venv/bin/python bench/gpu_live.py --dataset /data/may --model /runs/may/point_cloud/iteration_10000 \\
        --install-dir /opt/GaussianTalker --environment /opt/conda/envs/gaussiantalker/bin

    .venv/bin/python bench/gpu_live.py --dry-run ...   # checks the arguments and the machine, runs nothing

Setup (bench/_harness.py's isolated world): a local node of the bench's own on this machine (its GPUs
probed with the real nvidia-smi), the engine's NodeEngine row (bare: ``--install-dir`` and
``--environment``; docker: ``--image``), a trained avatar's rows pointing at the given preprocessed dataset
(``--dataset``: the folder preprocessing left, with ``transforms_val.json``) and checkpoint (``--model``:
GaussianTalker's ``point_cloud/iteration_N`` of a fine-stage run; SyncTalk's checkpoint file). Nothing
there is copied or changed; the session's files go under ``--workdir``.

- **cold** (per run): the session admitted and started (``chat.live.live_session_ready``: the process, the
  model and audio encoder loaded), the relay opened, one sentence's 16 kHz WAV put on the node and rendered
  until the first fMP4 piece (init segment + first fragment) is back: what a conversation's first turn
  pays without the page's warm-up.
- **warm** (value): the next three sentences through the same running session: WAV put, render request,
  first piece back — what every later turn pays.

One JSON line: ``value`` = warm p50, ``baseline`` = cold p50, ``ratio``, the session's ``load_s`` (its
own figure) and the GPU it ran on. It refuses, saying why, when nvidia-smi lists no GPU, when the engine's
install is missing, or when the dataset or model folder is not there.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
ENGINES = ("gaussiantalker", "synctalk")  # avatars/engines/registry.py: the engines with a GPU live session


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Environment: DATABASE/Redis as bench/_harness.py (PostgreSQL on 127.0.0.1:5432, Redis on "
        "127.0.0.1:6379). LIVE_START_TIMEOUT (seconds) bounds a cold start.",
    )  # fmt: skip
    env = os.environ.get
    parser.add_argument("--engine", choices=ENGINES, default=env("GPU_LIVE_ENGINE", "gaussiantalker"))
    parser.add_argument("--dataset", type=Path, default=env("GPU_LIVE_DATASET"),
                        help="the preprocessed dataset folder (GPU_LIVE_DATASET)")  # fmt: skip
    parser.add_argument(
        "--model", type=Path, default=env("GPU_LIVE_MODEL"),
        help="the checkpoint: GaussianTalker's <run>/point_cloud/iteration_N folder (GPU_LIVE_MODEL)",
    )  # fmt: skip
    parser.add_argument("--iteration", type=int, help="the checkpoint's iteration (default: from --model)")
    parser.add_argument("--runtime", choices=("bare", "docker"), default=env("GPU_LIVE_RUNTIME", "bare"))
    parser.add_argument("--install-dir", type=Path, default=env("GPU_LIVE_INSTALL_DIR"),
                        help="bare runtime: the engine's repository (GPU_LIVE_INSTALL_DIR)")  # fmt: skip
    parser.add_argument("--environment", type=Path, default=env("GPU_LIVE_ENVIRONMENT"),
                        help="bare runtime: the environment's bin folder (GPU_LIVE_ENVIRONMENT)")  # fmt: skip
    parser.add_argument("--image", default=env("GPU_LIVE_IMAGE"),
                        help="docker runtime: the engine's image (GPU_LIVE_IMAGE)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="the node's work folder (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=3, help="cold starts (each followed by 3 warm sentences)")
    parser.add_argument("--dry-run", action="store_true", help="check arguments and machine, then stop")
    args = parser.parse_args(argv)
    if args.dataset is None and args.model is None:
        return args  # nothing to measure (main says so)
    if args.dataset is None or args.model is None:
        parser.error("give both --dataset and --model (or GPU_LIVE_DATASET and GPU_LIVE_MODEL)")
    if args.iteration is None:
        match = re.search(r"iteration_(\d+)", str(args.model))
        if args.model.is_dir() and not match:  # GaussianTalker's model is a point_cloud/iteration_N folder
            parser.error("--model must be a point_cloud/iteration_N folder, or give --iteration")
        args.iteration = int(match.group(1)) if match else 0
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def problems(args: argparse.Namespace) -> list[str]:
    """Everything that stops the bench from running here, in words (empty: it can run)."""
    found = []
    if not args.dataset.is_dir():
        found.append(f"--dataset {args.dataset} is not a folder")
    elif not (args.dataset / "transforms_val.json").is_file():
        found.append(f"--dataset {args.dataset} has no transforms_val.json: is it a preprocessed dataset?")
    if not args.model.exists():
        found.append(f"--model {args.model} does not exist")
    if args.runtime == "bare":
        if args.install_dir is None or not args.install_dir.is_dir():
            found.append(f"--install-dir {args.install_dir} is not the engine's repository folder")
        if args.environment is not None and not (args.environment / "python").exists():
            found.append(f"--environment {args.environment} has no python: give the environment's bin folder")
    else:
        if not args.image:
            found.append("--runtime docker needs --image")
        elif shutil.which("docker") is None:
            found.append("--runtime docker, but docker is not installed here")
        elif subprocess.run(["docker", "image", "inspect", args.image], capture_output=True).returncode:
            found.append(f"docker has no image {args.image} here")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        found.append("no GPU: nvidia-smi is not on PATH (this bench needs an NVIDIA GPU node)")
    else:
        listed = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        if listed.returncode or not listed.stdout.strip():
            found.append(f"no GPU: nvidia-smi lists none ({(listed.stderr or listed.stdout).strip()[:200]})")
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dataset is None:
        # `make bench` runs every bench: without a model to load there is nothing to measure, not a failure.
        print("gpu_live: skipped: no --dataset/--model (GPU_LIVE_DATASET/GPU_LIVE_MODEL) given; see --help",
              file=sys.stderr)  # fmt: skip
        return 0
    found = problems(args)
    if found:
        print("gpu_live: cannot run here:\n  - " + "\n  - ".join(found), file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"gpu_live: ready: {args.engine} ({args.runtime}), dataset {args.dataset}, model {args.model} "
              f"(iteration {args.iteration}), {args.runs} cold runs", file=sys.stderr)  # fmt: skip
        return 0
    sys.path.insert(0, str(BENCH_DIR))
    from _harness import Bench, log, percentile, report

    with Bench("gpu_live") as bench:
        from chat_latency import session_figures
        from django.utils import timezone

        from accounts.models import User
        from avatars.engines.registry import engine_for
        from avatars.models import Avatar, Checkpoint, DatasetCopy
        from chat.models import LiveSession
        from gpu_nodes.models import Node, NodeEngine
        from gpu_nodes.services import node_probe

        engine = engine_for(args.engine)
        workdir = args.workdir or bench.tmp / "node"
        workdir.mkdir(parents=True, exist_ok=True)
        node = Node.objects.create(
            name="bench-gpu", kind=Node.Kind.LOCAL, workdir=str(workdir), runtime=args.runtime,
            environment=str(args.environment or ""),
        )  # fmt: skip
        NodeEngine.objects.create(node=node, engine=engine.name, image=args.image or "",
                                  install_dir=str(args.install_dir or ""),
                                  environment=str(args.environment or ""))  # fmt: skip
        node = node_probe(node=node)
        if node.status != Node.Status.ONLINE:
            raise SystemExit(f"gpu_live: the node probe failed: {node.last_error}")
        gpus = [gpu for gpu in node.gpus.all() if not gpu.is_cpu]
        if not gpus:
            raise SystemExit("gpu_live: the node probe found no GPU")
        owner = User.objects.create_user("bench")
        avatar = Avatar.objects.create(
            owner=owner, name="Bench", slug="bench-gpu", engine=engine.name, status=Avatar.Status.TRAINED,
            video="x.mp4", consent_given_at=timezone.now(), consent_given_by=owner, consent_statement="bench",
        )  # fmt: skip
        DatasetCopy.objects.create(avatar=avatar, node=node, path=str(args.dataset), complete=True)
        checkpoint = Checkpoint.objects.create(avatar=avatar, node=node, stage=engine.renderable_stage,
                                               iteration=args.iteration, path=str(args.model))  # fmt: skip
        started = time.monotonic()
        figures = session_figures(bench, checkpoint, args.runs)
        session = LiveSession.objects.filter(checkpoint=checkpoint).order_by("pk").last()
        log(f"done in {time.monotonic() - started:.1f} s")
        value, baseline = figures["warm"], figures["cold"]
        report(
            bench="gpu_live", value=round(value, 3), unit="s", baseline=round(baseline, 3),
            baseline_name="cold session: start, model load, first piece", ratio=round(value / baseline, 4),
            warm_p90=round(percentile(figures["warm_all"], 90), 3), cold_all=figures["cold_all"],
            load_s=session.load_seconds if session else None, engine=engine.name, runtime=args.runtime,
            gpu=f"{gpus[0].name} ({gpus[0].memory_total_mb} MB)", runs=args.runs,
            load_at_start=bench.load_at_start,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
