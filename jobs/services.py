"""Everything that changes a job: submit, place, claim, finish, cancel, retry."""

from __future__ import annotations

import logging
import uuid

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, Exists, F, Max, OuterRef, When
from django.utils import timezone

from accounts.quotas import concurrent_limits, gpu_seconds_of, limits_for, quota_check_submit
from core.errors import ServiceError
from core.params import JOB_TIMEOUT
from gpu_nodes.models import Gpu, Node
from gpu_nodes.node_engines import runs_engine_q

from . import events, queue
from .kinds import KINDS, job_folder, kind_spec, public_kinds
from .models import Job

logger = logging.getLogger(__name__)


# --- submit ---------------------------------------------------------------------------------------


@transaction.atomic
def job_submit(
    *,
    owner,
    kind: str,
    params: dict | None = None,
    node: Node | None = None,
    parent: Job | None = None,
    avatar=None,
    max_attempts: int = 1,
    timeout_seconds: int | None = None,
) -> Job:
    """Record a job and, once committed, place it on a free slot (or leave it waiting in line).

    For the services that own a kind (they checked what the job works on); users submit raw jobs through
    :func:`job_submit_public`."""
    if kind not in KINDS:
        raise ServiceError(f"Unknown job kind {kind!r}.")
    if timeout_seconds is not None:
        timeout_seconds = JOB_TIMEOUT.clean(timeout_seconds)
    if not isinstance(params or {}, dict):
        raise ServiceError("params must be an object of parameter names and values.")
    params = dict(params or {})
    cleaned = kind_spec(kind).clean(params, owner=owner)
    if parent is None:
        # What a person starts counts against their limits; the later steps of a pipeline they started
        # were counted with its first step. Every job gets a time limit: at most their longest job.
        timeout_seconds = quota_check_submit(owner=owner, timeout_seconds=timeout_seconds)
    elif timeout_seconds is None:
        timeout_seconds = limits_for(owner).max_job_seconds
    if node is not None:
        if not node.enabled:
            raise ServiceError(
                f"Node {node.name} is disabled: choose another node or leave it to the scheduler."
            )
        cleaned["node"] = node.name
    job = Job.objects.create(
        owner=owner,
        kind=kind,
        params=cleaned,
        parent=parent,
        avatar=avatar,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        stage="waiting for a slot",
    )
    transaction.on_commit(jobs_dispatch)
    events.job_status_publish(job)
    return job


def job_submit_public(
    *, owner, kind: str, params: dict | None = None, node: Node | None = None, timeout_seconds=None
) -> Job:
    """A raw job submitted by a person (``/api/jobs/``, the jobs page): only kinds marked public. Every
    other kind starts from its own service (training an avatar, generating a video, sending a message),
    which checks what the job will touch belongs to the person."""
    if kind not in public_kinds():
        raise ServiceError(
            f"Jobs of kind {str(kind)[:40]!r} cannot be submitted directly: choose one of "
            f"{', '.join(public_kinds())}. Avatars, videos and chat replies start from their own pages "
            "and API endpoints."
        )
    return job_submit(owner=owner, kind=kind, params=params, node=node, timeout_seconds=timeout_seconds)


# --- deleting an account (accounts/deletion.py) -----------------------------------------------------


def jobs_refuse_erasure(user) -> str | None:
    """Why the person's account cannot be deleted now: a job of theirs still runs or waits."""
    if Job.objects.filter(owner=user, status__in=Job.ACTIVE_STATUSES).exists():
        return (
            "Some of your jobs are queued or running: cancel them or wait for them, then delete the account."
        )
    return None


def jobs_collect_erasure(user, erasure) -> None:
    """The files of every job of the person: what it brought back, and its scratch folder on its node."""
    for job in Job.objects.filter(owner=user).select_related("node"):
        erasure.add_media(f"jobs/{job.pk}")
        if job.node is not None:
            erasure.add_node_path(job.node, job_folder(job))


# --- placement ------------------------------------------------------------------------------------


def _job_engine(job: Job):
    """The engine the job runs: its avatar's (None for jobs without one, the platform's own kinds, and for
    kinds that say this job does not run it, e.g. a spoken-only chat reply)."""
    if not (job.avatar_id and job.avatar):
        return None
    uses_engine = kind_spec(job.kind).uses_engine
    if uses_engine is not None and not uses_engine(job):
        return None
    return job.avatar.engine_plugin


def _free_slots(job: Job, *, fitting: bool = True):
    """Free slots that can take ``job``, best first. ``fitting`` False leaves out the engine's needs (which
    nodes have it, how much GPU memory it takes): what would be free if the job asked for less."""
    busy = Job.objects.filter(gpu=OuterRef("pk"), status__in=Job.ACTIVE_STATUSES)
    slots = (
        Gpu.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(present=True, node__enabled=True, node__status=Node.Status.ONLINE)
        .exclude(Exists(busy))
        .select_related("node")
        .order_by("node__name", "index")
    )
    spec = kind_spec(job.kind)
    engine = _job_engine(job)
    if fitting and engine is not None:
        slots = slots.filter(id__in=Gpu.objects.filter(runs_engine_q(engine, "node__")).values("id"))
        if need := engine.gpu_mb(job.kind):
            # A real engine's job never lands on a CPU slot; a GPU whose free memory at the last probe is
            # below the engine's need is skipped (another process may hold it).
            slots = (
                slots.exclude(index=Gpu.CPU_INDEX)
                .annotate(free_mb=F("memory_total_mb") - F("memory_used_mb"))
                .filter(free_mb__gte=need)
            )
    if job.params.get("node"):
        slots = slots.filter(node__name=job.params["node"])
    elif spec.prefer is not None and (preferred := spec.prefer(job)):
        rank = Case(
            *(When(node_id=node_id, then=i) for i, node_id in enumerate(preferred)), default=len(preferred)
        )
        slots = slots.order_by(rank, "node__name", "index")
    return slots


def _waiting_reason(job: Job) -> str | None:
    """Why ``job`` waits although slots are free (its engine's needs), or None."""
    engine = _job_engine(job)
    if engine is None or not _free_slots(job, fitting=False).exists():
        return None
    need = engine.gpu_mb(job.kind)
    if need:
        return f"waiting: no GPU with {need} MB free that can run {engine.name}"
    return f"waiting: no free node that can run {engine.name}"


def _holding(owners) -> dict[int, int]:
    """How many slots each of these owners' jobs hold now."""
    holders = Job.objects.filter(status__in=Job.ACTIVE_STATUSES, gpu__isnull=False, owner__in=owners)
    return {row["owner"]: row["n"] for row in holders.values("owner").annotate(n=Count("id"))}


def _waiting_jobs() -> list[Job]:
    """Jobs waiting for a slot, fairest first: round-robin between owners.

    Owners holding fewer slots go first; between equals, the one whose last job was placed longest ago
    (or never); then the oldest job. One person's batch of twenty cannot starve someone else's one."""
    waiting = list(
        # A kind no installed app registers (a row left by a removed app) cannot run: it waits, shown.
        Job.objects.filter(status=Job.Status.QUEUED, gpu__isnull=True, kind__in=list(KINDS)).order_by(
            "created_at", "id"
        )[:200]
    )
    owners = {job.owner_id for job in waiting}
    holding = _holding(owners)
    placed = Job.objects.filter(placed_at__isnull=False, owner__in=owners).values("owner")
    last_placed = {row["owner"]: row["last"].timestamp() for row in placed.annotate(last=Max("placed_at"))}
    return sorted(
        waiting,
        key=lambda job: (
            holding.get(job.owner_id, 0),
            last_placed.get(job.owner_id, 0.0),
            job.created_at,
            job.pk,
        ),
    )


def _place(job_id: int) -> Job | None:
    """Give one waiting job a free slot. The row locks and the unique index keep a slot to one job."""
    try:
        with transaction.atomic():
            job = (
                Job.objects.select_for_update(skip_locked=True)
                .filter(pk=job_id, status=Job.Status.QUEUED, gpu__isnull=True)
                .first()
            )
            if job is None:
                return None
            slot = _free_slots(job).first()
            if slot is None:
                reason = _waiting_reason(job)
                if reason is None and job.stage.startswith("waiting: no "):
                    reason = "waiting for a slot"  # what it waited for is there now, only busy
                if reason is not None and job.stage != reason:
                    job.stage = reason
                    job.save(update_fields=["stage"])
                    events.job_status_publish(job)
                return None
            job.node, job.gpu, job.placed_at = slot.node, slot, timezone.now()
            job.stage = "placed"
            job.save(update_fields=["node", "gpu", "placed_at", "stage"])
            transaction.on_commit(lambda: queue.enqueue(job))
            events.job_status_publish(job)
            return job
    except IntegrityError:
        return None  # another dispatcher took that slot first; the next round retries


def jobs_dispatch() -> list[Job]:
    """Place as many waiting jobs as there are free slots, each person within their concurrent limit."""
    placed: list[Job] = []
    taken: dict[int, int] = {}  # slots given to each owner in this round
    waiting = _waiting_jobs()
    limits = concurrent_limits({job.owner_id for job in waiting})
    holding = _holding({job.owner_id for job in waiting})
    for job in waiting:
        if holding.get(job.owner_id, 0) + taken.get(job.owner_id, 0) >= limits[job.owner_id]:
            continue
        placed_job = _place(job.pk)
        if placed_job is not None:
            placed.append(placed_job)
            taken[job.owner_id] = taken.get(job.owner_id, 0) + 1
    return placed


# --- the runner's transitions -----------------------------------------------------------------------


def job_claim(*, job_id: int, worker_name: str) -> Job | None:
    """queued+placed → running, at most once. None if the job is not (or no longer) for us to run."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Job.objects.filter(
            pk=job_id, status=Job.Status.QUEUED, gpu__isnull=False, cancel_requested_at__isnull=True
        ).update(
            status=Job.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker_name=worker_name[:255],
            stage="starting",
            attempts=F("attempts") + 1,
        )
        if not claimed:
            return None
        job = Job.objects.select_related("node", "gpu", "owner").get(pk=job_id)
        events.job_status_publish(job)
    return job


def job_finish(*, job: Job, status: str, error: str = "", result: dict | None = None) -> bool:
    """running → terminal for this attempt. False if someone else (the reconciler) settled it first."""
    now = timezone.now()
    fields = {"status": status, "finished_at": now, "error": error[:10000], "eta_seconds": None}
    if status == Job.Status.SUCCEEDED:
        fields |= {"progress": 1.0, "stage": "done"}
    if result is not None:
        fields["result"] = result
    with transaction.atomic():
        settled = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts).update(
            **fields
        )
        if settled:
            job.refresh_from_db()
            job.gpu_seconds = gpu_seconds_of(job)
            if job.gpu_seconds:
                Job.objects.filter(pk=job.pk).update(gpu_seconds=job.gpu_seconds)
            events.job_status_publish(job)
            transaction.on_commit(jobs_dispatch)
            _after_on_commit(job)
    return bool(settled)


def _after_on_commit(job: Job) -> None:
    """Run the kind's follow-up (the next pipeline step, records) once the end of the job is committed."""
    spec = KINDS.get(job.kind)  # None: a kind no installed app registers
    after = spec.after if spec is not None else None
    if after is not None:
        transaction.on_commit(
            lambda: after(Job.objects.select_related("avatar", "node", "owner").get(pk=job.pk))
        )


def job_may_retry(*, job: Job) -> bool:
    """Whether a job whose attempt was cut short may run again: attempts are left, or its engine had ended
    already (then one more attempt only settles the results: the engine does not run again)."""
    row = Job.objects.filter(pk=job.pk).values("attempts", "max_attempts", "engine_exit_code").first()
    if row is None:
        return False
    if row["engine_exit_code"] is not None:
        return row["attempts"] <= row["max_attempts"]
    return row["attempts"] < row["max_attempts"]


def job_requeue(*, job: Job, reason: str, refund: bool = False) -> bool:
    """running → queued without a slot, for another attempt under a fresh RQ id. ``refund``: the attempt
    never started the engine (the node could not be reached), so it does not count."""
    extra = {"attempts": F("attempts") - 1} if refund else {}
    with transaction.atomic():
        row = Job.objects.filter(pk=job.pk).values("engine_exit_code", "node__name", "params").first()
        if row and row["engine_exit_code"] is not None and row["node__name"]:
            # The engine ended on this node and its results are there: settling them must happen there.
            extra["params"] = {**row["params"], "node": row["node__name"]}
        moved = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts).update(
            **extra,
            status=Job.Status.QUEUED,
            node=None,
            gpu=None,
            pid=None,
            placed_at=None,
            heartbeat_at=None,
            rq_job_id=uuid.uuid4(),
            stage=f"waiting to retry: {reason}"[:100],
        )
        if moved:
            job.refresh_from_db()
            events.job_status_publish(job)
            transaction.on_commit(jobs_dispatch)
    return bool(moved)


# --- cancel ---------------------------------------------------------------------------------------


def job_cancel(*, job: Job) -> Job:
    """Cancel a job. A waiting job ends at once; a running one is stopped by its runner, which kills the
    engine's whole process tree before the job is marked canceled and its slot freed."""
    if job.is_terminal:
        raise ServiceError(f"Job #{job.pk} has already {job.status}; there is nothing to cancel.")
    now = timezone.now()
    with transaction.atomic():
        ended = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.CANCELED,
            finished_at=now,
            cancel_requested_at=now,
            stage="canceled",
            eta_seconds=None,
        )
        if not ended:
            Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, cancel_requested_at__isnull=True).update(
                cancel_requested_at=now, stage="canceling"
            )
        job.refresh_from_db()
        events.job_status_publish(job)
        if ended:
            placed = job.node_id is not None
            transaction.on_commit(lambda: (queue.remove(job) if placed else None, jobs_dispatch()))
            _after_on_commit(job)
    return job
