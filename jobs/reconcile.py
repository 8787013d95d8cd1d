"""Settling what crashes leave behind. Runs periodically (``manage.py housekeeping``).

- A running job whose heartbeat is stale lost its worker: its process tree is stopped on the node, then
  it is re-queued (attempts left) or failed; either way its slot is freed.
- A placed job that Redis does not know (Redis restarted empty, or the process died between commit
  and enqueue) is enqueued again under the same RQ id. The claim is a conditional update, so a job that
  ends up in the queue twice still runs once.
- Waiting jobs are offered the free slots.

For local nodes this must run on the node's own machine (it signals the job's process group there);
the compose file runs it beside the workers.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from gpu_nodes.connect import connection_for
from gpu_nodes.connections import NodeError

from . import queue, services
from .models import Job

logger = logging.getLogger(__name__)

ENQUEUE_GRACE = timedelta(seconds=5)  # a placed job's on_commit enqueue may still be on its way


@dataclass
class ReconcileReport:
    settled: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    reenqueued: list[int] = field(default_factory=list)
    placed: list[int] = field(default_factory=list)


def _stop_remains(job: Job) -> None:
    if job.pid is None or job.node_id is None:
        return
    try:
        conn = connection_for(job.node)
        try:
            docker = job.node.runtime == job.node.Runtime.DOCKER
            container = job.container_name if docker else None
            conn.stop(job.pid, marker=job.marker, grace=settings.JOB_KILL_GRACE, container=container)
        finally:
            conn.close()
    except NodeError as error:
        logger.warning("could not stop what job %s left on %s: %s", job.pk, job.node, error)


def jobs_reconcile() -> ReconcileReport:
    report = ReconcileReport()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT)
    dead = (
        Job.objects.select_related("node", "gpu")
        .filter(status=Job.Status.RUNNING)
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale))
    )
    for job in dead:
        if job.node_id and not job.node.reachable_here:
            continue  # a local node of another machine: its own housekeeping settles it
        _stop_remains(job)
        silence = (now - (job.heartbeat_at or job.started_at)).total_seconds()
        reason = f"its worker stopped responding (no heartbeat for {silence:.0f} s)"
        if job.cancel_requested_at is not None:
            if services.job_finish(job=job, status=Job.Status.CANCELED, error=f"Canceled; {reason}."):
                report.settled.append(job.pk)
        elif services.job_may_retry(job=job):
            if job.engine_exit_code is not None:
                reason += "; its engine had ended, so its results are settled again without rerunning it"
            if services.job_requeue(job=job, reason=reason):
                report.requeued.append(job.pk)
        elif services.job_finish(
            job=job,
            status=Job.Status.FAILED,
            error=f"The job stopped because {reason}; its processes on the node were stopped. "
            "Submit it again.",
        ):
            report.settled.append(job.pk)

    placed = Job.objects.select_related("node").filter(
        status=Job.Status.QUEUED, gpu__isnull=False, placed_at__lt=now - ENQUEUE_GRACE
    )
    for job in placed:
        state = queue.rq_state(job.rq_job_id)
        if state is None:
            queue.enqueue(job)
            report.reenqueued.append(job.pk)
        elif state in queue.RQ_ENDED or (state == queue.RQ_STARTED and job.placed_at < stale):
            # RQ finished with it yet it never ran; or a worker took it and died before claiming it (a
            # claim follows within milliseconds of RQ's "started"). Queue it again under a fresh id: the
            # claim is conditional, so even a late first run cannot make it run twice.
            Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(rq_job_id=uuid.uuid4())
            job.refresh_from_db()
            queue.enqueue(job)
            report.reenqueued.append(job.pk)

    report.placed = [job.pk for job in services.jobs_dispatch()]
    if report.settled or report.requeued or report.reenqueued:
        logger.info("reconciled: %s", report)
    return report
