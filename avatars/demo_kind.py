"""The demo engine's own job kind: a demo training on no one's data (the CPU stand-in run as a raw job)."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from core.params import (
    DEMO_COARSE_ITERATIONS,
    DEMO_FAIL_AT,
    DEMO_ITERATIONS,
    DEMO_SAVE_EVERY,
    DEMO_SECONDS,
    reject_unknown,
)
from gpu_nodes.models import Node
from gpu_nodes.runtime import wrap
from jobs.kinds import KindSpec, Plan, job_folder, register
from jobs.models import Job

from .engines.gaussiantalker.parsers import TrainParser

# The kind's name: a demo training submitted as a raw job (the jobs page, ``/api/jobs/``).
DEMO_TRAIN = "demo_train"

DEMO_ENGINE_DIR = Path(__file__).resolve().parent / "engines" / "demo" / "node"


def _demo_engine(job: Job) -> tuple[list[str], tuple[tuple[Path, str], ...]]:
    """How to run the demo engine on the job's node: in place on this machine, or copied to an SSH node
    (it is one standard-library file) and run by the node's ``python3``."""
    script = DEMO_ENGINE_DIR / "train.py"
    if job.node.kind == Node.Kind.LOCAL:
        return [sys.executable, "-u", str(script)], ()
    remote = str(PurePosixPath(job.node.workdir) / "engines" / "demo" / "node" / "train.py")
    return ["python3", "-u", remote], ((script, remote),)


def _demo_train(job: Job) -> Plan:
    params = job.params
    folder = job_folder(job)
    model_path = folder / "output" / "demo"
    engine, uploads = _demo_engine(job)
    argv = [
        *engine,
        "-s", str(folder / "data" / "demo"),
        "--model_path", str(model_path),
        "--configs", "arguments/64_dim_1_transformer.py",
        "--iterations", str(params["iterations"]),
        "--coarse_iterations", str(params["coarse_iterations"]),
        "--seconds", str(params["seconds"]),
        "--save_every", str(params["save_every"]),
        # Parallel trainings on one node need their own viewer port (GaussianTalker's train.py:381,
        # gaussian_renderer/network_gui.py:30).
        "--port", str(6009 + (job.gpu.index + 1 if job.gpu else 0)),
    ]  # fmt: skip
    if params.get("fail_at"):
        argv += ["--fail_at", str(params["fail_at"])]
    if params.get("stamp_lines"):
        argv.append("--stamp_lines")
    invocation = wrap(
        node=job.node,
        gpu=job.gpu,
        argv=argv,
        name=job.container_name,
        mounts=[job.node.workdir],
        cwd=str(folder),
    )
    parser = TrainParser(coarse_iterations=params["coarse_iterations"], iterations=params["iterations"])
    return Plan(
        invocation=invocation,
        parser=parser,
        outputs={"model_path": str(model_path)},
        uploads=uploads,
        collect=((str(model_path / "console.log"), "console.log"),),
    )


def clean_demo_train(params: dict, *, owner) -> dict:
    """A demo training's settings; it works on no one's data, so anyone may submit it."""
    cleaned = {
        "seconds": DEMO_SECONDS.clean(params.get("seconds")),
        "iterations": DEMO_ITERATIONS.clean(params.get("iterations")),
        "coarse_iterations": DEMO_COARSE_ITERATIONS.clean(params.get("coarse_iterations")),
        "save_every": DEMO_SAVE_EVERY.clean(params.get("save_every")),
    }
    if params.get("fail_at"):
        cleaned["fail_at"] = DEMO_FAIL_AT.clean(params["fail_at"])
    if params.get("stamp_lines"):
        cleaned["stamp_lines"] = True  # the demo appends the wall clock to bar lines (latency benchmarks)
    reject_unknown(params, set(cleaned) | {"fail_at", "stamp_lines", "node"}, "a demo training")
    return cleaned


def register_kind() -> None:
    register(
        DEMO_TRAIN,
        KindSpec(label="Demo training", plan=_demo_train,
                 clean=clean_demo_train, public=True),
    )  # fmt: skip
