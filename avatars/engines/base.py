"""What an engine plug-in is: the facts and the steps every engine gives the platform.

An engine is one package under ``avatars/engines/<name>/`` whose ``ENGINE`` object subclasses
:class:`Engine`, registered with one line in ``registry.py``. The platform (job kinds, pipeline, videos,
chat, pages) asks that object and never compares an avatar's engine to a name.

What an engine returns are :class:`Step` values — a command line and its parser, plus what to check,
read and bring back on the node — which ``avatars/job_kinds.py`` wraps for the node's runtime. Engines
import nothing of the job machinery, so the registry can be imported by ``avatars/models.py``.

Node-side scripts (standard library, copied to ``<workdir>/engines/<path>`` and run there by the node's
``python3``) live in ``node/`` folders: ``avatars/engines/node/`` for those every engine uses,
``avatars/engines/<name>/node/`` for an engine's own.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from gpu_nodes.models import Node
from gpu_nodes.node_engines import node_engine_dir
from jobs.console import ConsoleParser
from jobs.kinds import KINDS

from .console import PreprocessTask
from .shell import run_name, validate_name

if TYPE_CHECKING:
    from gpu_nodes.connections import NodeConnection

ENGINES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Weight:
    """A weight file the engine's upstream code loads, for a node self-test to look for.

    ``path`` is relative to ``root``: ``"repo"`` (the engine's repository root, ``Engine.repo_root`` in its
    image or the bare install folder) or ``"home"`` (the home folder of the user the engine runs as:
    library caches such as ``.tensorflow/models``). ``source`` is the upstream ``file:line`` that loads it."""

    path: str
    root: str
    source: str

    def __post_init__(self) -> None:
        if self.root not in ("repo", "home"):
            raise ValueError(f"A weight's root is 'repo' or 'home', not {self.root!r}.")


@dataclass(frozen=True)
class TrainingPhase:
    """One stage of a training, in order: its stage key (the parser's), how many iterations it runs and what
    it does, in a person's words (the avatar page's chart marks where one hands over to the next)."""

    stage: str
    iterations: int
    note: str


@dataclass(frozen=True)
class Step:
    """One run of an engine on a node: the command (in ``cwd``, with ``env``), the parser that reads its
    console, and what goes with it. The job kind wraps ``argv`` for the node's runtime."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    parser: ConsoleParser
    outputs: dict[str, str] = field(default_factory=dict)  # what it leaves on the node, by name
    uploads: tuple[tuple[Path, str], ...] = ()  # (local file, path on the node), put there first
    prepare: Callable[[NodeConnection], None] | None = None  # after the uploads, before the start
    verify: Callable[[NodeConnection], str | None] | None = None  # after a clean exit: None, or the error
    finish: Callable[[NodeConnection], dict] | None = None  # the job's result, read on the node
    collect: tuple[tuple[str, str], ...] = ()  # (path on the node, file name) brought back


@dataclass(frozen=True)
class SpeechSteps:
    """The engine's part of turning one WAV into a video of the avatar saying it (videos/job_kind.py
    ``speech_render`` adds the step markers and the web encode): named commands run in order, each
    step's share of the progress (``encode`` included), and the parser of the ``render`` step."""

    chain: list[tuple[str, list[str]]]
    shares: dict[str, float]
    cwd: str
    env: dict[str, str]
    scripts: tuple[tuple[Path, str], ...]
    parser: ConsoleParser
    engine_video: str  # the engine's own result video, which the encode reads
    intermediate: tuple[str, ...] = ()  # folders removed right after the encode


Checkpoints = list[tuple[str, int, str, int]]  # (stage, iteration, path, size in bytes)


def scripts_on_node(job, *names: str) -> tuple[str, list[str], tuple[tuple[Path, str], ...]]:
    """The interpreter and the node paths of our node-side scripts (``names``: paths under
    ``avatars/engines``), with the uploads that put them at ``<workdir>/engines/<name>``. On this machine,
    for a bare local node, they run in place."""
    if job.node.kind == Node.Kind.LOCAL and job.node.runtime == Node.Runtime.BARE:
        return sys.executable, [str(ENGINES_DIR / name) for name in names], ()
    remote = [str(PurePosixPath(job.node.workdir) / "engines" / name) for name in names]
    return (
        "python3",
        remote,
        tuple((ENGINES_DIR / name, path) for name, path in zip(names, remote, strict=True)),
    )


def dataset_dir(slug: str, workdir: str) -> PurePosixPath:
    """An avatar's preprocessed dataset on a node: ``<workdir>/data/<slug>`` (every engine's layout)."""
    return PurePosixPath(workdir) / "data" / validate_name(slug, "avatar name")


class Engine(ABC):
    """An engine plug-in. Subclasses set the class attributes and implement the steps: the abstract methods
    below (a plug-in missing one cannot be instantiated); the other methods are defaults to override."""

    # --- identity ---------------------------------------------------------------------------------------
    name: ClassVar[str]  # the registry key, stored in Avatar.engine
    label: ClassVar[str]  # shown in forms and pages
    stand_in: ClassVar[bool] = False  # True: not a real model (the demo); pages say so
    training_note: ClassVar[str] = ""  # one sentence for the avatar page about how it trains

    # --- runtime facts ----------------------------------------------------------------------------------
    repo_root: ClassVar[str | None] = None  # the repository root inside its image, e.g. "/GaussianTalker"
    default_image: ClassVar[str | None] = None  # its image's default name (docker/engines/<name>/)
    needs_gpu: ClassVar[bool] = True  # False: runs on a CPU slot
    train_gpu_mb: ClassVar[int] = 0  # GPU memory a preprocessing or training job needs
    render_gpu_mb: ClassVar[int] = 0  # GPU memory a validation render, video or chat reply needs
    session_gpu_mb: ClassVar[int] = 0  # GPU memory a live render session holds while it is warm
    live_backend: ClassVar[str | None] = None  # its live session backend, a path under avatars/engines
    extensions: ClassVar[tuple[str, ...]] = ()  # import names of its compiled extensions
    weights: ClassVar[tuple[Weight, ...]] = ()  # every weight file upstream loads

    # --- data layout --------------------------------------------------------------------------------------
    preprocess_tasks: ClassVar[tuple[PreprocessTask, ...]] = ()  # process.py's tasks, in order
    model_folder: ClassVar[str] = "output"  # <workdir>/<model_folder>/<slug>/run-<id>
    renderable_stage: ClassVar[str] = "fine"  # the Checkpoint.stage its renders load
    plays_own_poses: ClassVar[bool] = False  # True: a render drives its own poses (no ping-pong view)
    node_scripts: ClassVar[tuple[str, ...]] = ()  # paths under avatars/engines of the scripts it ships

    def __repr__(self) -> str:
        return f"<engine {self.name}>"

    # --- facts the platform asks ------------------------------------------------------------------------

    def gpu_mb(self, kind: str) -> int:
        """GPU memory a job of ``kind`` (a registered job kind) needs with this engine: 0 when none. The kind
        says how much of the engine it runs (``jobs.kinds.KindSpec.gpu_work``); the engine, how much memory
        that takes."""
        spec = KINDS.get(kind)
        if not self.needs_gpu or spec is None or spec.gpu_work is None:
            return 0  # e.g. the evaluation runs our numpy/OpenCV script
        return self.train_gpu_mb if spec.gpu_work == "train" else self.render_gpu_mb

    def session_memory_mb(self) -> int:
        """GPU memory one live session of this engine holds: ``session_gpu_mb``, or the setting
        ``LIVE_SESSION_GPU_MB[<name>]`` where operators (or tests) measured another figure."""
        from django.conf import settings

        return int(getattr(settings, "LIVE_SESSION_GPU_MB", {}).get(self.name, self.session_gpu_mb))

    def live_config(self, *, checkpoint, dataset: PurePosixPath, model: PurePosixPath) -> dict[str, Any]:
        """What its live backend loads once (``--config`` of live_session.py) for ``checkpoint``, whose
        model folder is ``model``, with the avatar's dataset ``dataset`` on the node."""
        raise NotImplementedError(f"{self.label} has no live render session.")

    def env(self) -> dict[str, str]:
        """Environment for the engine's runs (``wrap(env=...)``): see ``shell.py`` on unbuffered output."""
        return {"PYTHONUNBUFFERED": "1"}

    def cwd(self, job) -> str:
        """Where its commands run on ``job``'s node (``cwd_on``)."""
        return self.cwd_on(job.node)

    def cwd_on(self, node: Node) -> str:
        """Where its commands run on ``node``: the repository root inside the image (docker), or the bare
        install (the node's NodeEngine folder, by default ``<workdir>/engines/<name>``)."""
        if node.runtime == Node.Runtime.DOCKER and self.repo_root:
            return self.repo_root
        return node_engine_dir(node, self.name)

    def stage_names(self) -> list[str]:
        return [task.stage for task in self.preprocess_tasks]

    def model_root(self, slug: str, workdir: str) -> PurePosixPath:
        """Every training run of an avatar on a node lives under this folder."""
        return PurePosixPath(workdir) / self.model_folder / validate_name(slug, "avatar name")

    def run_dir(self, slug: str, workdir: str, run: int | None) -> PurePosixPath:
        """One training run's model folder; ``run`` None: a model trained before runs had folders."""
        root = self.model_root(slug, workdir)
        return root if run is None else root / run_name(run)

    def can_render(self, checkpoint) -> bool:
        """Whether a render can load ``checkpoint`` (a Checkpoint row): the one rule for every caller."""
        return checkpoint.stage == self.renderable_stage

    def render_refusal(self, checkpoint) -> str | None:
        """None when ``checkpoint`` can render, else why not and what to choose."""
        if self.can_render(checkpoint):
            return None
        return (
            f"Checkpoint {checkpoint.stage} {checkpoint.iteration} cannot be rendered: {self.label} renders "
            f"{self.renderable_stage} checkpoints only; choose one of those (or leave the choice empty for "
            "the latest)."
        )

    # --- training settings --------------------------------------------------------------------------------

    def training_params(self, *, iterations: int | None, seconds: float | None = None) -> dict[str, Any]:
        """What a training job carries beyond the avatar, checked: ValueError says what to choose."""
        self.recipe({"iterations": iterations})
        return {} if iterations is None else {"iterations": iterations}

    @abstractmethod
    def recipe(self, params: dict) -> dict[str, Any]:
        """The stages a training with ``params`` runs, as settings to show (the avatar page's runs)."""

    def training_phases(self, params: dict) -> list[TrainingPhase]:
        """The stages a training with ``params`` runs, in the order its progress counts them (the training's
        progress 0..1 spans their iterations end to end); [] when the engine does not say."""
        return []

    # --- the steps --------------------------------------------------------------------------------------

    def expected_artifacts(self, *, blinks: bool) -> list[str]:
        """What a complete preprocessing leaves in the dataset folder (glob patterns)."""
        return [pattern for task in self.preprocess_tasks for pattern in task.produces]

    @abstractmethod
    def preprocess(self, job, *, data: PurePosixPath, estimate_blinks: bool) -> Step:
        """Preprocess the avatar's uploaded video into the dataset folder ``data`` on the job's node."""

    @abstractmethod
    def train(self, job, *, data: PurePosixPath, run: int) -> Step:
        """Train on the dataset ``data`` into the folder of training ``run`` (``run_dir``)."""

    @abstractmethod
    def list_checkpoints(self, conn: NodeConnection, model: PurePosixPath) -> dict:
        """``{"checkpoints": [(stage, iteration, path, size), …]}`` for a run's model folder on the node."""

    def trained_something(self, conn: NodeConnection, model: PurePosixPath) -> str | None:
        """A training's check after a clean exit: None when the run's folder holds a checkpoint that can
        render, else the error (an exit code of 0 does not prove a model was saved)."""
        stages = {stage for stage, *_ in self.list_checkpoints(conn, model)["checkpoints"]}
        if self.renderable_stage not in stages:
            return f"The training saved no {self.renderable_stage} checkpoint in {model}: nothing can render."
        return None

    @abstractmethod
    def validation_render(self, job, *, data: PurePosixPath, run: int | None, iteration: int) -> Step:
        """Render the held-out val split with the checkpoint ``iteration`` of ``run``; the result video is
        collected as ``validation<suffix>``."""

    @abstractmethod
    def validation_video(self, *, model: PurePosixPath, iteration: int) -> str:
        """Where :meth:`validation_render` leaves its video (the evaluation scores it)."""

    @abstractmethod
    def speech_steps(
        self, job, *, checkpoint, dataset: PurePosixPath, folder: PurePosixPath, wav: PurePosixPath,
        frames: int, batch: int, pose_start: int,
    ) -> SpeechSteps:  # fmt: skip
        """The engine's commands that render ``wav`` (``frames`` 25-fps frames) with ``checkpoint`` in the
        job's ``folder``."""
