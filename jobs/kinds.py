"""What each kind of job runs. A kind is a small function from a Job to an engine command and the parser
that reads its console; the runner does everything else (placement, streaming, progress, lifecycle)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from gpu_nodes.connections import NodeConnection
from gpu_nodes.runtime import Invocation

from .console import ConsoleParser
from .models import Job


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

    label: str  # what pages, the admin and notices call a job of this kind ("Training")
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
    # In-worker work a plan's kind needs done before its plan is built: called in the worker's own process
    # with the claimed job and the same context as ``run`` (should_stop(), log()), under the job's
    # heartbeat, cancel and time limit; before the plan because the plan reads what it makes (a video
    # from text: the speech, made next to the TTS model the worker loaded once, whose length sets the
    # render's frames: videos/job_kind.py). Returns nothing; a ServiceError fails the job with its message.
    before_plan: Callable[[Job, object], None] | None = None
    # Whether the job runs its avatar's engine, so placement must find a node that has the engine and a
    # GPU with the memory it needs (jobs/services.py). None: every job with an avatar does.
    uses_engine: Callable[[Job], bool] | None = None
    # Whether the job holds a GPU/CPU slot of its node while it runs. False: placement only picks its node
    # (queue) and the slot stays free for others, e.g. a chat reply rendered by a live session, whose GPU
    # memory is admitted by the session itself (chat/live.py). None: every job holds one.
    holds_slot: Callable[[Job], bool] | None = None
    # What the job works on, for its pages: (label, URL), e.g. ("Video #5", "/videos/5/"); None when gone.
    subject: Callable[[Job], tuple[str, str] | None] | None = None
    # How much of the avatar's engine the job runs on a GPU, which sets the GPU memory placement asks for
    # (``Engine.gpu_mb``): "train" (preprocessing, training: ``Engine.train_gpu_mb``), "render" (a render
    # of the trained model: ``Engine.render_gpu_mb``), or None (no engine on a GPU: the job may take any
    # slot, a CPU one included; e.g. the evaluation runs our own numpy/OpenCV script).
    gpu_work: Literal["train", "render"] | None = None


def job_folder(job: Job) -> PurePosixPath:
    return PurePosixPath(job.node.workdir) / "jobs" / str(job.pk)


KINDS: dict[str, KindSpec] = {}


def register(kind: str, spec: KindSpec) -> None:
    """Apps add their kinds from ``AppConfig.ready()``, so the job machinery knows nothing of engines."""
    KINDS[kind] = spec


def kind_spec(kind: str) -> KindSpec:
    return KINDS[kind]


def kind_label(kind: str) -> str:
    """What pages call a job of ``kind``: its registered label, or the raw name for a kind no installed app
    registers (a row left by an app since removed), so such a row still shows."""
    spec = KINDS.get(kind)
    return spec.label if spec is not None else kind


def public_kinds() -> list[str]:
    """The kinds anyone may submit as a raw job."""
    return [kind for kind, spec in KINDS.items() if spec.public]
