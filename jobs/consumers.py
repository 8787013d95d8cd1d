"""Websockets: ``/ws/jobs/<id>/`` for one job, ``/ws/jobs/`` for all of the user's jobs (dashboard).

A job stream sends a snapshot first (state plus the stored log), then live events in order. Live log
events carry line numbers: lines the snapshot already held are dropped, and lines that went out before
this client subscribed but were not yet in the database when the snapshot was read are fetched from it,
so the browser sees every line exactly once, in order.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import events
from .models import Job
from .selectors import job_log_lines, jobs_visible_to
from .stages import stage_label
from .timeline import job_stage_since, job_timeline

SNAPSHOT_LOG_LINES = 2000
GAP_WAIT_SECONDS = 5.0


@database_sync_to_async
def _visible_job(user, job_id: int) -> Job | None:
    return jobs_visible_to(user).filter(pk=job_id).first()


@database_sync_to_async
def _snapshot(job_id: int) -> dict:
    job = Job.objects.select_related("node", "gpu").get(pk=job_id)
    first = max(0, job.log_line_count - SNAPSHOT_LOG_LINES)
    lines = job_log_lines(job, after=first, limit=job.log_line_count - first)
    return {
        **events.job_status_message(job),
        "stage_since": job_stage_since(job),
        "log_times": job_timeline(job_id)["lines"],
        "type": "snapshot",
        "kind": job.kind,
        "metrics": job.metrics,
        "log_first": first + 1,
        "log": lines,
        "log_line_count": first + len(lines),
    }


@database_sync_to_async
def _lines_between(job_id: int, after: int, before: int) -> list[str]:
    job = Job(pk=job_id)
    return job_log_lines(job, after=after, limit=before - after - 1)


@database_sync_to_async
def _timeline(job_id: int) -> dict:
    return job_timeline(job_id)


class LabelledStages:
    """Every message that names a stage carries its words too (jobs/stages.py)."""

    async def send_json(self, content, close=False):
        if content.get("stage") is not None:
            content = {**content, "stage_label": stage_label(content["stage"])}
        await super().send_json(content, close=close)


class JobConsumer(LabelledStages, AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or await _visible_job(user, self.job_id) is None:
            await self.close(code=4404)  # not found, whether it does not exist or is someone else's
            return
        self.group = events.job_group(self.job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        snapshot = await _snapshot(self.job_id)
        self.sent_lines = snapshot["log_line_count"]
        await self.send_json(snapshot)

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_log(self, event):
        """New lines, and with them the progress they moved (sent as its own message)."""
        first, lines = event["first"], event["lines"]
        if first > self.sent_lines + 1:
            await self._fill_gap(first)
        skip = max(0, self.sent_lines + 1 - first)
        if skip < len(lines):
            first, lines = first + skip, lines[skip:]
            await self.send_json({"type": "log", "first": first, "lines": lines, "at": event.get("at")})
            self.sent_lines = first + len(lines) - 1
        if event.get("progress"):
            await self.send_json({"type": "progress", "job": event["job"], **event["progress"]})

    async def _fill_gap(self, before: int) -> None:
        deadline = asyncio.get_running_loop().time() + GAP_WAIT_SECONDS
        while True:
            missing = await _lines_between(self.job_id, self.sent_lines, before)
            if len(missing) >= before - self.sent_lines - 1 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)  # the runner writes batches every JOB_DB_FLUSH_INTERVAL
        if missing:
            # Lines from the database carry no time of their own: the marks stored with them say when.
            times = (await _timeline(self.job_id))["lines"]
            await self.send_json(
                {"type": "log", "first": self.sent_lines + 1, "lines": missing, "log_times": times}
            )
            self.sent_lines += len(missing)

    async def job_status(self, event):
        await self.send_json({**event, "type": "status"})


class UserJobsConsumer(LabelledStages, AsyncJsonWebsocketConsumer):
    """Status and progress of every job of the connected user (staff: their own too, not everyone's)."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.group = events.user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_progress(self, event):
        await self.send_json({**event, "type": "progress"})

    async def job_status(self, event):
        await self.send_json({**event, "type": "status"})

    async def job_log(self, event):
        pass  # the dashboard shows progress, not logs

    async def job_notice(self, event):
        await self.send_json({**event, "type": "notice"})
