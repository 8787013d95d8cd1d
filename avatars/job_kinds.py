"""The avatar pipeline's job kinds: what preprocessing, training, the validation render and the evaluation
run on a node, and what follows.

Kept beside the avatars (jobs/kinds.py registers them) so the job machinery knows nothing of engines;
what to run is the avatar's engine plug-in's (avatars/engines/), which returns a ``Step`` that is wrapped
here for the node's runtime.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from django.urls import reverse

from core.params import DEMO_SECONDS, TRAIN_ITERATIONS, Number, owned_id, reject_unknown
from gpu_nodes.connections import NodeConnection, NodeError
from gpu_nodes.runtime import wrap
from jobs.kinds import KindSpec, Plan, job_folder, register
from jobs.models import Job

from . import pipeline, transfer
from .engines.base import Step, scripts_on_node
from .engines.console import EvaluateParser
from .engines.shell import shell_and
from .layout import dataset_dir
from .runs import rendered_checkpoint, run_of
from .selectors import avatars_visible_to


def step_plan(job: Job, step: Step, **extra) -> Plan:
    """An engine's step as the job's plan: its command wrapped for the node's runtime; ``extra`` sets or
    replaces Plan fields (what the pipeline adds around the engine's step)."""
    fields = {
        "invocation": wrap(node=job.node, gpu=job.gpu, argv=step.argv, name=job.container_name,
                           mounts=[job.node.workdir], cwd=step.cwd, env=step.env,
                           engine=job.avatar.engine if job.avatar else None),
        "parser": step.parser, "outputs": step.outputs, "uploads": step.uploads, "prepare": step.prepare,
        "verify": step.verify, "finish": step.finish, "collect": step.collect,
    }  # fmt: skip
    return Plan(**{**fields, **extra})


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
    avatar, engine = job.avatar, job.avatar.engine_plugin
    data = dataset_dir(avatar, job.node.workdir)
    video = data / f"{avatar.slug}.mp4"
    uploads = [(avatar.video, str(video))]  # media files (core/media.py), fetched by the runner
    if avatar.au_csv:
        uploads.append((avatar.au_csv, str(data / "au.csv")))
    step = engine.preprocess(job, data=data, estimate_blinks=not avatar.au_csv)
    expected = engine.expected_artifacts(blinks=True)

    def verify(conn: NodeConnection) -> str | None:
        # process.py's exit code cannot be trusted (it runs its steps through os.system): every task's
        # files must be there.
        missing = _missing(conn, data, expected)
        if missing:
            produced = ", ".join(missing[:8])
            return f"Preprocessing ended without producing {produced}: the log shows which stage failed."
        return None

    return step_plan(
        job, step,
        outputs={"dataset": str(data)},
        uploads=(*step.uploads, *uploads),
        verify=verify,
        finish=lambda conn: {
            "stages": {stage: "done" for stage in engine.stage_names()},
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


def train_plan(job: Job) -> Plan:
    """The engine's training recipe, in the run's own model folder (``<model folder>/<slug>/run-<id>``)."""
    avatar = job.avatar
    data = dataset_dir(avatar, job.node.workdir)
    step = avatar.engine_plugin.train(job, data=data, run=run_of(job))

    def prepare(conn: NodeConnection) -> None:
        # Placed on a node without the data: copy it from one that has it (not preprocessing it again).
        transfer.dataset_ensure(job, conn)
        if step.prepare is not None:
            step.prepare(conn)

    return step_plan(job, step, prepare=prepare)


def render_validation_plan(job: Job) -> Plan:
    """Render the held-out val split with one checkpoint (the job's run and iteration) and bring the result
    video back."""
    data = dataset_dir(job.avatar, job.node.workdir)
    run, iteration = rendered_checkpoint(job)
    step = job.avatar.engine_plugin.validation_render(job, data=data, run=run, iteration=iteration)
    return step_plan(job, step)


def evaluate_plan(job: Job) -> Plan:
    """PSNR and SSIM of the validation render against the dataset's ground-truth frames, computed by our
    ``node/evaluate.py`` next to the data (no frames cross the network; it needs numpy and OpenCV, which
    both engines' environments have)."""
    avatar, engine = job.avatar, job.avatar.engine_plugin
    data = dataset_dir(avatar, job.node.workdir)
    run, iteration = rendered_checkpoint(job)
    video = engine.validation_video(
        model=engine.run_dir(avatar.slug, job.node.workdir, run), iteration=iteration
    )
    report = str(job_folder(job) / "evaluation.json")
    python, (evaluate,), scripts = scripts_on_node(job, "node/evaluate.py")
    argv = shell_and(
        ["mkdir", "-p", str(job_folder(job))],
        [python, "-u", evaluate, "--video", video, "--data", str(data), "--output-json", report],
    )

    def finish(conn: NodeConnection) -> dict:
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "evaluation.json"
            conn.get(report, local)
            return {"evaluation": json.loads(local.read_text())}

    step = Step(
        argv=argv, cwd=str(data.parent), env=engine.env(), parser=EvaluateParser(),
        outputs={"video": video, "report": report}, uploads=scripts,
        verify=lambda conn: None if conn.exists(report) else f"The evaluation wrote no report at {report}.",
        finish=finish,
    )  # fmt: skip
    return step_plan(job, step, cleanup=(str(job_folder(job)),))


STEP_ITERATION = Number("iteration", -1, 100_000_000)


def avatar_subject(job: Job) -> tuple[str, str] | None:
    """The avatar a pipeline step works on, for the job's pages (None once it is deleted)."""
    if job.avatar is None:
        return None
    return f"Avatar {job.avatar.name}", reverse("avatar-detail", args=[job.avatar_id])


def clean_avatar_step(params: dict, *, owner) -> dict:
    """Pipeline steps carry the avatar (one of the owner's), the training settings chosen when it was
    started, the training run they belong to (``run``: the train job that started it) and (rendering and
    evaluating a chosen checkpoint) its iteration."""
    reject_unknown(params, {"avatar", "iterations", "seconds", "iteration", "run", "node"}, "an avatar job")
    avatar = owned_id(
        params.get("avatar"), name="avatar", among=avatars_visible_to(owner),
        refusal="Avatar {id} is not one of your avatars.",
    )  # fmt: skip
    cleaned = {"avatar": avatar}
    if params.get("run") is not None:
        cleaned["run"] = owned_id(
            params["run"], name="run",
            among=Job.objects.filter(owner=owner, avatar_id=avatar, kind=pipeline.TRAIN),
            refusal=f"Run {{id}} is not a training of avatar {avatar}.",
        )  # fmt: skip
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
        (pipeline.PREPROCESS, "Preprocessing", "train", preprocess_plan, pipeline.after_preprocess),
        (pipeline.TRAIN, "Training", "train", train_plan, pipeline.after_train),
        (pipeline.RENDER_VALIDATION, "Validation render", "render", render_validation_plan,
         pipeline.after_render_validation),
        # The evaluation runs our numpy/OpenCV script (avatars/engines/node/evaluate.py), not the engine.
        (pipeline.EVALUATE, "Evaluation", None, evaluate_plan, pipeline.after_evaluate),
    )  # fmt: skip
    for kind, label, gpu_work, plan, after in steps:
        spec = KindSpec(
            label=label,
            gpu_work=gpu_work,
            plan=owned_step(plan),
            clean=clean_avatar_step,
            after=after,
            prefer=data_nodes,
            subject=avatar_subject,
        )
        register(kind, spec)
