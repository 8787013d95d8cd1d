"""What each kind of job runs. A kind is a small function from a Job to an engine command and the parser
that reads its console; the runner does everything else (placement, streaming, progress, lifecycle)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from avatars.engines.console import ConsoleParser
from avatars.engines.gaussiantalker.parsers import TrainParser
from core.params import (
    DEMO_COARSE_ITERATIONS,
    DEMO_FAIL_AT,
    DEMO_ITERATIONS,
    DEMO_SAVE_EVERY,
    DEMO_SECONDS,
    reject_unknown,
)
from gpu_nodes.connections import NodeConnection
from gpu_nodes.models import Node
from gpu_nodes.runtime import Invocation, wrap

from .models import Job

# The demo engine's node-side scripts (they run on the node, never in the platform).
DEMO_ENGINE_DIR = Path(__file__).resolve().parent.parent / "avatars" / "engines" / "demo" / "node"


@dataclass(frozen=True)
class Plan:
    invocation: Invocation
    parser: ConsoleParser
    outputs: dict[str, str]  # what the job leaves on the node, by name
    # (file, path on the node) put there before the start; a file is a Path on this machine or a str naming
    # a media file (core/media.py local_path).
    uploads: tuple[tuple[Path | str, str], ...] = ()
    collect: tuple[tuple[str, str], ...] = ()  # (path on the node, file name) brought back after success
    # After a clean exit: check what the engine left (None = fine, else the error), then read results.
    # Engines' exit codes cannot always be trusted (GaussianTalker's data_utils/process.py runs its stages
    # through os.system and ignores their status, e.g. :24; docs/engines.md).
    prepare: Callable[[NodeConnection], None] | None = None  # after the uploads, before the start
    verify: Callable[[NodeConnection], str | None] | None = None
    finish: Callable[[NodeConnection], dict] | None = None
    # Folders on the node removed once the job succeeded and its files are back (scratch space; a failed
    # job's folder stays for a look at what went wrong).
    cleanup: tuple[str, ...] = ()


@dataclass(frozen=True)
class KindSpec:
    """What the job machinery needs to know of one kind of job.

    The contract: ``clean(params, owner=...)`` turns what was submitted into what is stored, resolving
    every id it carries through the owner's own selectors (another user's id is "not found", exactly like
    an id that does not exist), and raises ServiceError otherwise. The plan (or ``run``) re-checks the
    objects it loads against ``job.owner``. Only ``public`` kinds may be submitted as raw jobs
    (``/api/jobs/``, the jobs page); every other kind is created by its own service, which checked
    ownership and the state of what it works on before submitting."""

    label: str
    needs_gpu: bool
    plan: Callable[[Job], Plan] | None  # None for kinds that ``run`` in the worker
    # The submitted params → the stored ones, for this owner; ServiceError when invalid or not theirs.
    clean: Callable[..., dict]
    public: bool = False
    after: Callable[[Job], None] | None = None  # once the job has ended, whatever the outcome
    # Node ids to try first when placing the job (those that hold its data), best first.
    prefer: Callable[[Job], list[int]] | None = None
    # Work done in the worker's own process instead of as a command on the node (a chat reply: next to the
    # models the worker loaded once). Called with the claimed job and its context (jobs.runner.InWorker:
    # should_stop(), log()); returns the job's result, with "error" when it failed.
    run: Callable[[Job, object], dict] | None = None
    # Whether the job runs its avatar's engine, so placement must find a node that has the engine and a
    # GPU with the memory it needs (jobs/services.py). None: every job with an avatar does.
    uses_engine: Callable[[Job], bool] | None = None
    # What the job works on, for its pages: (label, URL), e.g. ("Video #5", "/videos/5/"); None when gone.
    subject: Callable[[Job], tuple[str, str] | None] | None = None


def job_folder(job: Job) -> PurePosixPath:
    return PurePosixPath(job.node.workdir) / "jobs" / str(job.pk)


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


KINDS: dict[str, KindSpec] = {}


def register(kind: str, spec: KindSpec) -> None:
    """Apps add their kinds from ``AppConfig.ready()``, so the job machinery knows nothing of engines."""
    KINDS[kind] = spec


def kind_spec(kind: str) -> KindSpec:
    return KINDS[kind]


def public_kinds() -> list[str]:
    """The kinds anyone may submit as a raw job."""
    return [kind for kind, spec in KINDS.items() if spec.public]


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


register(
    Job.Kind.DEMO_TRAIN,
    KindSpec(label="Demo training (not a real model)", needs_gpu=False, plan=_demo_train,
             clean=clean_demo_train, public=True),
)  # fmt: skip
