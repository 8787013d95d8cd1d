"""The RQ side: one queue per node; the Job row says what belongs in it."""

from __future__ import annotations

from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus

from core.queues import queue_named, redis_connection

RUN_JOB = "jobs.tasks.run_job"


def enqueue(job) -> None:
    """Put a placed job into its node's queue under its pre-chosen RQ id."""
    queue_named(job.node.queue_name).enqueue(
        RUN_JOB,
        job.pk,
        job_id=str(job.rq_job_id),
        job_timeout=-1,  # our runner enforces limits and kills whole process trees
        result_ttl=3600,
        failure_ttl=86400,
        description=f"talkforge job {job.pk}",
    )


def rq_state(rq_job_id) -> str | None:
    """RQ's status for the id, or None when Redis has no trace of it."""
    try:
        return RQJob.fetch(str(rq_job_id), connection=redis_connection()).get_status(refresh=False)
    except NoSuchJobError:
        return None


RQ_STARTED = JobStatus.STARTED
RQ_ENDED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def remove(job) -> None:
    """Best effort: take a job that will not run out of its queue."""
    if job.node_id is None:
        return
    queue_named(job.node.queue_name).remove(str(job.rq_job_id))
