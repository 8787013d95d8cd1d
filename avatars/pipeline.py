"""Training an avatar as chained jobs: preprocess → train → render the validation split (GaussianTalker
and the demo; SyncTalk's training tests the val split itself). Evaluation follows in later work.

Each step is its own Job row with the previous one as parent, so each can be retried or resumed on its
own. Preprocessing is skipped when a node already holds the avatar's complete dataset; training then runs
on that node (its data is there).

Engines on a node: the demo engine is copied there (standard-library scripts). GaussianTalker and
SyncTalk run in their Docker image (runtime docker, the repository at /GaussianTalker or /SyncTalk inside
it) or, for bare nodes, from a checkout at ``<workdir>/engines/<engine>`` in the node's environment.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction

from jobs.models import Job
from talkforge.errors import ServiceError

from .models import Avatar, Checkpoint, DatasetCopy

ENGINES_DIR = Path(__file__).resolve().parent / "engines"


def dataset_dir(avatar: Avatar, workdir: str) -> PurePosixPath:
    return PurePosixPath(workdir) / "data" / avatar.slug


def model_dir(avatar: Avatar, workdir: str) -> PurePosixPath:
    # GaussianTalker names render outputs after the second-to-last component: output/<slug> → "output".
    return PurePosixPath(workdir) / "output" / avatar.slug


@transaction.atomic
def avatar_train(*, avatar: Avatar, owner, node=None, iterations=None, seconds=None) -> Job:
    """Start (or restart) an avatar's training pipeline. Returns its first job."""
    from jobs.services import int_param, job_submit

    if avatar.status not in (Avatar.Status.READY_TO_TRAIN, Avatar.Status.FAILED, Avatar.Status.TRAINED):
        if avatar.status == Avatar.Status.NEEDS_ATTENTION:
            raise ServiceError("The video failed quality checks: replace it, or choose 'Train anyway' first.")
        raise ServiceError("This avatar is already training: wait for it, or cancel its jobs.")
    params = {"avatar": avatar.pk}
    if iterations not in (None, ""):
        params["iterations"] = int_param(
            {"iterations": iterations}, "iterations", 0, minimum=10, maximum=500_000
        )
    if avatar.engine == Avatar.Engine.DEMO:
        params["seconds"] = float(seconds) if seconds not in (None, "") else 20.0
    ready = avatar.datasets.filter(complete=True, node__enabled=True).select_related("node")
    if node is not None:
        ready = ready.filter(node=node)
    held = ready.first()
    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINING)
    if held is not None:
        return job_submit(owner=owner, kind=Job.Kind.TRAIN, params=params, node=held.node, avatar=avatar)
    return job_submit(owner=owner, kind=Job.Kind.PREPROCESS, params=params, node=node, avatar=avatar)


def _succeeded(job: Job) -> Avatar | None:
    """The job's avatar when the step succeeded; otherwise the avatar is marked failed (or ready again,
    after a cancel) and there is nothing to follow up."""
    avatar = job.avatar
    if avatar is not None and job.status != Job.Status.SUCCEEDED:
        _avatar_failed(avatar, job)
        return None
    return avatar


def _next_step(job: Job, kind: str) -> Job:
    """Chain the pipeline's next step on the same node (its data is there), with this step as parent."""
    from jobs.services import job_submit

    return job_submit(
        owner=job.owner, kind=kind, params=job.params, node=job.node, parent=job, avatar=job.avatar
    )


def after_preprocess(job: Job) -> None:
    """Record the dataset on the node; on success chain training there."""
    if (avatar := _succeeded(job)) is None:
        return
    DatasetCopy.objects.update_or_create(
        avatar=avatar, node=job.node,
        defaults={"path": str(dataset_dir(avatar, job.node.workdir)), "complete": True,
                  "stages": job.result.get("stages", {})},
    )  # fmt: skip
    _next_step(job, Job.Kind.TRAIN)


def after_train(job: Job) -> None:
    """Record the checkpoints the training left (result "checkpoints": (stage, iteration, path, size));
    then render the validation split, except for SyncTalk, whose training tests it itself (spec §2.4)."""
    if (avatar := _succeeded(job)) is None:
        return
    for stage, iteration, path, size in job.result.get("checkpoints", []):
        Checkpoint.objects.update_or_create(
            avatar=avatar, node=job.node, stage=stage, iteration=iteration,
            defaults={"path": path, "size_bytes": size},
        )  # fmt: skip
    if avatar.engine == Avatar.Engine.SYNCTALK:
        Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINED)
    else:
        _next_step(job, Job.Kind.RENDER_VALIDATION)


def after_render_validation(job: Job) -> None:
    """The validation video is back: the avatar is trained (evaluation against ground truth follows)."""
    if (avatar := _succeeded(job)) is not None:
        Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINED)


def _avatar_failed(avatar: Avatar, job: Job) -> None:
    status = Avatar.Status.READY_TO_TRAIN if job.status == Job.Status.CANCELED else Avatar.Status.FAILED
    Avatar.objects.filter(pk=avatar.pk, status=Avatar.Status.TRAINING).update(status=status)


def shell_and(*commands: list[str]) -> list[str]:
    """Several commands, each quoted part by part, run one after the other while they succeed."""
    return ["sh", "-c", " && ".join(shlex.join(command) for command in commands)]


def local_video(avatar: Avatar) -> Path:
    return Path(settings.MEDIA_ROOT) / avatar.video


def after_evaluate(job: Job) -> None:
    """Store the quality figures (filled in below)."""
