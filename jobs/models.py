import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .stages import stage_label


def seconds_text(seconds: float) -> str:
    """A span of time in words, as the pages show it: "1 h 2 min", "3 min 5 s", "42 s"."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


class Job(models.Model):
    """One unit of work on a node: the single source of truth for its state.

    Life cycle: ``queued`` (waiting; once ``gpu`` is set it holds that slot and sits in the node's RQ
    queue) → ``running`` → ``succeeded`` | ``failed`` | ``canceled``. A GPU slot is held exactly while a
    job with that ``gpu`` is queued or running; a partial unique index makes two holders impossible.
    Every transition is a conditional UPDATE on the expected current state, so a job is claimed, and
    finished, at most once per attempt even when workers, the reconciler and users race.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    # The name a kind is registered under (jobs/kinds.py ``register``, from each app's ``ready()``): the
    # registry is the only list of kinds, so a new kind needs no migration here.
    kind = models.CharField(max_length=32)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # History outlives what a job worked on: deleting an avatar keeps its jobs, no longer linked to it.
    avatar = models.ForeignKey(
        "avatars.Avatar", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    node = models.ForeignKey(
        "gpu_nodes.Node", null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    gpu = models.ForeignKey(
        "gpu_nodes.Gpu", null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    # Chosen up front: django-rq may defer enqueue inside atomic blocks and return None.
    rq_job_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    worker_name = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(null=True, blank=True, help_text="Process-group id of the engine on its node.")
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=1)
    timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Stop the job (its whole process tree) after this many seconds of running.",
    )

    stage = models.CharField(max_length=100, blank=True)
    progress = models.FloatField(default=0.0)
    eta_seconds = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Latest figures the engine printed.")
    log_line_count = models.PositiveIntegerField(default=0)
    # Set when the engine of an attempt has exited, before its outcome is settled (results checked and
    # fetched). A worker lost after that point hands the job on to be settled again from the recorded exit
    # code and log lines (from engine_log_from), without running the engine a second time.
    engine_exit_code = models.IntegerField(null=True, blank=True)
    engine_log_from = models.PositiveIntegerField(default=1, help_text="The ended attempt's first log line.")
    gpu_seconds = models.FloatField(
        default=0.0, help_text="Seconds this job held a GPU (set when it ends; counts against GPU hours)."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    placed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu"],
                condition=Q(status__in=["queued", "running"], gpu__isnull=False),
                name="job_one_active_per_gpu",
            ),
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="job_progress_0_1"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="job_status_created"),
            models.Index(fields=["owner", "-created_at"], name="job_owner_created"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    @property
    def stage_label(self) -> str:
        """The stage in a person's words (jobs/stages.py)."""
        return stage_label(self.stage)

    @property
    def duration(self) -> timedelta | None:
        """How long it ran (so far, while it runs); None before it started."""
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def duration_text(self) -> str:
        """The duration in words ("1 h 2 min", "3 min 5 s", "42 s"); "" before it started."""
        if self.duration is None:
            return ""
        return seconds_text(self.duration.total_seconds())

    @property
    def eta_text(self) -> str:
        """The time the engine (or the runner's estimate) says is left, in words; "" when unknown."""
        return "" if self.eta_seconds is None else seconds_text(self.eta_seconds)

    @property
    def marker(self) -> str:
        """Tags every process of this attempt on the node (``TALKFORGE_JOB``), for safe killing."""
        return f"{self.pk}.{self.attempts}"

    @property
    def container_name(self) -> str:
        return f"talkforge-job-{self.pk}-{self.attempts}"


class JobLogChunk(models.Model):
    """A run of consecutive log lines of a job, written in one batch by the runner.

    Lines are numbered from 1 across all chunks; chunks never overlap. Appending a row per batch keeps
    writes cheap however long the log grows (rewriting one big text column would not)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_chunks")
    first_line = models.PositiveIntegerField()
    line_count = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["job", "first_line"]
        constraints = [models.UniqueConstraint(fields=["job", "first_line"], name="joblog_unique_first_line")]

    def __str__(self) -> str:
        return f"job {self.job_id} lines {self.first_line}–{self.first_line + self.line_count - 1}"

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")
