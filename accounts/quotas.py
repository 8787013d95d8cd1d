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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

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
class JobUsage:
    running_jobs: int = 0  # holding a slot
    queued_jobs: int = 0  # waiting for a slot
    gpu_hours_this_month: float = 0.0


# What counts against a person's limits is in the apps above this one: each registers its counters from
# its ``AppConfig.ready()`` (as the job kinds are registered, jobs/kinds.py ``register``).
STORAGE_COUNTERS: dict[str, Callable[[Any], int]] = {}  # name → bytes of the person's files it keeps
JOB_COUNTERS: dict[str, Callable[[Any], JobUsage]] = {}  # name → the person's jobs now and this month


def register_storage_counter(name: str, counter: Callable[[Any], int]) -> None:
    STORAGE_COUNTERS[name] = counter


def register_job_counter(name: str, counter: Callable[[Any], JobUsage]) -> None:
    JOB_COUNTERS[name] = counter


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


def storage_bytes(user) -> int:
    """Bytes the person's files take: their media folders in the media store, plus datasets and
    checkpoints on nodes (each app's storage counter)."""
    return sum(counter(user) for counter in STORAGE_COUNTERS.values())


def jobs_usage(user) -> JobUsage:
    """The person's jobs now and this month (the jobs app's counter; nothing when none is registered)."""
    usages = [counter(user) for counter in JOB_COUNTERS.values()]
    return JobUsage(
        running_jobs=sum(u.running_jobs for u in usages),
        queued_jobs=sum(u.queued_jobs for u in usages),
        gpu_hours_this_month=sum(u.gpu_hours_this_month for u in usages),
    )


def usage_for(user) -> Usage:
    jobs = jobs_usage(user)
    return Usage(
        running_jobs=jobs.running_jobs,
        queued_jobs=jobs.queued_jobs,
        gpu_hours_this_month=jobs.gpu_hours_this_month,
        storage_bytes=storage_bytes(user),
    )


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def quota_check_submit(*, owner, timeout_seconds: int | None) -> int:
    """Refuse a job the person has no room for; returns the job's time limit (their longest-job limit when
    none was asked for)."""
    limits = limits_for(owner)
    if timeout_seconds is not None and timeout_seconds > limits.max_job_seconds:
        raise ServiceError(
            f"Longest job: a job may run at most {limits.max_job_seconds / 3600:g} h on your account; "
            f"{timeout_seconds / 3600:g} h was asked. Ask for less, or ask staff for a higher limit."
        )
    jobs = jobs_usage(owner)
    waiting = jobs.queued_jobs
    if waiting >= limits.queued_jobs:
        raise ServiceError(
            f"Queued jobs: you have {waiting} jobs waiting for a slot and your limit is {limits.queued_jobs} "
            "(0 left). Wait for some to start, or cancel some."
        )
    used = jobs.gpu_hours_this_month
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
