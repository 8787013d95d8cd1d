"""Reads. Every queryset that reaches a user goes through ``jobs_visible_to`` (the job list's statement
through ``jobs_of``, the same rule)."""

from __future__ import annotations

from django.db.models import Count, F, Func, IntegerField, Q, QuerySet, Subquery, Sum, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from accounts.quotas import JobUsage
from core import media
from core.statements import PageOf, Slot, Statement, Table
from gpu_nodes.models import Gpu, Node

from .models import Job, JobLogChunk


def jobs_visible_to(user) -> QuerySet[Job]:
    """Staff see every job; everyone else only their own. Anything else is a 404, never a 403."""
    if not user.is_authenticated:
        return Job.objects.none()
    return jobs_of(None if user.is_staff else user.pk)


def jobs_of(owner) -> QuerySet[Job]:
    """One person's jobs (``owner``: their id, or a ``Slot`` for it), or everyone's (None)."""
    jobs = Job.objects.select_related("node", "gpu", "owner")
    return jobs if owner is None else jobs.filter(owner_id=owner)


def job_subject(job: Job) -> tuple[str, str] | None:
    """What the job works on, as (label, URL) for its pages, from its kind (jobs.kinds.KindSpec.subject)."""
    from .kinds import KINDS  # kinds import the models; the selectors are imported by them too

    spec = KINDS.get(job.kind)  # None: a kind no installed app registers
    return spec.subject(job) if spec is not None and spec.subject is not None else None


# The job list's columns, as ``JobSerializer`` names them; the related names come from the same query.
JOB_LIST_FIELDS = (
    "id", "kind", "status", "stage", "progress", "eta_seconds", "metrics", "params", "result", "error",
    "attempts", "max_attempts", "timeout_seconds", "parent", "avatar", "log_line_count",
    "created_at", "placed_at", "started_at", "finished_at", "heartbeat_at", "cancel_requested_at",
)  # fmt: skip


# The job list's JSON columns come as the database writes them, to go into the answer as they are.
JOB_LIST_JSON_FIELDS = ("metrics", "params", "result")
# ... and its times as the text the answer carries (ApiTime).
JOB_LIST_TIME_FIELDS = (
    "created_at", "placed_at", "started_at", "finished_at", "heartbeat_at", "cancel_requested_at",
)  # fmt: skip


class ApiTime(Func):
    """A time column as text the way the API writes times, computed by PostgreSQL: DRF's DateTimeField
    writes ``value.astimezone(UTC).isoformat()`` with ``Z`` for ``+00:00``, and ``isoformat`` leaves the
    fraction out when the microseconds are 0 (2026-12-06T15:00:00Z, 2026-12-06T15:00:00.250000Z). The job
    list's six times per row no longer go text → datetime (psycopg's loader) → text in Python. One
    ``to_char`` with the fraction, the fraction then dropped when it is all zeros (it took a ``date_trunc``
    test and two ``to_char``)."""

    template = (
        "replace(to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        " '.000000Z', 'Z')"
    )
    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django's SQLite backend stores a time as UTC text, ``str(datetime)`` (2026-12-06 15:00:00.250000,
        # the fraction left out when it is 0: django/db/backends/sqlite3/operations.py
        # adapt_datetimefield_value): the same text as isoformat but for the space. NULL stays NULL.
        return self.as_sql(compiler, connection, template="replace(%(expressions)s, ' ', 'T') || 'Z'")


# The columns the database writes as the answer's text, each under the name ``text_column`` gives it.
JOB_LIST_WRITTEN = JOB_LIST_JSON_FIELDS + JOB_LIST_TIME_FIELDS


def text_column(name: str) -> str:
    return f"{name}_text"


def job_list_rows(jobs: QuerySet[Job]) -> QuerySet:
    """``jobs`` (already filtered through ``jobs_visible_to``) as plain rows for the job list: one query
    with the owner's, node's and GPU's names joined in, no model instances, only the listed columns; the
    JSON columns as JSON text, not decoded, and the times as the API's text (ApiTime), under their
    ``text_column`` names."""
    return jobs.values(
        *(name for name in JOB_LIST_FIELDS if name not in JOB_LIST_WRITTEN),
        owner_name=F("owner__username"),
        node_name=F("node__name"),
        gpu_index=F("gpu__index"),
        **{text_column(name): Cast(name, TextField()) for name in JOB_LIST_JSON_FIELDS},
        **{text_column(name): ApiTime(name) for name in JOB_LIST_TIME_FIELDS},
    )


# The job list's filters (JobFilterSerializer's names) and the lookup and field each one filters on.
JOB_LIST_FILTERS = {
    "status": ("status", Job._meta.get_field("status")),
    "kind": ("kind", Job._meta.get_field("kind")),
    "avatar": ("avatar_id", Job._meta.get_field("avatar")),
    "node": ("node__name", Node._meta.get_field("name")),
}


def job_list_filtered(jobs: QuerySet[Job], filters: dict) -> QuerySet[Job]:
    """``jobs`` with the list's filters: each a value, or a ``Slot`` (the list's statement)."""
    for name, value in filters.items():
        jobs = jobs.filter(**{JOB_LIST_FILTERS[name][0]: value})
    return jobs


class RowCount(Subquery):
    """A count (a subquery of one COUNT) as a column of every row, as the database driver gives it: an int,
    from psycopg and sqlite3 alike. An ``IntegerField`` expression would have its ``int(value)`` converter
    (BaseExpression.convert_value, django/db/models/expressions.py) run on each of the page's rows, and
    Statement.table rebuilds every row that has a converted column, for the one value the paginator reads
    from the first row. Without it the page's Python CPU went 767 → 726 µs (bench/api_load.py's data,
    median of 20 alternating blocks of 100 pages)."""

    output_field = IntegerField()

    def get_db_converters(self, connection):
        return self.output_field.get_db_converters(connection)


def _job_list(*, everyone: bool, filters: tuple[str, ...]) -> QuerySet:
    """The job list's query for one shape (whose jobs, which filters), page first: the page's ids come from
    a subquery over the jobs alone (``PageOf``: sorted by Job.Meta.ordering, newest first, the statement's
    ``limit`` and ``offset``), then only those rows are joined to their owner, node and GPU and written
    out, sorted again. Each row carries the whole list's count (``total``, a subquery counting the same
    jobs) for the paginator.

    Measured on bench/api_load.py's data (200 jobs a person, a page of 50; 2,000 pages, prepared, three
    runs alternating with the previous form): PostgreSQL's CPU 955-1255 → 780-960 µs a page, the web
    process's CPU for the page and its answer's dicts 825-1203 → 608-787 µs. The previous form sorted and
    limited the whole join with a window count, so every job of the person was joined and carried through
    the count and the sort, and the text columns had to be one array column (quoted JSON inside it, parsed
    back by the client) for PostgreSQL to compute them after the LIMIT only."""
    jobs = jobs_of(None if everyone else Slot("owner", Job._meta.get_field("owner")))
    jobs = job_list_filtered(jobs, {name: Slot(name, JOB_LIST_FILTERS[name][1]) for name in filters})
    # COUNT as a plain function: Django's Count aggregate after values() would group by each job.
    count = jobs.order_by().values(count=Func(F("id"), function="COUNT"))
    page = Job.objects.filter(id__in=PageOf(jobs.values("id")))
    return job_list_rows(page).annotate(total=RowCount(count))


# Built and compiled once per process and shape (core/statements.py): most of the job list's time went
# into building and compiling this query per request.
JOB_LIST = Statement(_job_list)


def job_list_page(user, filters: dict, *, limit: int, offset: int) -> Table:
    """A page of ``job_list_rows`` of the jobs ``user`` sees (as ``jobs_visible_to``) that match
    ``filters`` (JobFilterSerializer's validated data), newest first, each with ``total``."""
    if not user.is_authenticated:
        return Table((), [])
    return JOB_LIST.table(
        shape={"everyone": user.is_staff, "filters": tuple(sorted(filters))},
        values={**filters, "owner": user.pk, "limit": limit, "offset": offset},
    )


def gpu_label(index: int | None) -> str | None:
    """``Gpu.label`` from the index alone (``GPU0``…, ``CPU``)."""
    if index is None:
        return None
    return "CPU" if index == Gpu.CPU_INDEX else f"GPU{index}"


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


def jobs_storage_bytes(user) -> int:
    """What the files the person's jobs brought back take in the media store (their quota)."""
    collected = Job.objects.filter(owner=user, result__has_key="files").values_list("pk", flat=True)
    return sum(media.size(f"jobs/{pk}") for pk in collected)


def month_start():
    now = timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def jobs_usage(user) -> JobUsage:
    """The person's jobs against their limits (accounts/quotas.py): those holding a slot now, those
    waiting for one, and the GPU hours this calendar month (UTC), a running job's so far included."""
    jobs = Job.objects.filter(owner_id=user.pk)
    counts = jobs.aggregate(
        running=Count(
            "id", filter=Q(status=Job.Status.RUNNING) | Q(status=Job.Status.QUEUED, gpu__isnull=False)
        ),
        queued=Count("id", filter=Q(status=Job.Status.QUEUED, gpu__isnull=True)),
    )
    since = month_start()
    finished = jobs.filter(finished_at__gte=since).aggregate(total=Sum("gpu_seconds"))["total"] or 0.0
    now = timezone.now()
    running = 0.0
    for started in jobs.filter(
        status=Job.Status.RUNNING, gpu__index__gte=0, started_at__isnull=False
    ).values_list("started_at", flat=True):
        running += (now - max(started, since)).total_seconds()
    return JobUsage(
        running_jobs=counts["running"] or 0,
        queued_jobs=counts["queued"] or 0,
        gpu_hours_this_month=(finished + running) / 3600,
    )
