"""Avatars: creation from an uploaded video (validated, normalised, checked), and what follows."""

from __future__ import annotations

import dataclasses
import math
from pathlib import PurePosixPath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from accounts.quotas import quota_check_storage
from core import media
from core.errors import ServiceError
from gpu_nodes.erasure import Erasure

from .aucsv import validate_au_csv
from .engines.registry import DEFAULT_ENGINE, ENGINES
from .media import VideoInfo, normalise, probe
from .models import Avatar
from .quality import quality_report
from .uploads import rollback, storing, unique_slug

CONSENT_STATEMENT = (
    "The person shown in this video has agreed that their likeness and voice are used to train a "
    "talking-head model on Talkforge, and I may upload it on their behalf."
)


def check_video(info: VideoInfo) -> None:
    """Refuse what the engines cannot use, naming the problem and what to do."""
    if not info.has_audio:
        raise ServiceError(
            "The video has no audio track. The model learns lip motion from the voice: upload it with sound."
        )
    if info.duration < settings.AVATAR_MIN_SECONDS:
        raise ServiceError(
            f"The video is {info.duration:.0f} s long; at least {settings.AVATAR_MIN_SECONDS:.0f} s are "
            "needed (3–5 minutes train best)."
        )
    if info.duration > settings.AVATAR_MAX_SECONDS:
        raise ServiceError(
            f"The video is {info.duration / 60:.1f} minutes long; the limit is "
            f"{settings.AVATAR_MAX_SECONDS / 60:.0f} minutes. Trim it to the best few minutes."
        )
    if min(info.width, info.height) < settings.AVATAR_MIN_SIDE_PIXELS:
        raise ServiceError(
            f"The video is {info.width}×{info.height}; its shorter side must be at least "
            f"{settings.AVATAR_MIN_SIDE_PIXELS} px. Upload a higher-resolution video."
        )


def _trim(duration: float, start: float | None, end: float | None) -> tuple[float, float]:
    """The kept part of a clip ``duration`` seconds long, checked: (start, end) in seconds."""
    start = 0.0 if start is None else float(start)
    end = duration if end is None else float(end)
    if not (math.isfinite(start) and 0 <= start < duration):
        raise ServiceError(f"The clip starts at 0 s and lasts {duration:.1f} s: choose a start inside it.")
    if not math.isfinite(end):
        raise ServiceError(f"Give the end of the part to keep in seconds, at most {duration:.1f}.")
    if end <= start:
        raise ServiceError("The end of the part to keep must come after its start.")
    return start, min(end, duration)


def avatar_create(
    *,
    owner,
    name: str,
    video: UploadedFile,
    consent: bool,
    engine: str = DEFAULT_ENGINE,
    au_csv: UploadedFile | None = None,
    training_settings: dict | None = None,
    preferred_node=None,
    trim_start: float | None = None,
    trim_end: float | None = None,
) -> Avatar:
    """Validate and store a training video and make the avatar. On any error nothing is left behind.
    ``preferred_node``: where its steps go first when nothing else decides (no node holds its data yet).
    ``trim_start``/``trim_end``: the part of the clip to keep, in seconds (the upload page's preview)."""
    name = (name or "").strip()
    if not consent:
        raise ServiceError("Confirm that the person in the video agreed to have their likeness trained.")
    if not name or len(name) > 100:
        raise ServiceError("Give the avatar a name of 1 to 100 characters.")
    if engine not in ENGINES:
        raise ServiceError(f"Unknown engine {engine!r}: choose one of {', '.join(ENGINES)}.")
    if Avatar.objects.filter(owner=owner, name=name).exists():
        raise ServiceError(f"You already have an avatar named {name!r}: choose another name.")
    if preferred_node is not None and not preferred_node.enabled:
        raise ServiceError(f"Node {preferred_node.name} is disabled: choose another node, or none.")
    quota_check_storage(owner=owner, adding_bytes=video.size + (au_csv.size if au_csv else 0))

    slug = unique_slug(name, "avatar")
    folder = f"avatars/{slug}"
    with rollback(folder, taken=f"You already have an avatar named {name!r}: choose another name."):
        # Normalised and checked on this machine's disk; stored (core/media.py) once every check passed.
        with storing(video, f"{folder}/{slug}.mp4") as incoming:
            source, target = incoming.source, incoming.target
            info = probe(source)
            start, end = _trim(info.duration, trim_start, trim_end)
            check_video(dataclasses.replace(info, duration=end - start))
            normalise(source, target, start=start, end=end if end < info.duration else None)
            info = probe(target)
            text = ""
            if au_csv is not None:
                text = au_csv.read().decode("utf-8-sig", "replace")
                validate_au_csv(text, frames=info.frames_at_engine_fps)
            report = quality_report(target, info)
        au_path = ""
        if au_csv is not None:
            au_path = f"{folder}/au.csv"
            with media.writing(au_path) as path:
                path.write_text(text)
        with transaction.atomic():
            return Avatar.objects.create(
                owner=owner,
                name=name,
                slug=slug,
                engine=engine,
                status=Avatar.Status.READY_TO_TRAIN if report["passed"] else Avatar.Status.NEEDS_ATTENTION,
                training_settings=training_settings or {},
                preferred_node=preferred_node,
                video=f"avatars/{slug}/{slug}.mp4",
                video_info={
                    "duration": info.duration,
                    "width": info.width,
                    "height": info.height,
                    "fps": info.fps,
                    "frames": info.frames_at_engine_fps,
                    "source_codec": info.video_codec,
                },  # fmt: skip
                au_csv=au_path,
                quality=report,
                consent_given_at=timezone.now(),
                consent_given_by=owner,
                consent_statement=CONSENT_STATEMENT,
            )


def avatar_proceed_anyway(*, avatar: Avatar) -> Avatar:
    """The owner read the failed checks and wants to train regardless."""
    if avatar.status != Avatar.Status.NEEDS_ATTENTION:
        raise ServiceError(
            "Only an avatar whose video failed a check needs this; this one can be trained as it is."
        )
    Avatar.objects.filter(pk=avatar.pk).update(
        status=Avatar.Status.READY_TO_TRAIN, quality_override_at=timezone.now()
    )
    avatar.refresh_from_db()
    return avatar


def avatar_erasure(avatar: Avatar, erasure: Erasure) -> None:
    """Add to ``erasure`` everything of the avatar beyond its rows: its uploads (the video, au.csv), the
    files its jobs brought back (validation renders, generated videos and posters), its videos' and
    conversations' folders; and on every node that holds or held anything of it (its datasets and
    checkpoints, the nodes its jobs ran on): the dataset, the model folder with every training run in it
    (checkpoints, renders, GaussianTalker's derived configs, SyncTalk's workspaces) and the jobs' scratch
    folders."""
    from jobs.models import Job

    from .layout import dataset_dir, model_dir

    erasure.add_media(avatar.folder)
    jobs = list(Job.objects.filter(avatar=avatar).select_related("node"))
    nodes = {job.node for job in jobs if job.node is not None}
    for job in jobs:
        erasure.add_media(f"jobs/{job.pk}")
        if job.node is not None:
            erasure.add_node_path(job.node, PurePosixPath(job.node.workdir) / "jobs" / str(job.pk))
    for video in avatar.videos.all():
        erasure.add_media(video.folder if video.folder.startswith("videos/") else "")
        erasure.add_media(f"jobs/{video.job_id}" if video.job_id else "")
    for conversation in avatar.conversations.all():
        erasure.add_media(conversation.folder)
    for copy in avatar.datasets.select_related("node"):
        nodes.add(copy.node)
        erasure.add_node_path(copy.node, copy.path)
    for checkpoint in avatar.checkpoints.select_related("node"):
        nodes.add(checkpoint.node)
        erasure.add_node_path(checkpoint.node, checkpoint.path)
    for node in nodes:
        erasure.add_node_path(node, dataset_dir(avatar, node.workdir))
        erasure.add_node_path(node, model_dir(avatar, node.workdir))  # every training run's folder is inside
        # The other engine layouts too (output/<slug>, model/<slug>: an engine changed, an old checkout),
        # and the derived config GaussianTalker trainings wrote beside the model before runs had folders.
        for engine in ENGINES.values():
            erasure.add_node_path(node, engine.model_root(avatar.slug, node.workdir))
        erasure.add_node_path(node, PurePosixPath(node.workdir) / "output" / f"{avatar.slug}-config.py")


def avatars_collect_erasure(user, erasure: Erasure) -> None:
    """Deleting an account (accounts/deletion.py): every avatar of the person, as ``avatar_erasure``."""
    for avatar in user.avatars.all():
        avatar_erasure(avatar, erasure)


def avatar_delete(*, avatar: Avatar) -> None:
    """Delete the avatar and everything made from it: its files here and on every node (nodes offline now
    are cleaned when they are back), its datasets, checkpoints, evaluations, videos and conversations.
    Its jobs stay as history, no longer linked to it; the files they brought back go.

    Refused while any job of it (training, a video, a chat reply) is queued or running: its worker would
    write into what is being removed. Deleting cannot be undone, so it is all checked first."""
    from jobs.models import Job

    with transaction.atomic():
        avatar = Avatar.objects.select_for_update().filter(pk=avatar.pk).first()
        if avatar is None:
            raise ServiceError("This avatar was deleted already.")
        if avatar.status == Avatar.Status.TRAINING:
            raise ServiceError("The avatar is training: cancel its jobs first.")
        if avatar.jobs.filter(status__in=Job.ACTIVE_STATUSES).exists():
            raise ServiceError(
                "A job of this avatar is queued or running: cancel it or wait for it, then delete the avatar."
            )
        erasure = Erasure(what=f"avatar {avatar.slug} (#{avatar.pk})", by=avatar.owner.username)
        avatar_erasure(avatar, erasure)
        erasure.schedule()
        _jobs_forget_files(avatar.jobs.all())
        avatar.delete()
        erasure.on_commit()


def _jobs_forget_files(jobs) -> None:
    """The jobs stay as history, but the files they brought back are about to go: their results stop
    naming them."""
    for job in jobs.filter(result__has_key="files"):
        job.result.pop("files")
        type(job).objects.filter(pk=job.pk).update(result=job.result)
