"""Per-person limits and what counts against them.

Limits are the site's (settings ``QUOTA_*``) unless staff set a person's own in the admin (:class:`Quota`).
What is measured:

- concurrent jobs: jobs holding a node slot now (placement leaves the rest of a person's jobs waiting);
- queued jobs: jobs waiting for a slot (a submission past the limit is refused);
- GPU hours this calendar month (UTC): every job records the seconds it held a GPU (``Job.gpu_seconds``),
  and a running job counts what it has used so far;
- storage: the person's files on this platform (uploads, voices, chat audio, videos, collected results)
  plus what their datasets and checkpoints take on the nodes;
- the longest job: a job's time limit may not exceed it, and a job without one gets it.

Refusals are ServiceErrors that say which limit, how much is used and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from core import media
from core.errors import ServiceError

from .models import Quota

GB = 1024**3


@dataclass(frozen=True)
class Limits:
    concurrent_jobs: int
    queued_jobs: int
    gpu_hours_per_month: float
    storage_bytes: int
    max_job_seconds: int


@dataclass(frozen=True)
class Usage:
    running_jobs: int
    queued_jobs: int
    gpu_hours_this_month: float
    storage_bytes: int


def site_limits() -> Limits:
    return Limits(
        concurrent_jobs=settings.QUOTA_CONCURRENT_JOBS,
        queued_jobs=settings.QUOTA_QUEUED_JOBS,
        gpu_hours_per_month=settings.QUOTA_GPU_HOURS_PER_MONTH,
        storage_bytes=int(settings.QUOTA_STORAGE_GB * GB),
        max_job_seconds=int(settings.QUOTA_MAX_JOB_HOURS * 3600),
    )


def _merge(site: Limits, quota: Quota | None) -> Limits:
    if quota is None:
        return site
    return Limits(
        concurrent_jobs=quota.concurrent_jobs if quota.concurrent_jobs is not None else site.concurrent_jobs,
        queued_jobs=quota.queued_jobs if quota.queued_jobs is not None else site.queued_jobs,
        gpu_hours_per_month=(
            quota.gpu_hours_per_month if quota.gpu_hours_per_month is not None else site.gpu_hours_per_month
        ),
        storage_bytes=int(quota.storage_gb * GB) if quota.storage_gb is not None else site.storage_bytes,
        max_job_seconds=(
            int(quota.max_job_hours * 3600) if quota.max_job_hours is not None else site.max_job_seconds
        ),
    )


def limits_for(user) -> Limits:
    return _merge(site_limits(), Quota.objects.filter(user_id=user.pk).first())


def concurrent_limits(owner_ids) -> dict[int, int]:
    """Each owner's concurrent-jobs limit, for placement (one query for all of them)."""
    site = settings.QUOTA_CONCURRENT_JOBS
    own = dict(
        Quota.objects.filter(user_id__in=owner_ids, concurrent_jobs__isnull=False).values_list(
            "user_id", "concurrent_jobs"
        )
    )
    return {owner: own.get(owner, site) for owner in owner_ids}


def month_start():
    now = timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def gpu_hours_this_month(user) -> float:
    from jobs.models import Job

    since = month_start()
    jobs = Job.objects.filter(owner_id=user.pk)
    finished = jobs.filter(finished_at__gte=since).aggregate(total=Sum("gpu_seconds"))["total"] or 0.0
    now = timezone.now()
    running = 0.0
    for started in jobs.filter(
        status=Job.Status.RUNNING, gpu__index__gte=0, started_at__isnull=False
    ).values_list("started_at", flat=True):
        running += (now - max(started, since)).total_seconds()
    return (finished + running) / 3600


def storage_bytes(user) -> int:
    """Bytes the person's files take: their media folders in the media store, plus datasets and
    checkpoints on nodes."""
    from avatars.models import Avatar, Checkpoint, DatasetCopy
    from chat.models import Conversation, Voice
    from jobs.models import Job
    from videos.models import Video

    folders = [f"avatars/{slug}" for slug in Avatar.objects.filter(owner=user).values_list("slug", flat=True)]
    folders += [f"voices/{slug}" for slug in Voice.objects.filter(owner=user).values_list("slug", flat=True)]
    folders += [
        f"conversations/{pk}" for pk in Conversation.objects.filter(owner=user).values_list("pk", flat=True)
    ]
    folders += list(Video.objects.filter(owner=user).exclude(folder="").values_list("folder", flat=True))
    collected = Job.objects.filter(owner=user, result__has_key="files").values_list("pk", flat=True)
    folders += [f"jobs/{pk}" for pk in collected]
    total = sum(media.size(folder) for folder in folders)
    total += Checkpoint.objects.filter(avatar__owner=user).aggregate(n=Sum("size_bytes"))["n"] or 0
    total += DatasetCopy.objects.filter(avatar__owner=user).aggregate(n=Sum("size_bytes"))["n"] or 0
    return total


def usage_for(user) -> Usage:
    from jobs.models import Job

    counts = Job.objects.filter(owner_id=user.pk).aggregate(
        running=Count(
            "id", filter=Q(status=Job.Status.RUNNING) | Q(status=Job.Status.QUEUED, gpu__isnull=False)
        ),
        queued=Count("id", filter=Q(status=Job.Status.QUEUED, gpu__isnull=True)),
    )
    return Usage(
        running_jobs=counts["running"] or 0,
        queued_jobs=counts["queued"] or 0,
        gpu_hours_this_month=gpu_hours_this_month(user),
        storage_bytes=storage_bytes(user),
    )


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def quota_check_submit(*, owner, timeout_seconds: int | None) -> int:
    """Refuse a job the person has no room for; returns the job's time limit (their longest-job limit when
    none was asked for)."""
    from jobs.models import Job

    limits = limits_for(owner)
    if timeout_seconds is not None and timeout_seconds > limits.max_job_seconds:
        raise ServiceError(
            f"Longest job: a job may run at most {limits.max_job_seconds / 3600:g} h on your account; "
            f"{timeout_seconds / 3600:g} h was asked. Ask for less, or ask staff for a higher limit."
        )
    waiting = Job.objects.filter(owner_id=owner.pk, status=Job.Status.QUEUED, gpu__isnull=True).count()
    if waiting >= limits.queued_jobs:
        raise ServiceError(
            f"Queued jobs: you have {waiting} jobs waiting for a slot and your limit is {limits.queued_jobs} "
            "(0 left). Wait for some to start, or cancel some."
        )
    used = gpu_hours_this_month(owner)
    if used >= limits.gpu_hours_per_month:
        raise ServiceError(
            f"GPU hours: you used {used:.1f} of your {limits.gpu_hours_per_month:g} h this month (0 left). "
            "The count starts again on the 1st (UTC); staff can raise your limit."
        )
    quota_check_storage(owner=owner, adding_bytes=0, limits=limits)
    return timeout_seconds if timeout_seconds is not None else limits.max_job_seconds


def quota_check_storage(*, owner, adding_bytes: int, limits: Limits | None = None) -> None:
    """Refuse an upload (or a job that will write more) when the person's storage is full."""
    limits = limits or limits_for(owner)
    used = storage_bytes(owner)
    if used + adding_bytes > limits.storage_bytes:
        left = max(0, limits.storage_bytes - used)
        needs = f"; this needs {_gb(adding_bytes)}" if adding_bytes else ""
        raise ServiceError(
            f"Storage: you use {_gb(used)} of your {_gb(limits.storage_bytes)} ({_gb(left)} left){needs}. "
            "Delete avatars, videos or voices you no longer need, or ask staff for a higher limit."
        )


def gpu_seconds_of(job) -> float:
    """The seconds a finished job held a GPU (CPU slots count nothing): from its start to its end."""
    if job.gpu_id is None or job.started_at is None or job.finished_at is None:
        return 0.0
    if job.gpu.index < 0:
        return 0.0
    return max(0.0, (job.finished_at - job.started_at).total_seconds())


def usage_rows(user) -> list[dict]:
    """Usage against limits, as rows for the profile page and the admin: what, used, limit, share."""
    limits, usage = limits_for(user), usage_for(user)
    rows = [
        ("Jobs running", usage.running_jobs, limits.concurrent_jobs, str),
        ("Jobs waiting", usage.queued_jobs, limits.queued_jobs, str),
        (
            "GPU hours this month",
            usage.gpu_hours_this_month,
            limits.gpu_hours_per_month,
            lambda h: f"{h:.1f} h",
        ),
        ("Storage", usage.storage_bytes, limits.storage_bytes, _gb),
        ("Longest job", None, limits.max_job_seconds, lambda s: f"{s / 3600:g} h"),
    ]
    return [
        {
            "what": what,
            "used": "" if used is None else show(used),
            "limit": show(limit),
            "percent": None if used is None or not limit else min(100, round(100 * used / limit)),
        }
        for what, used, limit, show in rows
    ]
