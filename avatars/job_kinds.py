"""The avatar pipeline's job kinds: what preprocessing and training run on a node, and what follows.

Kept beside the avatars (jobs/kinds.py registers them) so the job machinery knows nothing of engines."""

from __future__ import annotations

import functools
import json
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from django.conf import settings

from core.params import DEMO_SECONDS, TRAIN_ITERATIONS, Number, object_id, reject_unknown
from gpu_nodes.connections import NodeConnection, NodeError
from gpu_nodes.models import Node
from gpu_nodes.runtime import wrap
from jobs.kinds import KindSpec, Plan, job_folder, register
from jobs.models import Job
from talkforge.errors import ServiceError

from . import pipeline, transfer
from .engines import commands, gaussiantalker, synctalk
from .engines.console import EvaluateParser
from .models import Avatar
from .selectors import avatars_visible_to

ENGINES = Path(__file__).resolve().parent / "engines"
PREPROCESS_TASKS = range(1, 10)
CONTAINER_ROOT = {Avatar.Engine.GAUSSIANTALKER: "/GaussianTalker", Avatar.Engine.SYNCTALK: "/SyncTalk"}


def python_and_scripts(job: Job, *names: str) -> tuple[str, list[str], tuple[tuple[Path, str], ...]]:
    """The interpreter and the node paths of our standard-library scripts (engines/<name>), with the uploads
    that put them there. On this machine they run in place."""
    if job.node.kind == Node.Kind.LOCAL and job.node.runtime == Node.Runtime.BARE:
        return sys.executable, [str(ENGINES / name) for name in names], ()
    remote = [str(PurePosixPath(job.node.workdir) / "engines" / name) for name in names]
    return "python3", remote, tuple((ENGINES / name, path) for name, path in zip(names, remote, strict=True))


def engine_cwd(job: Job, engine: str) -> str:
    if job.node.runtime == Node.Runtime.DOCKER:
        return CONTAINER_ROOT[engine]
    return str(PurePosixPath(job.node.workdir) / "engines" / engine)


# Prints each glob pattern (arguments after the folder) that matches nothing there. One command for all
# patterns, so checking a dataset costs one round trip to the node.
_UNMATCHED = """cd "$1" || exit 3
shift
for pattern do
  found=no
  for file in $pattern; do [ -e "$file" ] && found=yes; break; done
  [ "$found" = yes ] || printf '%s\\n' "$pattern"
done"""


def _missing(conn: NodeConnection, folder: PurePosixPath, patterns: list[str]) -> list[str]:
    result = conn.run(["sh", "-c", _UNMATCHED, "sh", str(folder), *patterns], timeout=120)
    if result.returncode == 3:
        return ["the dataset folder itself"]
    return result.output.split()


def preprocess_plan(job: Job) -> Plan:
    avatar = job.avatar
    data = pipeline.dataset_dir(avatar, job.node.workdir)
    video = data / f"{avatar.slug}.mp4"
    uploads = [(pipeline.local_video(avatar), str(video))]
    if avatar.au_csv:
        uploads.append((Path(settings.MEDIA_ROOT) / avatar.au_csv, str(data / "au.csv")))
    python, (process, blinks), scripts = python_and_scripts(job, "demo/process.py", "blinks.py")
    data_root = str(data.parent)
    env: dict[str, str] = {}
    if avatar.engine == Avatar.Engine.SYNCTALK:
        preprocess = commands.synctalk_preprocess(name=avatar.slug, data_root=data_root)
        cwd, env = engine_cwd(job, avatar.engine), commands.engine_env(avatar.engine)
        parser, tasks = synctalk.PreprocessParser(), range(1, 11)
        expected = [name for task in tasks for name in synctalk.expected_artifacts(task)]
    else:
        if avatar.engine == Avatar.Engine.DEMO:
            preprocess, cwd = [python, "-u", process, str(video)], str(data)
        else:
            preprocess = commands.gaussiantalker_preprocess(data_root=data_root, name=avatar.slug)
            cwd, env = engine_cwd(job, avatar.engine), commands.engine_env(avatar.engine)
        parser, tasks = gaussiantalker.PreprocessParser(), PREPROCESS_TASKS
        expected = [name for task in tasks for name in gaussiantalker.expected_artifacts(task)]
    # GaussianTalker reads blinks from au.csv: without an uploaded one they are estimated next to the data
    # from the landmarks of task 7 (SyncTalk uses its blendshapes instead).
    needs_blinks = avatar.engine != Avatar.Engine.SYNCTALK
    if needs_blinks and not avatar.au_csv:
        argv = pipeline.shell_and(preprocess, [python, "-u", blinks, str(data)])
    else:
        argv = preprocess
    if needs_blinks:
        expected.append("au.csv")

    def verify(conn: NodeConnection) -> str | None:
        # process.py's exit code cannot be trusted (spec §0): every task's files must be there.
        missing = _missing(conn, data, expected)
        if missing:
            produced = ", ".join(missing[:8])
            return f"Preprocessing ended without producing {produced}: the log shows which stage failed."
        return None

    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=cwd, env=env),
        parser=parser,
        outputs={"dataset": str(data)},
        uploads=(*scripts, *uploads),
        verify=verify,
        finish=lambda conn: {
            "stages": {stage: "done" for stage in _stage_names(avatar.engine, tasks)},
            "size_bytes": folder_bytes(conn, data),
        },
    )  # fmt: skip


def folder_bytes(conn: NodeConnection, folder: PurePosixPath) -> int:
    """What a folder on the node takes (``du -sk``; 0 when it cannot be measured): counted in the owner's
    storage (accounts/quotas.py)."""
    try:
        result = conn.run(["du", "-sk", str(folder)], timeout=300)
        return int(result.output.split()[0]) * 1024 if result.returncode == 0 else 0
    except (NodeError, ValueError, IndexError):
        return 0


def _stage_names(engine: str, tasks) -> list[str]:
    table = (
        synctalk.SYNCTALK_TASKS if engine == Avatar.Engine.SYNCTALK else gaussiantalker.GAUSSIANTALKER_TASKS
    )
    return [entry.stage for entry in table if entry.number in tasks]


CHECKPOINT_DIR = re.compile(r"^(coarse_iteration|iteration)_(-?\d+)$")


def _list_checkpoints(conn: NodeConnection, model: PurePosixPath) -> dict:
    """GaussianTalker keeps point_cloud/{coarse_,}iteration_N/ (spec §1.5): each with its size on disk."""
    listing = conn.run(["sh", "-c", f"du -sb {shlex.quote(str(model / 'point_cloud'))}/*/"], timeout=120)
    checkpoints = []
    for line in listing.output.splitlines():
        size, _, path = line.partition("\t")
        match = CHECKPOINT_DIR.match(PurePosixPath(path.rstrip("/")).name)
        if match and size.isdigit():
            stage = "coarse" if match.group(1) == "coarse_iteration" else "fine"
            checkpoints.append((stage, int(match.group(2)), path.rstrip("/"), int(size)))
    return {"checkpoints": checkpoints}


def train_plan(job: Job) -> Plan:
    avatar, params = job.avatar, job.params
    data = pipeline.dataset_dir(avatar, job.node.workdir)
    model = pipeline.model_dir(avatar, job.node.workdir)
    port = 6009 + (job.gpu.index + 1 if job.gpu else 0)  # parallel trainings need their own viewer port
    scripts, env, derive = (), {}, None
    listing = _list_checkpoints
    if avatar.engine == Avatar.Engine.DEMO:
        python, (train,), scripts = python_and_scripts(job, "demo/train.py")
        iterations = params.get("iterations", 1000)
        coarse = max(10, iterations // 2)
        argv = [python, "-u", train, "-s", str(data), "--model_path", str(model),
                "--iterations", str(iterations), "--coarse_iterations", str(coarse),
                "--seconds", str(params.get("seconds", 20)), "--save_every", str(max(1, iterations // 4)),
                "--port", str(port)]  # fmt: skip
        parser, cwd = gaussiantalker.TrainParser(coarse_iterations=coarse, iterations=iterations), str(data)
    elif avatar.engine == Avatar.Engine.GAUSSIANTALKER:
        cwd, env = engine_cwd(job, avatar.engine), commands.engine_env(avatar.engine)
        config = commands.GAUSSIANTALKER_CONFIG
        if params.get("iterations"):
            # The config overrides --iterations (spec §1.5): train with a copy that says the new count.
            config = str(model.parent / f"{avatar.slug}-config.py")
            derive = _derived_config(job, cwd, config, params["iterations"])
        argv = commands.gaussiantalker_train(data_root=str(data.parent), output_root=str(model.parent),
                                             name=avatar.slug, config=config, port=port)  # fmt: skip
        parser = gaussiantalker.TrainParser(
            iterations=params.get("iterations") or gaussiantalker.FINE_ITERATIONS
        )
    else:
        # SyncTalk resumes from its workspace's latest checkpoint (main.py's default --ckpt latest).
        cwd, env = engine_cwd(job, avatar.engine), commands.engine_env(avatar.engine)
        iters = params.get("iterations") or commands.SYNCTALK_HEAD_ITERS
        model = PurePosixPath(job.node.workdir) / "model" / avatar.slug
        argv = commands.synctalk_train(name=avatar.slug, workspace=avatar.slug, iters=iters,
                                       data_root=str(data.parent), model_root=str(model.parent))  # fmt: skip
        parser, listing = synctalk.TrainParser(iters=iters), _list_synctalk_checkpoints
    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=cwd, env=env),
        parser=parser,
        outputs={"model_path": str(model)},
        uploads=scripts,
        prepare=lambda conn: _before_training(job, conn, derive),
        verify=None if avatar.engine == Avatar.Engine.SYNCTALK else _has_cfg_args(model),
        finish=lambda conn: listing(conn, model),
    )  # fmt: skip


def _before_training(job: Job, conn: NodeConnection, derive) -> None:
    # Placed on a node without the data: copy it from one that has it (not preprocessing it again).
    transfer.dataset_ensure(job, conn)
    if derive is not None:
        derive(conn)


def _has_cfg_args(model: PurePosixPath):
    # render.py cannot load a model without cfg_args (spec §1.6): a training without it is no model.
    return lambda conn: None if conn.exists(str(model / "cfg_args")) else "Training left no cfg_args."


def _derived_config(job: Job, engine_root: str, target: str, iterations: int):
    def prepare(conn: NodeConnection) -> None:
        base = f"{engine_root}/{commands.GAUSSIANTALKER_CONFIG}"
        if job.node.runtime == Node.Runtime.DOCKER:
            read = ["docker", "run", "--rm", "--entrypoint", "cat", job.node.docker_image, base]
        else:
            read = ["cat", base]
        result = conn.run(read, timeout=300)
        if result.returncode != 0:
            raise NodeError(f"Could not read GaussianTalker's config {base}: {result.output.strip()[:300]}")
        try:
            text = commands.derived_config_text(result.output, iterations)
        except ValueError as error:
            raise NodeError(str(error)) from None
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "config.py"
            local.write_text(text)
            conn.put(local, target)

    return prepare


SYNCTALK_CHECKPOINT = re.compile(r"^ngp_ep(\d+)\.pth$")


def _list_synctalk_checkpoints(conn: NodeConnection, workspace: PurePosixPath) -> dict:
    """SyncTalk keeps checkpoints/ngp_ep<EEEE>.pth, one per epoch (spec §2.4)."""
    folder = shlex.quote(str(workspace / "checkpoints"))
    listing = conn.run(["sh", "-c", f"du -sb {folder}/ngp_ep*.pth"], timeout=120)
    checkpoints = []
    for line in listing.output.splitlines():
        size, _, path = line.partition("\t")
        match = SYNCTALK_CHECKPOINT.match(PurePosixPath(path).name)
        if match and size.isdigit():
            checkpoints.append(("epoch", int(match.group(1)), path, int(size)))
    return {"checkpoints": checkpoints}


def render_validation_plan(job: Job) -> Plan:
    """Render the held-out val split with one checkpoint (``--skip_train``; the latest unless the job names
    an iteration) and bring the result video back. Spec §1.6–1.7: the test set's video is named after the
    raw ``--iteration``."""
    avatar = job.avatar
    data = pipeline.dataset_dir(avatar, job.node.workdir)
    model = pipeline.model_dir(avatar, job.node.workdir)
    iteration = job.params.get("iteration", -1)
    scripts, env = (), {}
    if avatar.engine == Avatar.Engine.DEMO:
        python, (render,), scripts = python_and_scripts(job, "demo/render.py")
        argv = [python, "-u", render, "-s", str(data), "--model_path", str(model),
                "--iteration", str(iteration), "--batch", "128", "--skip_train"]  # fmt: skip
        cwd = str(data)
    else:
        cwd, env = engine_cwd(job, avatar.engine), commands.engine_env(avatar.engine)
        argv = commands.gaussiantalker_validation_render(
            data_root=str(data.parent), output_root=str(model.parent), name=avatar.slug, iteration=iteration
        )
    video = gaussiantalker.render_output_path(str(model), "test", iteration)
    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=cwd, env=env),
        parser=gaussiantalker.RenderParser(sets=("test",)),
        outputs={"video": video},
        uploads=scripts,
        verify=lambda conn: None if conn.exists(video) else f"render.py left no validation video at {video}.",
        collect=((video, "validation.mov"),),
    )  # fmt: skip


def _validation_video(job: Job) -> str:
    """The render of the val split to score: render.py's test set (GaussianTalker, demo), or the video
    SyncTalk's training wrote when it tested its val split, ``results/ngp_ep<EEEE>.mp4`` (spec §2.4–2.5)."""
    avatar = job.avatar
    if avatar.engine == Avatar.Engine.SYNCTALK:
        workspace = PurePosixPath(job.node.workdir) / "model" / avatar.slug
        return str(workspace / "results" / f"ngp_ep{job.params['iteration']:04d}.mp4")
    model = pipeline.model_dir(avatar, job.node.workdir)
    return gaussiantalker.render_output_path(str(model), "test", job.params.get("iteration", -1))


def evaluate_plan(job: Job) -> Plan:
    """PSNR and SSIM of the validation render against the dataset's ground-truth frames, computed by our
    ``evaluate.py`` next to the data (no frames cross the network; it needs numpy and OpenCV, which both
    engines' environments have)."""
    data = pipeline.dataset_dir(job.avatar, job.node.workdir)
    video = _validation_video(job)
    report = str(job_folder(job) / "evaluation.json")
    python, (evaluate,), scripts = python_and_scripts(job, "evaluate.py")
    argv = pipeline.shell_and(
        ["mkdir", "-p", str(job_folder(job))],
        [python, "-u", evaluate, "--video", video, "--data", str(data), "--output-json", report],
    )
    cwd, env = str(data.parent), {}
    if job.avatar.engine != Avatar.Engine.DEMO:
        env = commands.engine_env(job.avatar.engine)

    def finish(conn: NodeConnection) -> dict:
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "evaluation.json"
            conn.get(report, local)
            return {"evaluation": json.loads(local.read_text())}

    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=cwd, env=env),
        parser=EvaluateParser(),
        outputs={"video": video, "report": report},
        uploads=scripts,
        verify=lambda conn: None if conn.exists(report) else f"The evaluation wrote no report at {report}.",
        finish=finish,
        cleanup=(str(job_folder(job)),),
    )  # fmt: skip


STEP_ITERATION = Number("iteration", -1, 100_000_000)


def clean_avatar_step(params: dict, *, owner) -> dict:
    """Pipeline steps carry the avatar (one of the owner's), the training settings chosen when it was
    started, and (rendering and evaluating a chosen checkpoint) its iteration."""
    reject_unknown(params, {"avatar", "iterations", "seconds", "iteration", "node"}, "an avatar job")
    avatar = object_id(params.get("avatar"), name="avatar")
    if not avatars_visible_to(owner).filter(pk=avatar).exists():
        raise ServiceError(f"Avatar {avatar} is not one of your avatars.")
    cleaned = {"avatar": avatar}
    if params.get("iterations") is not None:
        cleaned["iterations"] = TRAIN_ITERATIONS.clean(params["iterations"])
    if params.get("seconds") is not None:
        cleaned["seconds"] = DEMO_SECONDS.clean(params["seconds"])
    if params.get("iteration") is not None:
        cleaned["iteration"] = STEP_ITERATION.clean(params["iteration"])
    return cleaned


def owned_step(plan: Callable[[Job], Plan]) -> Callable[[Job], Plan]:
    """The plan re-checks what ``clean`` checked when the job was submitted: the job's avatar is the one
    its params name, and it belongs to the job's owner (a step never runs on someone else's data)."""

    @functools.wraps(plan)
    def checked(job: Job) -> Plan:
        avatar = job.avatar
        if avatar is None or avatar.pk != job.params.get("avatar") or avatar.owner_id != job.owner_id:
            raise ValueError("this job's avatar is gone or is not its owner's; start the step again")
        return plan(job)

    return checked


def data_nodes(job: Job) -> list[int]:
    """Where an avatar's step should run, best first: nodes holding its complete dataset (no copy, no
    preprocessing), then nodes holding its checkpoints, then the avatar's preferred node."""
    avatar = job.avatar
    if avatar is None:
        return []
    ranked = [*avatar.datasets.filter(complete=True).values_list("node_id", flat=True)]
    ranked += avatar.checkpoints.values_list("node_id", flat=True).distinct()
    if avatar.preferred_node_id:
        ranked.append(avatar.preferred_node_id)
    return list(dict.fromkeys(ranked))


def register_kinds() -> None:
    steps = (
        (Job.Kind.PREPROCESS, "Preprocess the training video", preprocess_plan, pipeline.after_preprocess),
        (Job.Kind.TRAIN, "Train the avatar", train_plan, pipeline.after_train),
        (Job.Kind.RENDER_VALIDATION, "Render the validation split", render_validation_plan,
         pipeline.after_render_validation),
        (Job.Kind.EVALUATE, "Evaluate against the ground truth", evaluate_plan, pipeline.after_evaluate),
    )  # fmt: skip
    for kind, label, plan, after in steps:
        spec = KindSpec(
            label=label,
            needs_gpu=False,
            plan=owned_step(plan),
            clean=clean_avatar_step,
            after=after,
            prefer=data_nodes,
        )
        register(kind, spec)
