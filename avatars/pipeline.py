"""Training an avatar as chained jobs: preprocess → train (the engine's recipe, in a run folder of its
own) → render the validation split with the run's final checkpoint → evaluate it against the ground truth.

Each step is its own Job row with the previous one as parent, so each can be retried or resumed on its
own. Preprocessing is skipped when a node already holds the avatar's complete dataset; training then runs
on that node (its data is there). What each step runs is the avatar's engine plug-in's
(avatars/engines/); runs and the checkpoints that render are in avatars/runs.py.

Engines on a node: the demo engine's scripts are copied there (standard library). GaussianTalker and
SyncTalk run in their Docker image (runtime docker, the repository at the engine's ``repo_root`` inside
it) or, for bare nodes, from a checkout at ``<workdir>/engines/<engine>`` in the node's environment.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.urls import reverse

from core.errors import ServiceError
from core.params import TRAIN_ITERATIONS
from jobs.kinds import kind_label
from jobs.models import Job
from jobs.notify import notify

from .layout import dataset_dir
from .models import Avatar, Checkpoint, DatasetCopy, Evaluation
from .runs import rendered_checkpoint, run_of
from .transfer import transfer_sources

logger = logging.getLogger(__name__)

# The pipeline's job kinds, registered by avatars/job_kinds.py (``register_kinds``).
PREPROCESS = "preprocess"
TRAIN = "train"
RENDER_VALIDATION = "render_validation"
EVALUATE = "evaluate"
PIPELINE_KINDS = (PREPROCESS, TRAIN, RENDER_VALIDATION, EVALUATE)


@transaction.atomic
def avatar_train(*, avatar: Avatar, owner, node=None, iterations=None, seconds=None) -> Job:
    """Start (or restart) an avatar's training pipeline. Returns its first job."""
    from jobs.services import job_submit

    if avatar.status not in (Avatar.Status.READY_TO_TRAIN, Avatar.Status.FAILED, Avatar.Status.TRAINED):
        if avatar.status == Avatar.Status.NEEDS_ATTENTION:
            raise ServiceError("The video failed quality checks: replace it, or choose 'Train anyway' first.")
        raise ServiceError("This avatar is already training: wait for it, or cancel its jobs.")
    if avatar.jobs.filter(status__in=Job.ACTIVE_STATUSES).exists():
        # GaussianTalker restarts from scratch and rewrites the point clouds a render is reading.
        raise ServiceError(
            "A video or evaluation of this avatar is being rendered: wait for it or cancel it, then train."
        )
    iterations = None if iterations in (None, "") else TRAIN_ITERATIONS.clean(iterations)
    try:
        settings = avatar.engine_plugin.training_params(iterations=iterations, seconds=seconds)
    except ValueError as error:
        raise ServiceError(str(error)) from None
    params = {"avatar": avatar.pk, **settings}
    # A complete dataset on a node that can hand it over means no preprocessing: training goes where the
    # data is when a slot is free there, and elsewhere copies it first (avatars/transfer.py).
    has_data = transfer_sources(avatar).exists()
    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINING)
    kind = TRAIN if has_data else PREPROCESS
    return job_submit(owner=owner, kind=kind, params=params, node=node, avatar=avatar)


def _succeeded(job: Job) -> Avatar | None:
    """The job's avatar when the step succeeded; otherwise the avatar is marked failed (or ready again,
    after a cancel) and there is nothing to follow up."""
    avatar = job.avatar
    if avatar is not None and job.status != Job.Status.SUCCEEDED:
        _avatar_failed(avatar, job)
        return None
    return avatar


def _next_step(job: Job, kind: str, **params) -> Job | None:
    """Chain the pipeline's next step on the same node (its data is there), with this step as parent.
    When it cannot be queued (the node was disabled meanwhile), a training avatar is marked failed with
    the reason in the log, rather than left "training" for ever."""
    from jobs.services import job_submit

    try:
        with transaction.atomic():
            return job_submit(
                owner=job.owner, kind=kind, params={**job.params, **params}, node=job.node, parent=job,
                avatar=job.avatar,
            )  # fmt: skip
    except ServiceError as error:
        logger.warning("could not chain %s after job %s: %s", kind, job.pk, error)
        Avatar.objects.filter(pk=job.avatar_id, status=Avatar.Status.TRAINING).update(
            status=Avatar.Status.FAILED
        )
        return None


@transaction.atomic
def after_preprocess(job: Job) -> None:
    """Record the dataset on the node — complete, or how far it got (the stage that failed, the ones
    before it done) — and on success chain training there."""
    avatar = job.avatar
    if avatar is not None and job.node is not None and job.status == Job.Status.FAILED:
        names = avatar.engine_plugin.stage_names()
        reached = names.index(job.stage) if job.stage in names else -1
        stages = {name: "done" if i < reached else "failed" if i == reached else "pending"
                  for i, name in enumerate(names)}  # fmt: skip
        path = str(dataset_dir(avatar, job.node.workdir))
        DatasetCopy.objects.update_or_create(
            avatar=avatar, node=job.node, defaults={"path": path, "complete": False, "stages": stages}
        )
    if (avatar := _succeeded(job)) is None:
        return
    DatasetCopy.objects.update_or_create(
        avatar=avatar, node=job.node,
        defaults={"path": str(dataset_dir(avatar, job.node.workdir)), "complete": True,
                  "stages": job.result.get("stages", {}), "size_bytes": job.result.get("size_bytes", 0)},
    )  # fmt: skip
    _next_step(job, TRAIN)


@transaction.atomic
def after_train(job: Job) -> None:
    """Record the checkpoints the training left (result "checkpoints": (stage, iteration, path, size)) as
    its run's; then render the validation split with the run's final renderable one, named by number."""
    if (avatar := _succeeded(job)) is None:
        return
    run, engine, final = run_of(job), avatar.engine_plugin, None
    for stage, iteration, path, size in job.result.get("checkpoints", []):
        Checkpoint.objects.update_or_create(
            avatar=avatar, node=job.node, run_id=run, stage=stage, iteration=iteration,
            defaults={"path": path, "size_bytes": size},
        )  # fmt: skip
        if stage == engine.renderable_stage:
            final = iteration if final is None else max(final, iteration)
    if final is None:  # the engine's verify refuses such a training; a result without the list lands here
        logger.warning("training job %s recorded no renderable checkpoint", job.pk)
        Avatar.objects.filter(pk=avatar.pk, status=Avatar.Status.TRAINING).update(status=Avatar.Status.FAILED)
        return
    _next_step(job, RENDER_VALIDATION, iteration=final, run=run)


@transaction.atomic  # trained and the evaluation queued together: no moment with neither running
def after_render_validation(job: Job) -> None:
    """The validation video is back: the avatar is trained (a checkpoint rendered later leaves its status
    alone); its quality figures come next."""
    if (avatar := _succeeded(job)) is not None:
        Avatar.objects.filter(pk=avatar.pk, status=Avatar.Status.TRAINING).update(
            status=Avatar.Status.TRAINED
        )
        _next_step(job, EVALUATE)


def after_evaluate(job: Job) -> None:
    """Store the quality figures of the checkpoint that was rendered. A failed evaluation leaves the model
    usable: the job shows why (a missing or corrupted ground-truth frame, say)."""
    if job.status != Job.Status.SUCCEEDED or job.avatar is None:
        return
    report = job.result.get("evaluation", {})
    try:
        run, iteration = rendered_checkpoint(job)
    except ValueError:
        logger.warning("evaluation job %s: its checkpoint is gone", job.pk)
        return
    checkpoint = job.avatar.checkpoints.filter(
        node=job.node, run_id=run, iteration=iteration, stage=job.avatar.engine_plugin.renderable_stage
    ).first()
    Evaluation.objects.update_or_create(
        avatar=job.avatar, run_id=run, iteration=iteration,
        defaults={
            "checkpoint": checkpoint, "job": job, "psnr": report.get("psnr"), "ssim": report.get("ssim"),
            "lpips": report.get("lpips"), "frames": report.get("frames", 0),
            "rendered_frames": report.get("rendered_frames", 0),
            "reference_frames": report.get("reference_frames", 0),
            "per_frame": report.get("per_frame", {}), "notes": report.get("notes", []),
        },
    )  # fmt: skip
    # Told once the figures are stored, so the page the notice links to shows them.
    if job.parent_id is not None and job.parent and job.parent.kind == RENDER_VALIDATION:
        # The end of a training's chain (an evaluation asked for later is its own request).
        psnr = report.get("psnr")
        figures = f": PSNR {psnr:.2f} dB on the held-out frames" if isinstance(psnr, (int, float)) else ""
        notify(
            user=job.owner, subject=f"{job.avatar.name} is trained",
            text=f"{job.avatar.name} finished training{figures}. It can make videos and talk now.",
            url=reverse("avatar-detail", args=[job.avatar_id]),
        )  # fmt: skip


@transaction.atomic
def avatar_evaluate(*, avatar: Avatar, owner, checkpoint: Checkpoint) -> Job:
    """Quality figures for one checkpoint: render the val split with it, then score that render."""
    from jobs.services import job_submit

    if checkpoint.avatar_id != avatar.pk:
        raise ServiceError("That checkpoint belongs to another avatar: choose one of this avatar's.")
    if problem := avatar.engine_plugin.render_refusal(checkpoint):
        raise ServiceError(problem)
    if avatar.status == Avatar.Status.TRAINING:
        raise ServiceError("This avatar is training: evaluate its checkpoints once the training has ended.")
    params = {"avatar": avatar.pk, "iteration": checkpoint.iteration}
    if checkpoint.run_id is not None:
        params["run"] = checkpoint.run_id
    return job_submit(owner=owner, kind=RENDER_VALIDATION, node=checkpoint.node, avatar=avatar, params=params)


def avatar_failed_step(avatar: Avatar) -> Job | None:
    """The pipeline's newest step when it failed or was canceled (what Retry runs again), else None."""
    latest = avatar.jobs.filter(kind__in=PIPELINE_KINDS).order_by("-created_at", "-id").first()
    if latest is not None and latest.status in (Job.Status.FAILED, Job.Status.CANCELED):
        return latest
    return None


@transaction.atomic
def avatar_retry(*, avatar: Avatar, owner) -> Job:
    """Run the failed step again, on its own: same kind and settings, same parent. Rendering and
    evaluating stay on the node that holds the model; preprocessing and training are placed afresh
    (training prefers, or copies, the data). The pipeline then goes on from there."""
    from jobs.services import job_submit

    avatar = Avatar.objects.select_for_update().get(pk=avatar.pk)
    failed = avatar_failed_step(avatar)
    if failed is None:
        raise ServiceError("Nothing to retry: the avatar's last step did not fail. Train it to start again.")
    if avatar.jobs.filter(status__in=Job.ACTIVE_STATUSES).exists():
        raise ServiceError("A step of this avatar is still running: wait for it or cancel it first.")
    pinned = failed.node if failed.kind in (RENDER_VALIDATION, EVALUATE) else None
    if failed.kind != EVALUATE:
        Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINING)
    params = failed.params
    if failed.kind == TRAIN:
        params = {**params, "run": run_of(failed)}  # the same run folder: SyncTalk resumes its checkpoints
    return job_submit(
        owner=owner, kind=failed.kind, params=params, node=pinned, parent=failed.parent, avatar=avatar
    )


def avatar_cancel(*, avatar: Avatar) -> list[Job]:
    """Stop whatever runs or waits for this avatar (the engines' process trees are killed)."""
    from jobs.services import job_cancel

    active = list(avatar.jobs.filter(status__in=Job.ACTIVE_STATUSES))
    if not active:
        raise ServiceError("Nothing to cancel: no step of this avatar is queued or running.")
    return [job_cancel(job=job) for job in active]


def _avatar_failed(avatar: Avatar, job: Job) -> None:
    status = Avatar.Status.READY_TO_TRAIN if job.status == Job.Status.CANCELED else Avatar.Status.FAILED
    failed = Avatar.objects.filter(pk=avatar.pk, status=Avatar.Status.TRAINING).update(status=status)
    if failed and job.status == Job.Status.FAILED:  # a cancel was the person's own doing
        notify(
            user=job.owner, subject=f"Training {avatar.name} failed", ok=False,
            text=f"The {kind_label(job.kind).lower()} step failed: {job.error or 'see its log'}",
            url=reverse("avatar-detail", args=[avatar.pk]),
        )  # fmt: skip
