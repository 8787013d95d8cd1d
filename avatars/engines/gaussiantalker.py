"""GaussianTalker: reading its consoles (preprocessing, training, rendering) and where render.py leaves its
videos (shared/spec/engines.md §1.3, §1.5, §1.6 and §3).

SyncTalk's ``data_utils/process.py`` comes from the same lineage (AD-NeRF → RAD-NeRF → ER-NeRF) and prints
the same ``[INFO] ===== … =====`` banners, so the banner-driven :class:`PreprocessParser` here also serves
synctalk.py, which only brings its own task table.
"""

from __future__ import annotations

import glob
import math
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .console import BANNER, ConsoleParser, Update, parse_bar, strip_timestamp

COARSE_ITERATIONS = 7999  # what the shipped configs set; the fine stage defaults to 10000
FINE_ITERATIONS = 10000

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


NO_FACE = known(
    r"TypeError: object of type 'NoneType' has no len\(\)",
    "A frame without a detectable face: face_alignment found no face in at least one frame, and landmark "
    "extraction crashed. Use a video that shows the whole face, facing the camera, in every frame (cut the "
    "frames without it) and run preprocessing again.",
    stages={"landmarks"},
)
NO_VERTICES = known(
    r"KeyError: 'vertices'",
    "track_params.pt has no 'vertices': it was made by another tracker (AD-NeRF, RAD-NeRF or ER-NeRF), not "
    "GaussianTalker's. Run GaussianTalker's own face tracking (task 8) and save transforms (task 9) again.",
)
BFM_MISSING = known(
    r"3DMM_info\.npy",
    "The Basel Face Model files are missing on the node: put 01_MorphableModel.mat in "
    "data_utils/face_tracking/3DMM/ and run convert_BFM.py from data_utils/face_tracking, then run face "
    "tracking again.",
)
FFMPEG_OVERWRITE = known(
    r"already exists\. Overwrite\?",
    "ffmpeg found output files of an earlier run and would not overwrite them. Empty the dataset folder "
    "(keep only the video) and run preprocessing again.",
)
WAV2VEC_MISSING = known(
    r"nerf/asr\.py",
    "--asr wav2vec needs nerf/asr.py, which GaussianTalker does not ship. Use --asr deepspeech.",
)
AU45_HEADER = known(
    r"KeyError: ' AU45_r'",
    "au.csv has no ' AU45_r' column (with its leading space): it must be OpenFace FeatureExtraction's CSV, "
    "one row per 25-fps frame. Make it again with OpenFace and place it as <dataset>/au.csv.",
)
PORT_TAKEN = known(
    r"Address already in use",
    "The training viewer port is taken by another job on this node: give each job its own --port.",
)
CUDA_OOM = known(
    r"CUDA out of memory|OutOfMemoryError",
    "The GPU ran out of memory. Run the job on a GPU with more memory, or with nothing else running on it.",
)
CFG_ARGS_MISSING = known(
    r"No such file or directory: .*cfg_args",
    "The model folder has no cfg_args, which train.py writes at its start: --model_path does not point at "
    "a trained model.",
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


GAUSSIANTALKER_TASKS: tuple[PreprocessTask, ...] = (
    PreprocessTask(
        1,
        "audio",
        ("extract audio from",),
        "extracted audio",
        ("aud.wav", "aud_train.wav", "aud_novel.wav"),
    ),
    PreprocessTask(
        2, "audio_features", ("extract audio labels for",), "extracted audio labels", ("aud_ds.npy",)
    ),
    PreprocessTask(3, "images", ("extract images from",), "extracted images", ("ori_imgs/*.jpg",)),
    PreprocessTask(4, "semantics", ("extract semantics from",), "extracted semantics", ("parsing/*.png",)),
    PreprocessTask(
        5, "background", ("extract background image from",), "extracted background image", ("bc.jpg",)
    ),
    PreprocessTask(
        6,
        "torso_gt",
        ("extract torso and gt images for",),
        "extracted torso and gt images",
        ("gt_imgs/*.jpg", "torso_imgs/*.png"),
    ),
    PreprocessTask(
        7, "landmarks", ("extract face landmarks from",), "extracted face landmarks", ("ori_imgs/*.lms",)
    ),
    PreprocessTask(
        8, "face_tracking", ("perform face tracking",), "finished face tracking", ("track_params.pt",)
    ),
    PreprocessTask(
        9,
        "transforms",
        ("save transforms",),
        "finished saving transforms",
        ("transforms_train.json", "transforms_val.json"),
    ),
)

# face_tracker.py's last phase: "<k> of <M> done", k counting from 0 (spec §3).
TRACKING_BATCH = re.compile(r"^(?P<k>\d+) of (?P<m>\d+) done$")

PREPROCESS_FAILURES = (NO_FACE, NO_VERTICES, BFM_MISSING, FFMPEG_OVERWRITE, WAV2VEC_MISSING, CUDA_OOM)


def _task_table(table: Sequence[PreprocessTask], task: int) -> PreprocessTask:
    for entry in table:
        if entry.number == task:
            return entry
    raise ValueError(f"process.py has no task {task}: tasks are 1 to {len(table)}.")


def expected_artifacts(task: int) -> list[str]:
    """What GaussianTalker's process.py task ``task`` must leave in the dataset folder (``<dir>/<name>/``),
    as glob patterns that must each match at least one file (spec §1.3, "Produces").

    process.py's exit code and even its banners do not prove a step worked (children run through
    ``os.system``), so the platform checks these after each run."""
    return list(_task_table(GAUSSIANTALKER_TASKS, task).produces)


def missing_artifacts(
    dataset_dir: str | os.PathLike[str],
    tasks: Iterable[int],
    table: Sequence[PreprocessTask] = GAUSSIANTALKER_TASKS,
) -> list[str]:
    """The patterns of ``tasks`` that match nothing under ``dataset_dir`` (a folder on this machine)."""
    missing = []
    for task in tasks:
        for pattern in _task_table(table, task).produces:
            if not glob.glob(os.path.join(os.fspath(dataset_dir), pattern)):
                missing.append(pattern)
    return missing


class PreprocessParser(ConsoleParser):
    """``data_utils/process.py``: one stage per task, progress = tasks finished / tasks requested.

    A task's share moves inside it with its tqdm bars and face tracking's ``<k> of <M> done``. A run succeeds
    only when every requested task printed its end banner and nothing crashed: process.py's exit code cannot
    be trusted (a crashing child does not stop it)."""

    program = "process.py"
    table: tuple[PreprocessTask, ...] = GAUSSIANTALKER_TASKS
    failures: tuple[KnownFailure, ...] = PREPROCESS_FAILURES

    def __init__(self, tasks: Iterable[int] | None = None):
        numbers = [entry.number for entry in self.table]
        requested = sorted(set(numbers if tasks is None else tasks))
        if not requested:
            raise ValueError("No preprocessing task requested.")
        for task in requested:
            _task_table(self.table, task)  # raises for an unknown task
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
            entry = _task_table(self.table, unfinished[0])
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


# --- training (train.py) ------------------------------------------------------------------------------------

TRAIN_FAILURES = (NO_VERTICES, AU45_HEADER, PORT_TAKEN, CUDA_OOM)


class TrainParser(ConsoleParser):
    """``train.py`` runs a coarse stage, then a fine one, each with its own ``Training progress`` bar.

    Overall progress counts iterations across both stages. A NaN loss makes train.py re-execute itself
    from the coarse stage (``loss is nan, … reexecv program now.``), which resets progress."""

    def __init__(self, *, coarse_iterations: int = COARSE_ITERATIONS, iterations: int = FINE_ITERATIONS):
        self.coarse_total = coarse_iterations
        self.fine_total = iterations
        self.stage = "setup"
        self.last_n = 0
        self.coarse_done = False
        self.completed = False
        self.restarts = 0
        self.best_progress = 0.0
        self.watch = CrashWatch(TRAIN_FAILURES)

    def feed(self, line: str) -> Update | None:
        line = strip_timestamp(line.strip())
        if not line:
            return None
        if banner := BANNER.match(line):
            return Update(stage=banner["text"])
        if line.startswith("Training progress"):
            return self._bar(line)
        if line.startswith("[ITER ") and "Saving Gaussians" in line:
            iteration = int(line[6 : line.index("]")])
            return Update(event={"checkpoint": {"stage": self.stage, "iteration": iteration}})
        if "loss is nan" in line:
            self.restarts += 1
            self.stage, self.last_n, self.coarse_done = "coarse", 0, False
            self.best_progress = 0.0
            return Update(stage="coarse", progress=0.0, event={"restart": "NaN loss; the engine restarts"})
        if line.startswith("Training complete."):
            self.completed = True
            return Update(stage="complete", progress=1.0, eta_seconds=0.0)
        if message := self.watch.see(line, self.stage):
            return Update(event={"error": message})
        return None

    def _bar(self, line: str) -> Update | None:
        bar = parse_bar(line)
        if bar is None:
            return None
        if self.stage in ("setup",):
            self.stage = "coarse"
            self.coarse_total = bar.total
        elif self.stage == "coarse" and (
            bar.n < self.last_n or (self.coarse_done and bar.total != self.coarse_total)
        ):
            self.stage = "fine"
            self.fine_total = bar.total
        if self.stage == "coarse" and bar.n >= bar.total:
            self.coarse_done = True
        self.last_n = bar.n
        done = bar.n if self.stage == "coarse" else self.coarse_total + bar.n
        progress = min(1.0, done / max(1, self.coarse_total + self.fine_total))
        # A total learnt late (the config overrode --iterations) must not move the bar backwards.
        progress = self.best_progress = max(progress, self.best_progress)
        metrics = {key.lower(): value for key, value in finite_metrics(bar.postfix).items()}
        return Update(stage=self.stage, progress=progress, metrics=metrics)

    def outcome(self, returncode: int) -> str | None:
        if self.watch.failure:
            return self.watch.failure
        if returncode != 0:
            return super().outcome(returncode)
        if not self.completed:
            return "train.py ended without printing 'Training complete.': the model is incomplete."
        return None


# --- rendering (render.py) ----------------------------------------------------------------------------------

RENDER_SETS = ("custom", "train", "test")  # the order render.py renders them in
LOADED = re.compile(r"^Loading trained model at iteration (?P<iteration>-?\d+)")
# "        test set rendering  :   550  frames  " (custom audio prints "test set" too); train: "train set".
SET_HEADER = re.compile(r"^(?:test|train) set rendering\s*:\s*(?P<frames>\d+)\s*frames")
POINT_NUMS = re.compile(r"^point nums:\s*(?P<points>\d+)")
# Custom audio: its features' frame count, and the seed's clamp when the audio is shorter than the poses.
AUDIO_FEATURES = re.compile(r"^\[INFO\] load aud_features: torch\.Size\(\[(?P<frames>\d+),")
CLAMPED = re.compile(r"^\[INFO\] Custom audio mode: limiting render frames to (?P<frames>\d+)")
TOTAL_FRAME = re.compile(r"^total frame:\s*(?P<frames>\d+)")
FPS = re.compile(r"^FPS:\s*(?P<fps>[-+\d.eE]+|nan|inf)")
# The bar is render.py's first pass over each set; a silent second pass (attention maps) and ffmpeg follow.
FIRST_PASS_SHARE = 0.5

RENDER_FAILURES = (CFG_ARGS_MISSING, NO_VERTICES, AU45_HEADER, CUDA_OOM)


class RenderParser(ConsoleParser):
    """``render.py``: each set it renders (``custom``, then ``train``, then ``test``, as asked) is an equal
    share of the progress; the ``Rendering progress`` bar fills the first half of a set's share (render.py's
    first pass), ``FPS:`` ends that half; a silent second pass and ffmpeg fill the rest, unseen."""

    def __init__(self, sets: Sequence[str] = ("custom",)):
        sets = tuple(sets)
        if not sets or any(name not in RENDER_SETS for name in sets):
            raise ValueError(f"render sets must be some of {RENDER_SETS}, got {sets!r}.")
        if list(sets) != sorted(sets, key=RENDER_SETS.index) or len(set(sets)) != len(sets):
            raise ValueError(f"render.py renders its sets in the order {RENDER_SETS}; got {sets!r}.")
        self.sets = sets
        self.stage = "setup"
        self.loaded_iteration: int | None = None
        self.started = 0  # sets whose header was printed
        self.fps_seen = 0  # sets whose first pass finished
        self.fraction = 0.0
        self.frames: dict[str, int] = {}
        self.best_progress = 0.0
        self.watch = CrashWatch(RENDER_FAILURES)

    def feed(self, line: str) -> Update | None:
        line = clean_line(line)
        if not line:
            return None
        if loaded := LOADED.match(line):
            self.loaded_iteration = int(loaded["iteration"])
            self.stage = "loading"
            return Update(stage="loading", event={"loaded_iteration": self.loaded_iteration})
        if header := SET_HEADER.match(line):
            if self.started >= len(self.sets):
                return None
            self.stage = self.sets[self.started]
            self.frames[self.stage] = int(header["frames"])
            self.started += 1
            self.fraction = 0.0
            return Update(
                stage=self.stage, progress=self._progress(), metrics={"frames": float(header["frames"])}
            )
        if points := POINT_NUMS.match(line):
            return Update(metrics={"points": float(points["points"])})
        if features := AUDIO_FEATURES.match(line):
            return Update(metrics={"audio_frames": float(features["frames"])})
        if clamped := CLAMPED.match(line):
            return Update(event={"frames_limited_to_audio": int(clamped["frames"])})
        if line.startswith("Rendering progress") and (bar := parse_bar(line)):
            self.fraction = FIRST_PASS_SHARE * (bar.n / bar.total if bar.total else 1.0)
            return Update(stage=self.stage, progress=self._progress())
        if total := TOTAL_FRAME.match(line):
            return Update(metrics={"rendered_frames": float(total["frames"])})
        if fps := FPS.match(line):
            self.fps_seen += 1
            self.fraction = FIRST_PASS_SHARE
            return Update(
                stage=self.stage,
                progress=self._progress(),
                metrics=finite_metrics({"fps": float(fps["fps"])}),
            )
        if message := self.watch.see(line, self.stage):
            return Update(event={"error": message})
        return None

    def _progress(self) -> float:
        finished = max(0, self.started - 1)
        progress = min(1.0, (finished + self.fraction) / len(self.sets))
        self.best_progress = max(self.best_progress, progress)
        return self.best_progress

    def outcome(self, returncode: int) -> str | None:
        if self.watch.failure:
            return self.watch.failure
        if returncode != 0:
            return returncode_message("render.py", returncode)
        if self.fps_seen < len(self.sets):
            missing = self.sets[self.fps_seen]
            return (
                f"render.py ended before it finished rendering the {missing} set: the log's last lines say "
                "why. No result video was written for it."
            )
        return None


def render_output_path(model_path: str, set_name: str, iteration: int) -> str:
    """Where render.py leaves a set's result video, audio muxed in (spec §1.6):
    ``<model_path>/<set>/ours_<iter>/renders/<P>_<set>_<iter>iter_renders.mov``.

    ``<P>`` is the second-to-last ``/`` component of ``--model_path`` as typed: ``output/obama`` gives
    ``output_…``, ``output/obama/`` gives ``obama_…``. ``custom`` and ``train`` are named after the iteration
    render.py loaded, ``test`` after the raw ``--iteration`` (so -1 gives ``ours_-1``)."""
    if set_name not in RENDER_SETS:
        raise ValueError(f"render.py renders the sets {RENDER_SETS}, not {set_name!r}.")
    parts = model_path.split("/")
    if len(parts) < 2:
        raise ValueError(
            f"--model_path {model_path!r} has a single path component: render.py names its videos after the "
            "second-to-last '/' component and crashes (IndexError) here. Use a path like output/<name>."
        )
    if iteration < 0 and set_name != "test":
        raise ValueError(
            f"The {set_name} video is named after the iteration render.py loaded, not {iteration}: pass the "
            "number from 'Loading trained model at iteration N' (RenderParser.loaded_iteration)."
        )
    prefix = parts[-2]
    folder = posixpath.join(model_path, set_name, f"ours_{iteration}", "renders")
    return f"{folder}/{prefix}_{set_name}_{iteration}iter_renders.mov"
