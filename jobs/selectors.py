"""Reads. Every queryset that reaches a user goes through ``jobs_visible_to``."""

from __future__ import annotations

from django.db.models import F, QuerySet

from .models import Job, JobLogChunk


def jobs_visible_to(user) -> QuerySet[Job]:
    """Staff see every job; everyone else only their own. Anything else is a 404, never a 403."""
    jobs = Job.objects.select_related("node", "gpu", "owner")
    if not user.is_authenticated:
        return jobs.none()
    if user.is_staff:
        return jobs
    return jobs.filter(owner=user)


def job_subject(job: Job) -> tuple[str, str] | None:
    """What the job works on, as (label, URL) for its pages, from its kind (jobs.kinds.KindSpec.subject)."""
    from .kinds import kind_spec  # kinds import the models; the selectors are imported by them too

    spec = kind_spec(job.kind)
    return spec.subject(job) if spec.subject is not None else None


def job_log_lines(job: Job, *, after: int = 0, limit: int | None = None) -> list[str]:
    """Log lines numbered ``after + 1`` onwards (lines are numbered from 1), at most ``limit``."""
    # ``end`` is one past a chunk's last line: keep the chunks that reach beyond ``after``.
    chunks = JobLogChunk.objects.filter(job=job).alias(end=F("first_line") + F("line_count"))
    chunks = chunks.filter(end__gt=after + 1).order_by("first_line")
    if limit:
        chunks = chunks.filter(first_line__lte=after + limit)
    lines: list[str] = []
    for chunk in chunks.iterator():
        lines.extend(chunk.lines[max(0, after - chunk.first_line + 1) :])
        if limit and len(lines) >= limit:
            return lines[:limit]
    return lines


def job_log_text(job: Job) -> str:
    return "\n".join(job_log_lines(job))
