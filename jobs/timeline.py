"""When things happened in a job, for a page to show: when each log line arrived and when the current
stage began.

The log itself is kept raw and whole in the database (``JobLogChunk``); these times are a display aid and
live beside the live events in Redis (the cache), under one key per job: ``{"lines": [[line, unix
seconds], …], "stage": [stage, unix seconds]}``. A line mark is added when a line arrives at least
``MARK_EVERY`` seconds after the previous mark, and a line reads the time of the last mark at or before
it. If Redis loses them, the log is shown without times and the stage without its elapsed time, never
with wrong ones.
"""

from __future__ import annotations

from django.core.cache import cache

MARK_EVERY = 2.0  # seconds: a line's time is known to about this
MAX_MARKS = 2000  # past this, every other mark goes (a long log's times get coarser, the key stays small)
KEEP_SECONDS = 90 * 24 * 3600


def _key(job_id: int) -> str:
    return f"talkforge:job-timeline:{job_id}"


def job_timeline(job_id: int) -> dict:
    """``{"lines": [[line, at], …], "stage": [stage, since] or None}``; empty when nothing is known."""
    stored = cache.get(_key(job_id)) or {}
    return {"lines": stored.get("lines", []), "stage": stored.get("stage")}


def job_timeline_store(job_id: int, *, lines: list[list[float]], stage: list | None) -> None:
    cache.set(_key(job_id), {"lines": lines, "stage": stage}, KEEP_SECONDS)


class LineMarks:
    """The runner's side: marks lines as they arrive and says when the stored copy is out of date."""

    def __init__(self, marks: list[list[float]]):
        self.marks = list(marks)
        self.changed = False

    def arrived(self, first_line: int, at: float) -> None:
        if self.marks and at - self.marks[-1][1] < MARK_EVERY:
            return
        self.marks.append([first_line, round(at, 1)])
        if len(self.marks) > MAX_MARKS:
            self.marks = self.marks[::2]
        self.changed = True


def job_stage_since(job) -> float | None:
    """When ``job`` entered its current stage (unix seconds), if the timeline knows that stage."""
    stage = job_timeline(job.pk)["stage"]
    return stage[1] if stage and stage[0] == job.stage else None
