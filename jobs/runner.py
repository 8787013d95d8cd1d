"""The runner: owns one job attempt from claim to finish, and captures every error on the way.

RQ worker → ``run_job(job_id)`` → claim (queued → running, at most once) → the kind's plan (engine
command + console parser) → start on the node's connection → read the output stream, split on ``\\r``
and ``\\n`` → every line to the websocket at once, to the database in batches, through the parser into
progress → exit code and parser decide the outcome → finish, which frees the slot and places the next
waiting job. A watcher thread beats the heartbeat and stops the process tree when a cancel arrives.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from core import media
from core.errors import ServiceError
from gpu_nodes.connect import connection_for
from gpu_nodes.connections import ConnectionLost, NodeConnection, NodeError, Unreachable
from gpu_nodes.services import node_mark_unreachable
from jobs.console import Update

from . import events, services, timeline
from .kinds import Plan, kind_spec
from .models import Job, JobLogChunk
from .selectors import job_log_lines
from .streams import follow

logger = logging.getLogger(__name__)


class Reporter:
    """Keeps the whole log and the progress: every line goes live at once; the database gets batches."""

    def __init__(self, job: Job):
        self.job = job
        self.next_line = job.log_line_count + 1
        self.pending: list[str] = []
        self.state = {
            "stage": job.stage,
            "progress": job.progress,
            "eta_seconds": None,
            "metrics": dict(job.metrics),
            "stage_since": None,  # unix seconds when this attempt entered the stage; None: before it
        }
        known = timeline.job_timeline(job.pk)  # when lines arrived and the stage began (jobs/timeline.py)
        self.line_marks = timeline.LineMarks(known["lines"])
        if known["stage"] and known["stage"][0] == job.stage:
            self.state["stage_since"] = known["stage"][1]
        self.stage_changed = False
        self.dirty = False
        self.last_flush = time.monotonic()
        self.started = time.monotonic()
        self.group = events.job_group(job.pk)
        self.series: list[dict] = []  # sampled figures for the loss / PSNR curve, kept in the result

    def lines(self, lines: list[str], *, progress_changed: bool = False) -> None:
        """Publish a batch of lines, with the progress they moved (one message per read, not two)."""
        if not lines:
            return
        now = time.time()
        self.line_marks.arrived(self.next_line, now)
        message = {"type": "job.log", "job": self.job.pk, "first": self.next_line, "lines": lines, "at": now}
        if progress_changed:
            message["progress"] = self.state
        events.publish(self.group, message)
        self.pending.extend(lines)
        self.next_line += len(lines)

    def update(self, update: Update) -> None:
        state = self.state
        if update.stage is not None:
            if update.stage[:100] != state["stage"] or state["stage_since"] is None:
                state["stage_since"] = round(time.time(), 1)
                self.stage_changed = True
            state["stage"] = update.stage[:100]
        if update.progress is not None:
            state["progress"] = max(0.0, min(1.0, update.progress))
            elapsed = time.monotonic() - self.started
            if update.eta_seconds is not None:
                state["eta_seconds"] = update.eta_seconds
            elif 0.01 < state["progress"] < 1:
                state["eta_seconds"] = round(elapsed * (1 - state["progress"]) / state["progress"], 1)
        if update.metrics:
            state["metrics"] = {**state["metrics"], **update.metrics}
        self.dirty = True

    def maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= settings.JOB_DB_FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if not self.pending and not self.dirty:
            return
        lines, self.pending = self.pending, []
        if self.line_marks.changed or self.stage_changed:
            stage = [self.state["stage"], self.state["stage_since"]] if self.state["stage_since"] else None
            timeline.job_timeline_store(self.job.pk, lines=self.line_marks.marks, stage=stage)
            self.line_marks.changed = self.stage_changed = False
        with transaction.atomic():
            if lines:
                first = self.next_line - len(lines)
                JobLogChunk.objects.create(
                    job_id=self.job.pk, first_line=first, line_count=len(lines), text="\n".join(lines)
                )
            Job.objects.filter(pk=self.job.pk).update(
                log_line_count=self.next_line - 1,
                stage=self.state["stage"],
                progress=self.state["progress"],
                eta_seconds=self.state["eta_seconds"],
                metrics=self.state["metrics"],
            )
        if self.dirty:
            self.sample()
            # The dashboard hears about progress at the database's pace, not at every bar redraw.
            events.publish(
                events.user_group(self.job.owner_id),
                {"type": "job.progress", "job": self.job.pk, **self.state},
            )
        self.dirty = False
        self.last_flush = time.monotonic()

    SERIES_POINTS = 1000

    def sample(self) -> None:
        """One point of the curve per database write; halved when full, so any run fits in 1,000 points."""
        figures = {k: v for k, v in self.state["metrics"].items() if k in CURVE_METRICS}
        if not figures:
            return
        point = {"progress": round(self.state["progress"], 5), **figures}
        if self.series and {k: v for k, v in self.series[-1].items() if k != "stage"} == point:
            return
        self.series.append({**point, "stage": self.state["stage"]})
        if len(self.series) > self.SERIES_POINTS:
            self.series = self.series[::2]


CURVE_METRICS = {"loss", "psnr", "lpips (alex)", "lmd (fan)"}


class Watcher(threading.Thread):
    """Beats the heartbeat; on a cancel request, the time limit, or if the job was settled elsewhere, notes
    why and calls ``on_stop`` once (an engine's attempt kills its process tree; in-worker work is told to
    stop). ``on_tick``, if given, is called at every poll (in-worker work: write the log batch that is due,
    so a quiet process's last line still reaches the page)."""

    POLL = 0.25

    def __init__(self, job: Job, on_stop: Callable[[], None], on_tick: Callable[[], None] | None = None):
        super().__init__(name=f"job-{job.pk}-watcher", daemon=True)
        self.job, self.on_stop, self.on_tick = job, on_stop, on_tick
        self.stop_event = threading.Event()
        self.canceled = False
        self.lost = False
        self.timed_out = False

    def run(self) -> None:
        last_beat = 0.0
        started = time.monotonic()
        try:
            while not self.stop_event.wait(self.POLL):
                if self.job.timeout_seconds and time.monotonic() - started > self.job.timeout_seconds:
                    self.timed_out = True
                    self.on_stop()
                    return
                row = (
                    Job.objects.filter(pk=self.job.pk)
                    .values("status", "attempts", "cancel_requested_at")
                    .first()
                )
                if row is None or row["status"] != Job.Status.RUNNING or row["attempts"] != self.job.attempts:
                    self.lost = True  # settled by the reconciler: this attempt must not keep running
                    self.on_stop()
                    return
                if row["cancel_requested_at"] is not None:
                    self.canceled = True
                    self.on_stop()
                    return
                if time.monotonic() - last_beat >= settings.JOB_HEARTBEAT_INTERVAL:
                    Job.objects.filter(
                        pk=self.job.pk, status=Job.Status.RUNNING, attempts=self.job.attempts
                    ).update(heartbeat_at=timezone.now())
                    last_beat = time.monotonic()
                if self.on_tick is not None:
                    try:
                        self.on_tick()
                    except Exception:  # a log batch that fails now is written with the next one
                        logger.exception("job %s: the watcher's tick failed", self.job.pk)
        except Exception:
            logger.exception("watcher of job %s failed", self.job.pk)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def _settle_stopped(
    job: Job, watcher: Watcher, result: dict, *, time_limit: str, canceled: bool | None = None
) -> str | None:
    """The outcome when the watcher stopped the work (past its time limit, or canceled: ``canceled``
    when the caller knows more than the watcher): the job is settled so and the word for RQ's records
    returned; None when the work's own outcome decides."""
    if watcher.timed_out:
        services.job_finish(job=job, status=Job.Status.FAILED, error=time_limit, result=result)
        return "timed out"
    if watcher.canceled if canceled is None else canceled:
        services.job_finish(job=job, status=Job.Status.CANCELED, error="Canceled by request.", result=result)
        return "canceled"
    return None


def _settle(job: Job, result: dict, *, error: str = "") -> str:
    """The work's own outcome: failed with ``error``, else succeeded; the word for RQ's records."""
    if error:
        services.job_finish(job=job, status=Job.Status.FAILED, error=error, result=result)
        return "failed"
    services.job_finish(job=job, status=Job.Status.SUCCEEDED, result=result)
    return "succeeded"


def _tail(lines: list[str], count: int = 8) -> str:
    useful = [line for line in lines if line.strip()]
    return "\n".join(useful[-count:])


def run_job(job_id: int) -> str:
    """RQ entry point. Returns a short word for RQ's own records; the Job row holds the real outcome."""
    close_old_connections()
    worker_name = f"{socket.gethostname()}:{threading.get_native_id()}"
    job = services.job_claim(job_id=job_id, worker_name=worker_name)
    if job is None:
        return "skipped"
    try:
        return _run_claimed(job)
    finally:
        events.publisher.flush(timeout=5)
        close_old_connections()


def _run_claimed(job: Job) -> str:
    spec = kind_spec(job.kind)
    if spec.run is not None:
        return InWorker(job).run(spec.run)
    if spec.before_plan is not None:
        # The kind's in-worker step (jobs/kinds.py ``before_plan``) runs first, with the job's heartbeat,
        # cancel and log; the attempt then goes on from the log line and stage it left. Each has the job's
        # time limit on its own (the step is short next to a render: a text's speech).
        if (outcome := InWorker(job).run_before_plan(spec.before_plan)) is not None:
            return outcome
        job.refresh_from_db()
    try:
        plan = spec.plan(job)
        conn = connection_for(job.node)
    except Unreachable as error:
        return _not_started(job, error)
    except NodeError as error:
        services.job_finish(job=job, status=Job.Status.FAILED, error=f"Could not start: {error}")
        return "failed"
    except Exception as error:
        # Any fault in a kind's plan fails the job at once and frees its slot; a missing row (deleted
        # while the job waited, or not the owner's) reads as what it is, not as a traceback.
        logger.exception("job %s: its plan failed", job.pk)
        reason = "what it works on no longer exists" if isinstance(error, ObjectDoesNotExist) else error
        services.job_finish(
            job=job, status=Job.Status.FAILED, error=f"Could not start: {type(error).__name__}: {reason}"
        )
        return "failed"
    attempt = Attempt(job, plan, conn)
    try:
        if job.engine_exit_code is not None:
            return attempt.settle_ended()
        return attempt.run()
    except NotStarted as error:
        return _not_started(job, error.__cause__ or error)
    except ConnectionLost as error:
        # The node may still be running the engine: stop it over a fresh connection, then retry or fail.
        attempt.abandon()
        reason = f"the connection to node {job.node.name} was lost ({error})"
        if services.job_may_retry(job=job) and services.job_requeue(job=job, reason=reason):
            return "requeued"
        error = (
            f"The job stopped because {reason}. Its processes on the node were stopped. "
            "Check the node's network, then submit the job again."
        )
        services.job_finish(job=job, status=Job.Status.FAILED, error=error)
        return "failed"
    except Exception as error:
        logger.exception("job %s crashed in the runner", job.pk)
        attempt.abandon()
        services.job_finish(
            job=job,
            status=Job.Status.FAILED,
            error=f"Internal error while running the job: {type(error).__name__}: {error}",
        )
        return "failed"
    except BaseException:
        # The worker itself is being stopped (a second Ctrl-C or SIGTERM makes RQ raise SystemExit here):
        # leave nothing running on the node that no one watches, and let the job run again elsewhere.
        attempt.abandon()
        reason = "its worker was stopped"
        if not (services.job_may_retry(job=job) and services.job_requeue(job=job, reason=reason)):
            services.job_finish(job=job, status=Job.Status.FAILED, error=f"The job stopped because {reason}.")
        raise
    finally:
        conn.close()


class NotStarted(Exception):
    """The engine never started: the node could not be reached for the uploads or the start."""


def _not_started(job: Job, error: Exception) -> str:
    """Nothing ran: the node is marked offline (placement skips it until a probe finds it back) and the job
    waits for a slot again without losing an attempt."""
    node_mark_unreachable(node=job.node, error=str(error))
    reason = f"node {job.node.name} could not be reached ({error})"
    if services.job_requeue(job=job, reason=reason, refund=True):
        return "requeued"
    return "lost"


class Attempt:
    """One attempt at a job on its node: start the engine, stream its console, settle the outcome."""

    # A child that outlives the engine may hold the pipe open: stop reading this long after the exit.
    EXIT_DRAIN_SECONDS = 2.0

    def __init__(self, job: Job, plan: Plan, conn: NodeConnection):
        self.job, self.plan, self.conn = job, plan, conn
        self.reporter = Reporter(job)
        self.recent: list[str] = []
        self.process = None
        self.watcher: Watcher | None = None
        self.first_line = self.reporter.next_line  # this attempt's first log line

    def run(self) -> str:
        invocation = self.plan.invocation
        try:
            for item, remote_path in self.plan.uploads:
                with media.local_path(item) as local_path:
                    self.conn.put(local_path, remote_path)
            if self.plan.prepare:
                self.plan.prepare(self.conn)
            self.process = self.conn.start(
                invocation.argv, marker=self.job.marker, cwd=invocation.cwd, env=invocation.env
            )
        except (Unreachable, ConnectionLost) as error:
            raise NotStarted from error
        except NodeError as error:
            services.job_finish(job=self.job, status=Job.Status.FAILED, error=str(error))
            return "failed"
        Job.objects.filter(pk=self.job.pk).update(pid=self.process.pid, stage="running")
        pid, container = self.process.pid, invocation.container
        self.watcher = Watcher(
            self.job,
            on_stop=lambda: self.conn.stop(
                pid, marker=self.job.marker, grace=settings.JOB_KILL_GRACE, container=container
            ),
        )
        self.watcher.start()
        try:
            returncode = self._stream()
            # What the engine left running goes now; the watcher keeps beating while results are fetched.
            self.conn.kill_tree(self.process.pid, marker=self.job.marker, grace=1.0)
            self.reporter.flush()
            self._record_exit(returncode)
            return self._settle(returncode)
        finally:
            self.watcher.stop()

    def _record_exit(self, returncode: int) -> None:
        """From here on the engine never runs again for this job: a worker lost while the outcome is being
        settled hands over to one that settles it from this record (``settle_ended``)."""
        watcher = self.watcher
        if watcher.lost or watcher.canceled or watcher.timed_out:
            return
        Job.objects.filter(pk=self.job.pk, status=Job.Status.RUNNING, attempts=self.job.attempts).update(
            engine_exit_code=returncode, engine_log_from=self.first_line, stage="finishing"
        )

    def settle_ended(self) -> str:
        """An earlier attempt's engine ended, but its worker was lost before the outcome was settled: read
        that attempt's log through the parser again and settle from its recorded exit code."""
        job = self.job
        lines = job_log_lines(job, after=job.engine_log_from - 1)
        for line in lines:
            if update := self.plan.parser.feed(line):
                self.reporter.update(update)
        self.recent = lines[-50:]
        self.reporter.lines(
            [f"[talkforge] the engine had ended (exit {job.engine_exit_code}); settling its results"]
        )
        self.watcher = Watcher(job, on_stop=lambda: None)
        self.watcher.start()
        try:
            self.reporter.flush()
            return self._settle(job.engine_exit_code)
        finally:
            self.watcher.stop()

    def _stream(self) -> int:
        return follow(
            self.process, self._handle, max_line=settings.JOB_MAX_LOG_LINE, poll=0.5,
            drain_seconds=self.EXIT_DRAIN_SECONDS, on_idle=self.reporter.maybe_flush,
        )  # fmt: skip

    def _handle(self, lines: list[str]) -> None:
        changed = False
        for line in lines:
            update = self.plan.parser.feed(line)
            if update:
                self.reporter.update(update)
                changed = True
        self.reporter.lines(lines, progress_changed=changed)
        self.recent.extend(lines)
        del self.recent[:-50]
        self.reporter.maybe_flush()

    def _stop_everything(self, grace: float) -> None:
        """Nothing of this attempt outlives it, whatever the engine left behind."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.process is not None:
            self.conn.kill_tree(self.process.pid, marker=self.job.marker, grace=grace)

    def _settle(self, returncode: int) -> str:
        job, watcher = self.job, self.watcher
        if watcher.lost:
            return "lost"  # the reconciler settled this attempt already
        self.reporter.sample()
        result = {
            **self.plan.outputs,
            "exit_code": returncode,
            "metrics": self.reporter.state["metrics"],
            "series": self.reporter.series,
        }
        time_limit = (
            f"The job ran past its time limit of {job.timeout_seconds} s; its processes were stopped. "
            "Submit it again with a longer timeout if it needs more time."
        )
        if stopped := _settle_stopped(job, watcher, result, time_limit=time_limit):
            return stopped
        error = self.plan.parser.outcome(returncode)
        if error:
            return _settle(job, result, error=f"{error}\n\n{_tail(self.recent)}".strip())
        try:
            if self.plan.verify and (problem := self.plan.verify(self.conn)):
                return _settle(job, result, error=problem)
            if self.plan.finish:
                result.update(self.plan.finish(self.conn))
            result["files"] = self._collect()
        except NodeError as error:
            return _settle(job, result, error=f"Could not fetch the results: {error}")
        outcome = _settle(job, result)
        self._clean_up()
        return outcome

    def _collect(self) -> dict[str, str]:
        """Bring the job's result files into the media store; their paths there."""
        files = {}
        for remote_path, name in self.plan.collect:
            relative = f"jobs/{self.job.pk}/{name}"
            with media.writing(relative) as local_path:
                self.conn.get(remote_path, local_path)
            files[name] = relative
        return files

    def _clean_up(self) -> None:
        workdir = PurePosixPath(self.job.node.workdir)
        doomed = [path for path in self.plan.cleanup if workdir in PurePosixPath(path).parents]
        if not doomed:
            return
        try:
            self.conn.run(["rm", "-rf", "--", *doomed], timeout=300)
        except NodeError:
            logger.warning("could not remove %s on node %s", doomed, self.job.node.name, exc_info=True)

    def abandon(self) -> None:
        """After an internal error: stop the engine and keep what was logged."""
        try:
            self._stop_everything(grace=settings.JOB_KILL_GRACE)
        except Exception:
            logger.exception("could not stop the processes of job %s", self.job.pk)
        try:
            self.reporter.flush()
        except Exception:
            logger.exception("could not save the log of job %s", self.job.pk)


class InWorker:
    """A job whose work is a function run in this worker process, not a command on the node. It gets what
    an engine's attempt gets: heartbeat, cancel (``should_stop()`` turns true), the time limit, log lines
    and progress (``log()``, live and batched to the database) and one settled outcome."""

    def __init__(self, job: Job):
        self.job = job
        self.reporter = Reporter(job)
        self.lock = threading.Lock()  # log() may be called from the work's own threads
        self.stop = threading.Event()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def log(self, line: str, *, stage: str | None = None, progress: float | None = None) -> None:
        with self.lock:
            changed = stage is not None or progress is not None
            if changed:
                self.reporter.update(Update(stage=stage, progress=progress))
            self.reporter.lines([line[: settings.JOB_MAX_LOG_LINE]], progress_changed=changed)
            self.reporter.maybe_flush()

    def _flush_due(self) -> None:
        """Lines logged since the last batch reach the database once the interval has passed, even when no
        line follows them (a render that went quiet)."""
        with self.lock:
            self.reporter.maybe_flush()

    def _watched(self, work) -> tuple[Watcher, dict]:
        """``work(job, self)`` under the watcher; its result, or ``{"error": …}`` when it raised."""
        Job.objects.filter(pk=self.job.pk).update(stage="running")
        watcher = Watcher(self.job, on_stop=self.stop.set, on_tick=self._flush_due)
        watcher.start()
        try:
            result = work(self.job, self)
        except Exception as error:
            logger.exception("job %s failed in the worker", self.job.pk)
            result = {"error": f"Internal error while running the job: {type(error).__name__}: {error}"}
        finally:
            watcher.stop()
            with self.lock:
                self.reporter.flush()
        return watcher, result

    def run_before_plan(self, work) -> str | None:
        """A plan kind's in-worker step (KindSpec ``before_plan``): None when it went well and the plan
        may follow; otherwise the job is settled (failed with the step's message, canceled, timed out) and
        the word for RQ's records returned."""

        def step(job: Job, context: InWorker) -> dict:
            try:
                work(job, context)
            except ServiceError as error:  # what cannot be done, in the person's words
                return {"error": str(error)}
            except ObjectDoesNotExist:  # deleted while the job waited, or not the owner's
                return {"error": "What the job works on no longer exists."}
            return {}

        watcher, result = self._watched(step)
        if stopped := self._stopped(watcher, result):
            return stopped
        if error := result.get("error"):
            return _settle(self.job, result, error=error)
        return None

    def run(self, work) -> str:
        watcher, result = self._watched(work)
        if stopped := self._stopped(watcher, result):
            return stopped
        return _settle(self.job, result, error=result.get("error") or "")

    def _stopped(self, watcher: Watcher, result: dict) -> str | None:
        """The outcome when the watcher stopped the work (or lost the job); None when the work decides."""
        job = self.job
        if watcher.lost:
            return "lost"
        time_limit = f"The job ran past its time limit of {job.timeout_seconds} s and was stopped."
        # A cancel the watcher had not polled yet counts too: the work may have heard it sooner (a chat
        # reply's barge-in stops the turn within 0.1 s of the request, chat/live.py).
        canceled = (
            watcher.canceled or Job.objects.filter(pk=job.pk, cancel_requested_at__isnull=False).exists()
        )
        return _settle_stopped(job, watcher, result, time_limit=time_limit, canceled=canceled)
