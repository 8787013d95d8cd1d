"""Reading engine consoles into stages, progress, ETA and metrics: what every engine's parsers share.

Formats:
- stage banners ``[INFO] ===== extract audio from … =====`` (GaussianTalker data_utils/process.py:22 and
  the rest of its tasks; SyncTalk data_utils/process.py:16 likewise);
- tqdm bars ``Training progress:  45%|…| 3600/7999 [12:34<15:20,  4.78it/s, Loss=0.0123, psnr=31.52]``
  (GaussianTalker train.py:68, postfix at :205);
- GaussianTalker's ``safe_state`` suffix `` [dd/mm HH:MM:SS]`` on stdout lines (utils/general_utils.py:127).

Each engine's own tables and parsers live in its package (``<engine>/parsers.py``).
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jobs.console import BANNER, ConsoleParser, Update, strip_timestamp

BAR = re.compile(
    r"^(?:(?P<desc>[^|]*?):\s*)?(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)(?:,\s*(?P<rate>[^,\]]*))?(?:,\s*(?P<postfix>[^\]]*))?\]"
)
POSTFIX_ITEM = re.compile(r"(?P<key>[A-Za-z_][\w ()]*?)=(?P<value>-?[\d.]+(?:e-?\d+)?|nan|inf)")


# Where a tqdm redraw ends: "… 3600/7999 [12:34<15:20,  4.78it/s, Loss=0.01]" (its postfix holds no "]").
# A bar that is never closed (SyncTalk nerf_triplane/utils.py:1056, Trainer.test) or a print that comes
# while a bar is open (GaussianTalker train.py:180) leaves the next stdout text on the bar's own line.
BAR_END = re.compile(r"\d+%(?:\|[^|]*\|)?\s*\d+/\d+\s*\[[^\]\[]*\]")


def split_after_bar(line: str) -> tuple[str, str]:
    """``(bar, rest)`` for a line that carries text glued after a tqdm redraw, else ``(line, "")``."""
    match = BAR_END.search(line)
    if match is None or not line[match.end() :].strip():
        return line, ""
    return line[: match.end()], line[match.end() :]


def merge_updates(first: Update | None, second: Update | None) -> Update | None:
    """One update for two pieces of one line: the later piece wins where both say something."""
    if first is None or second is None:
        return first or second
    return Update(
        stage=second.stage if second.stage is not None else first.stage,
        progress=second.progress if second.progress is not None else first.progress,
        eta_seconds=second.eta_seconds if second.eta_seconds is not None else first.eta_seconds,
        metrics={**first.metrics, **second.metrics},
        event=second.event if second.event is not None else first.event,
    )


def clock_seconds(text: str) -> float | None:
    """tqdm's ``[HH:]MM:SS`` → seconds; ``?`` → None."""
    if not text or "?" in text:
        return None
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


@dataclass(frozen=True)
class Bar:
    desc: str
    n: int
    total: int
    remaining_seconds: float | None
    postfix: dict[str, float]


def parse_bar(line: str) -> Bar | None:
    match = BAR.search(line)
    if match is None:
        return None
    postfix = {}
    for item in POSTFIX_ITEM.finditer(match["postfix"] or ""):
        postfix[item["key"].strip()] = float(item["value"])
    return Bar(
        desc=(match["desc"] or "").strip(),
        n=int(match["n"]),
        total=int(match["total"]),
        remaining_seconds=clock_seconds(match["remaining"]),
        postfix=postfix,
    )


# Colour codes, in case an engine runs under a PTY or decides it has a terminal.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The line a Python traceback ends with: ``KeyError: 'vertices'``, ``torch.cuda.OutOfMemoryError: …``.
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Interrupt|Exit)\b(?::.*)?$")


def clean_line(line: str) -> str:
    """A console line without colour codes, surrounding blanks and the ``safe_state`` timestamp."""
    return strip_timestamp(ANSI_ESCAPE.sub("", line).strip()).strip()


def finite_metrics(values: dict[str, float]) -> dict[str, float]:
    """nan/inf are not JSON: PostgreSQL jsonb and browsers reject them."""
    return {key: value for key, value in values.items() if math.isfinite(value)}


# --- known failures --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownFailure:
    """A console line that means the run failed, whatever the exit code, and what the user should do."""

    pattern: re.Pattern[str]
    message: str
    stages: frozenset[str] | None = None  # only while one of these stages runs; None: any time


def known(pattern: str, message: str, stages: Iterable[str] | None = None) -> KnownFailure:
    return KnownFailure(re.compile(pattern), message, frozenset(stages) if stages is not None else None)


# Shared by the process.py lineage (AD-NeRF → RAD-NeRF → ER-NeRF → both engines): landmark extraction
# takes len() of face_alignment's None on a faceless frame (GaussianTalker data_utils/process.py:88,
# SyncTalk data_utils/process.py:63).
NO_FACE = known(
    r"TypeError: object of type 'NoneType' has no len\(\)",
    "A frame without a detectable face: face_alignment found no face in at least one frame, and landmark "
    "extraction crashed. Use a video that shows the whole face, facing the camera, in every frame (cut the "
    "frames without it) and run preprocessing again.",
    stages={"landmarks"},
)
CUDA_OOM = known(
    r"CUDA out of memory|OutOfMemoryError",
    "The GPU ran out of memory. Run the job on a GPU with more memory, or with nothing else running on it.",
)


class CrashWatch:
    """Remembers the first known failure line, and the exception the last traceback ended with.

    process.py runs most steps through ``os.system``: a child that crashes prints its traceback and the
    parent goes on, often to exit 0, so a traceback in the console is itself the sign of a failure."""

    def __init__(self, failures: Sequence[KnownFailure]):
        self.failures = failures
        self.failure: str | None = None
        self.exception: str | None = None
        self.exception_stage: str | None = None
        self._in_traceback = False

    def see(self, line: str, stage: str | None) -> str | None:
        """The known failure this (clean) line announces, if any; also follows tracebacks."""
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
        elif self._in_traceback and EXCEPTION_LINE.match(line):
            self.exception, self.exception_stage = line, stage
            self._in_traceback = False
        for failure in self.failures:
            if (failure.stages is None or stage in failure.stages) and failure.pattern.search(line):
                if self.failure is None:
                    self.failure = failure.message
                return failure.message
        return None


def returncode_message(program: str, returncode: int) -> str:
    if returncode in (-9, 137):
        return (
            f"{program} was killed (signal 9), most often because the node ran out of memory (RAM). Run it "
            "on a node with more memory, or with fewer jobs at once."
        )
    return f"{program} exited with code {returncode}. The log's last lines say why."


# --- preprocessing (process.py) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessTask:
    """One ``--task N`` of process.py: the banners that open and close it and what it leaves behind."""

    number: int
    stage: str  # a stable short key, shown as the job's stage
    starts: tuple[str, ...]  # banner texts (up to the first path) that open the task
    end: str | None  # the banner text that closes it; None: it ends when the next task opens
    produces: tuple[str, ...]  # glob patterns, relative to the dataset folder, that must each match
    end_line: str | None = None  # a plain line that closes a task without an end banner
    label: str = ""  # what a person reads for it (jobs/stages.py)


# face_tracker.py's last phase: "<k> of <M> done", k counting from 0 (GaussianTalker
# data_utils/face_tracking/face_tracker.py:373).
TRACKING_BATCH = re.compile(r"^(?P<k>\d+) of (?P<m>\d+) done$")


def task_table(table: Sequence[PreprocessTask], task: int) -> PreprocessTask:
    for entry in table:
        if entry.number == task:
            return entry
    raise ValueError(f"process.py has no task {task}: tasks are 1 to {len(table)}.")


def missing_artifacts(
    dataset_dir: str | os.PathLike[str],
    tasks: Iterable[int],
    table: Sequence[PreprocessTask],
) -> list[str]:
    """The patterns of ``tasks`` that match nothing under ``dataset_dir`` (a folder on this machine)."""
    missing = []
    for task in tasks:
        for pattern in task_table(table, task).produces:
            if not glob.glob(os.path.join(os.fspath(dataset_dir), pattern)):
                missing.append(pattern)
    return missing


class PreprocessParser(ConsoleParser):
    """An engine's ``data_utils/process.py`` (its ``table`` of tasks): one stage per task, progress = tasks
    finished / tasks requested.

    A task's share moves inside it with its tqdm bars and face tracking's ``<k> of <M> done``. A run succeeds
    only when every requested task printed its end banner and nothing crashed: process.py's exit code cannot
    be trusted (a crashing child does not stop it)."""

    program = "process.py"
    table: tuple[PreprocessTask, ...] = ()  # each engine's process.py tasks
    failures: tuple[KnownFailure, ...] = ()

    def __init__(self, tasks: Iterable[int] | None = None):
        numbers = [entry.number for entry in self.table]
        requested = sorted(set(numbers if tasks is None else tasks))
        if not requested:
            raise ValueError("No preprocessing task requested.")
        for task in requested:
            task_table(self.table, task)  # raises for an unknown task
        self.requested = requested
        self.done: set[int] = set()
        self.current: PreprocessTask | None = None
        self.fraction = 0.0  # of the current task
        self.best_progress = 0.0
        self.watch = CrashWatch(self.failures)

    @property
    def stage(self) -> str | None:
        return self.current.stage if self.current else None

    def feed(self, line: str) -> Update | None:
        line = clean_line(line)
        if not line:
            return None
        if banner := BANNER.match(line):
            return self._banner(banner["text"])
        if message := self.watch.see(line, self.stage):
            return Update(event={"error": message})
        if self.current is None:
            return None
        if self.current.end_line and line == self.current.end_line:
            return self._finish(self.current)
        if tracking := TRACKING_BATCH.match(line):
            return self._inside((int(tracking["k"]) + 1) / max(1, int(tracking["m"])))
        if bar := parse_bar(line):
            return self._inside(bar.n / bar.total if bar.total else 0.0)
        return None

    def _banner(self, text: str) -> Update | None:
        for entry in self.table:
            if entry.end is not None and text == entry.end:
                return self._finish(entry)
        for entry in self.table:
            if any(text == start or text.startswith(start + " ") for start in entry.starts):
                return self._start(entry)
        return None  # a banner this table does not know (a patched process.py): nothing to say

    def _start(self, entry: PreprocessTask) -> Update:
        update = Update()
        previous = self.current
        if (
            previous is not None
            and previous is not entry
            and previous.end is None
            and previous.number not in self.done
        ):
            update = self._finish(previous)  # a task without an end banner ends when the next one starts
        if previous is not entry:
            self.current, self.fraction = entry, 0.0
        update.stage, update.progress = entry.stage, self._progress()
        return update

    def _finish(self, entry: PreprocessTask) -> Update:
        self.done.add(entry.number)
        self.current, self.fraction = entry, 0.0
        return Update(
            stage=entry.stage,
            progress=self._progress(),
            event={"task_done": {"task": entry.number, "stage": entry.stage}},
        )

    def _inside(self, fraction: float) -> Update:
        self.fraction = max(0.0, min(1.0, fraction))
        return Update(stage=self.stage, progress=self._progress())

    def _progress(self) -> float:
        finished = len(self.done.intersection(self.requested))
        running = self.current is not None and self.current.number in self.requested
        share = self.fraction if running and self.current.number not in self.done else 0.0
        progress = min(1.0, (finished + share) / len(self.requested))
        self.best_progress = max(self.best_progress, progress)
        return self.best_progress

    def outcome(self, returncode: int) -> str | None:
        if self.watch.failure:
            return self.watch.failure
        if self.watch.exception:
            where = self._describe(self.watch.exception_stage)
            return (
                f"{self.program} failed{where}: {self.watch.exception}. The traceback in the log shows "
                "where; fix the cause and run that task again."
            )
        if returncode != 0:
            return returncode_message(self.program, returncode)
        done = set(self.done)
        if self.current is not None and self.current.end is None:
            done.add(self.current.number)  # a last task without an end banner ended with the process
        unfinished = [number for number in self.requested if number not in done]
        if unfinished:
            entry = task_table(self.table, unfinished[0])
            if entry.end is not None:
                missing = f"it never printed '[INFO] ===== {entry.end} ====='"
            else:
                missing = "it never started it"
            return (
                f"{self.program} stopped before finishing task {entry.number} ({entry.stage}): {missing}. "
                "Its exit code cannot be trusted, so the run counts as failed; the log shows what happened."
            )
        return None

    def _describe(self, stage: str | None) -> str:
        for entry in self.table:
            if entry.stage == stage:
                return f" in task {entry.number} ({entry.stage})"
        return ""


class EvaluateParser(ConsoleParser):
    """Our ``evaluate.py`` (quality figures on the node): ``[INFO] ===== evaluate N frames =====``, an
    ``Evaluating`` bar with ``psnr``/``ssim`` running means, ``[ERROR] …`` naming what is wrong."""

    def __init__(self) -> None:
        self.error: str | None = None

    def feed(self, line: str) -> Update | None:
        line = line.strip()
        if line.startswith("[ERROR] "):
            self.error = line.removeprefix("[ERROR] ")
            return Update(event={"error": self.error})
        if BANNER.match(line):
            return Update(stage="evaluate", progress=0.0)
        if (bar := parse_bar(line)) is not None and bar.desc == "Evaluating":
            metrics = {key: value for key, value in bar.postfix.items() if key in ("psnr", "ssim")}
            return Update(
                stage="evaluate",
                progress=bar.n / bar.total if bar.total else 1.0,
                eta_seconds=bar.remaining_seconds,
                metrics=metrics,
            )
        return None

    def outcome(self, returncode: int) -> str | None:
        if returncode != 0:
            return self.error or super().outcome(returncode)
        return None


# --- chains of steps in one job ------------------------------------------------------------------------

# What a person reads for the stages the parsers in this package report (training, rendering, evaluating)
# and for the steps of the speech chains (avatars/engines/*/engine.py ``speech_steps``, ChainStep names).
# Preprocessing's come with each PreprocessTask. Registered by avatars/apps.py (jobs/stages.py).
STAGE_LABELS = {
    "setup": "Setting up",
    "loading": "Loading the model",
    "coarse": "Training, coarse stage: the head's shape",
    "fine": "Training, fine stage: lips and expressions",
    "train": "Training",
    "head": "Training the head",
    "lips": "Training the lips",
    "test": "Rendering the validation frames",
    "evaluate": "Scoring against the real frames",
    "complete": "Finished",
    "poses": "Preparing head poses",
    "audio features": "Reading speech features from the audio",
    "workspace": "Preparing the workspace",
    "render": "Rendering the frames",
    "encode": "Encoding the video",
    "done": "Finished",
}


# The marker the platform echoes before each step of a ``sh -c 'a && b && …'`` chain (ours, not upstream).
STEP = re.compile(r"^\[talkforge\] step (?P<n>\d+)/(?P<total>\d+): (?P<name>.+)$")


def step_marker(number: int, total: int, name: str) -> list[str]:
    """A marker line before each step of a chain: the log shows where it is, the parser follows it."""
    return ["echo", f"[talkforge] step {number}/{total}: {name}"]


@dataclass
class ChainStep:
    """One engine run in a chain: its own parser, and the share of the whole it fills. The step's progress
    (0–1) maps to ``start + p·(end − start)``; a step whose parser already counts from where the previous
    one stopped (SyncTalk's cumulative ``--iters``) takes the whole range, 0 to 1."""

    name: str
    parser: ConsoleParser
    start: float = 0.0
    end: float = 1.0


class ChainParser(ConsoleParser):
    """Several engine runs in one job, one after the other while they succeed, each announced by
    :func:`step_marker`: each step's lines go to its own parser, stages read ``<step>: <stage>``, progress
    never moves back. The run succeeds when every step ran and the last one succeeded."""

    def __init__(self, steps: Sequence[ChainStep]):
        if not steps:
            raise ValueError("A chain needs at least one step.")
        self.steps = {step.name: step for step in steps}
        self.order = [step.name for step in steps]
        self.current: ChainStep | None = None
        self.best_progress = 0.0

    def feed(self, line: str) -> Update | None:
        marker = STEP.match(line.strip())
        if marker and marker["name"] in self.steps:
            self.current = self.steps[marker["name"]]
            self.best_progress = max(self.best_progress, self.current.start)
            return Update(stage=self.current.name, progress=self.best_progress)
        if self.current is None:
            return None
        update = self.current.parser.feed(line)
        if update is None:
            return None
        if update.progress is not None:
            step = self.current
            mapped = step.start + update.progress * (step.end - step.start)
            update.progress = self.best_progress = max(self.best_progress, min(1.0, mapped))
        if update.stage is not None:
            update.stage = f"{self.current.name}: {update.stage}"
        if update.eta_seconds is not None and self.current.name != self.order[-1]:
            update.eta_seconds = None  # a step's own ETA knows nothing of the steps after it
        return update

    def outcome(self, returncode: int) -> str | None:
        if self.current is None:
            return super().outcome(returncode) or "The job ended before its first step started."
        if problem := self.current.parser.outcome(returncode):
            return f"{self.current.name}: {problem}"
        if self.current.name != self.order[-1]:
            following = self.order[self.order.index(self.current.name) + 1]
            return f"The job ended after {self.current.name}, before {following} started: the log says why."
        return None
