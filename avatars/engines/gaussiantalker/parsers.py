"""GaussianTalker (KU-CVLAB/GaussianTalker @ 8ec613b): reading its consoles (preprocessing, training,
rendering) and where render.py leaves its videos. Every pattern names the upstream line that prints it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from jobs.console import BANNER, ConsoleParser, Update, strip_timestamp

from .. import console
from ..console import (
    CUDA_OOM,
    NO_FACE,
    CrashWatch,
    PreprocessTask,
    clean_line,
    finite_metrics,
    known,
    merge_updates,
    parse_bar,
    returncode_message,
    split_after_bar,
    task_table,
)
from .commands import COARSE_ITERATIONS, ITERATIONS

NAN_RESTART = "loss is nan,end training, reexecv program now."  # train.py:180, then os.execv (:181)
FINE_ITERATIONS = ITERATIONS  # the fine stage's default (arguments/64_dim_1_transformer.py:32)

# --- known failures --------------------------------------------------------------------------------------

NO_VERTICES = known(  # scene/talking_dataset_readers.py:403 reads track_params.pt's "vertices"
    r"KeyError: 'vertices'",
    "track_params.pt has no 'vertices': it was made by another tracker (AD-NeRF, RAD-NeRF or ER-NeRF), not "
    "GaussianTalker's. Run GaussianTalker's own face tracking (task 8) and save transforms (task 9) again.",
)
BFM_MISSING = known(  # data_utils/face_tracking/facemodel.py:16 loads 3DMM/3DMM_info.npy
    r"3DMM_info\.npy",
    "The Basel Face Model files are missing on the node: put 01_MorphableModel.mat in "
    "data_utils/face_tracking/3DMM/ and run convert_BFM.py from data_utils/face_tracking, then run face "
    "tracking again.",
)
FFMPEG_OVERWRITE = known(  # data_utils/process.py:20–41, ffmpeg without -y
    r"already exists\. Overwrite\?",
    "ffmpeg found output files of an earlier run and would not overwrite them. Empty the dataset folder "
    "(keep only the video) and run preprocessing again.",
)
WAV2VEC_MISSING = known(  # data_utils/process.py:47
    r"nerf/asr\.py",
    "--asr wav2vec needs nerf/asr.py, which GaussianTalker does not ship. Use --asr deepspeech.",
)
AU45_HEADER = known(  # scene/talking_dataset_readers.py:360
    r"KeyError: ' AU45_r'",
    "au.csv has no ' AU45_r' column (with its leading space): it must be OpenFace FeatureExtraction's CSV, "
    "one row per 25-fps frame. Make it again with OpenFace and place it as <dataset>/au.csv.",
)
PORT_TAKEN = known(  # gaussian_renderer/network_gui.py:30 binds --port (train.py:381)
    r"Address already in use",
    "The training viewer port is taken by another job on this node: give each job its own --port.",
)
CFG_ARGS_MISSING = known(  # arguments/__init__.py reads <model_path>/cfg_args for render.py
    r"No such file or directory: .*cfg_args",
    "The model folder has no cfg_args, which train.py writes at its start: --model_path does not point at "
    "a trained model.",
)


# --- preprocessing (process.py) ----------------------------------------------------------------------------

# data_utils/process.py: each task's banners (start, end) and what it writes. 1: :22/:41, aud_train/novel
# :31–32; 2: :46/:54, aud.npy copied to aud_ds.npy :53; 3: :60/:63; 4: :68/:71; 5: :97/:149, bc.jpg :147;
# 6: :154/:271, gt_imgs :177, torso_imgs :269; 7: :76/:92, .lms :90; 8: :276/:290; 9: :294/:376,
# transforms_<split>.json :373.
GAUSSIANTALKER_TASKS: tuple[PreprocessTask, ...] = (
    PreprocessTask(
        1,
        "audio",
        ("extract audio from",),
        "extracted audio",
        ("aud.wav", "aud_train.wav", "aud_novel.wav"),
        label="Extracting the audio",
    ),
    PreprocessTask(
        2,
        "audio_features",
        ("extract audio labels for",),
        "extracted audio labels",
        ("aud_ds.npy",),
        label="Reading speech features from the audio",
    ),
    PreprocessTask(
        3,
        "images",
        ("extract images from",),
        "extracted images",
        ("ori_imgs/*.jpg",),
        label="Splitting the video into frames",
    ),
    PreprocessTask(
        4,
        "semantics",
        ("extract semantics from",),
        "extracted semantics",
        ("parsing/*.png",),
        label="Segmenting face, hair, torso and background",
    ),
    PreprocessTask(
        5,
        "background",
        ("extract background image from",),
        "extracted background image",
        ("bc.jpg",),
        label="Estimating the background",
    ),
    PreprocessTask(
        6,
        "torso_gt",
        ("extract torso and gt images for",),
        "extracted torso and gt images",
        ("gt_imgs/*.jpg", "torso_imgs/*.png"),
        label="Separating the torso from the real frames",
    ),
    PreprocessTask(
        7,
        "landmarks",
        ("extract face landmarks from",),
        "extracted face landmarks",
        ("ori_imgs/*.lms",),
        label="Finding face landmarks",
    ),
    PreprocessTask(
        8,
        "face_tracking",
        ("perform face tracking",),
        "finished face tracking",
        ("track_params.pt",),
        label="Tracking the face in 3D",
    ),
    PreprocessTask(
        9,
        "transforms",
        ("save transforms",),
        "finished saving transforms",
        ("transforms_train.json", "transforms_val.json"),
        label="Saving the camera poses",
    ),
)

PREPROCESS_FAILURES = (NO_FACE, NO_VERTICES, BFM_MISSING, FFMPEG_OVERWRITE, WAV2VEC_MISSING, CUDA_OOM)


def expected_artifacts(task: int) -> list[str]:
    """What GaussianTalker's process.py task ``task`` must leave in the dataset folder (``<dir>/<name>/``),
    as glob patterns that must each match at least one file (the table above).

    process.py's exit code and even its banners do not prove a step worked (children run through
    ``os.system``, data_utils/process.py:24 and the rest), so the platform checks these after each run."""
    return list(task_table(GAUSSIANTALKER_TASKS, task).produces)


def missing_artifacts(
    dataset_dir, tasks, table: Sequence[PreprocessTask] = GAUSSIANTALKER_TASKS
) -> list[str]:
    """The patterns of ``tasks`` that match nothing under ``dataset_dir`` (a folder on this machine)."""
    return console.missing_artifacts(dataset_dir, tasks, table)


class PreprocessParser(console.PreprocessParser):
    """GaussianTalker's ``data_utils/process.py`` (tasks 1–9)."""

    table = GAUSSIANTALKER_TASKS
    failures = PREPROCESS_FAILURES


# --- training (train.py) ------------------------------------------------------------------------------------

TRAIN_FAILURES = (NO_VERTICES, AU45_HEADER, PORT_TAKEN, CUDA_OOM)


class TrainParser(ConsoleParser):
    """``train.py`` runs a coarse stage, then a fine one, each with its own ``Training progress`` bar.

    Overall progress counts iterations across both stages (train.py:276–284, each bar at train.py:68). A
    NaN loss makes train.py re-execute itself from the coarse stage (``loss is nan, … reexecv program
    now.``, train.py:180–181), which resets progress."""

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
        # Checked before the bar: the print comes while the bar is open (train.py:68), so with stdout and
        # stderr merged it lands glued to the bar's last redraw ("Training progress: …]loss is nan,…").
        if NAN_RESTART in line:
            self.restarts += 1
            self.stage, self.last_n, self.coarse_done = "coarse", 0, False
            self.best_progress = 0.0
            return Update(stage="coarse", progress=0.0, event={"restart": "NaN loss; the engine restarts"})
        if banner := BANNER.match(line):
            return Update(stage=banner["text"])
        if line.startswith("Training progress"):  # train.py:68
            bar, rest = split_after_bar(line)
            return merge_updates(self._bar(bar), self.feed(rest) if rest else None)
        if line.startswith("[ITER ") and "Saving Gaussians" in line:  # train.py:215
            iteration = int(line[6 : line.index("]")])
            return Update(event={"checkpoint": {"stage": self.stage, "iteration": iteration}})
        if line.startswith("Training complete."):  # train.py:411
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

RENDER_SETS = ("custom", "train", "test")  # the order render.py renders them in (render.py:168–178)
LOADED = re.compile(r"^Loading trained model at iteration (?P<iteration>-?\d+)")  # scene/__init__.py:44
# "        test set rendering  :   550  frames  " (custom audio prints "test set" too); train: "train set"
# (render.py:65, :70).
SET_HEADER = re.compile(r"^(?:test|train) set rendering\s*:\s*(?P<frames>\d+)\s*frames")
POINT_NUMS = re.compile(r"^point nums:\s*(?P<points>\d+)")  # render.py:72
# "[INFO] load aud_features: torch.Size([N, 29, 16])" (scene/talking_dataset_readers.py:355) is the
# *training* audio (aud_ds.npy, :345), printed for every render: it says nothing about a custom audio, whose
# features (:375) are never printed. The custom set's frame count is what render.py prints for it: its
# header (render.py:70, "test set" for custom too) and "total frame:" (render.py:101), the frames it
# rendered before the first batch past the audio's end (the bare except, render.py:90–95).
# The original prototype's clamp when the audio is shorter than the poses (its patch, not upstream:
# docs/engines.md):
CLAMPED = re.compile(r"^\[INFO\] Custom audio mode: limiting render frames to (?P<frames>\d+)")
TOTAL_FRAME = re.compile(r"^total frame:\s*(?P<frames>\d+)")  # render.py:101
FPS = re.compile(r"^FPS:\s*(?P<fps>[-+\d.eE]+|nan|inf)")  # render.py:102
# The bar is render.py's first pass over each set; a silent second pass (attention maps) and ffmpeg follow.
FIRST_PASS_SHARE = 0.5

RENDER_FAILURES = (CFG_ARGS_MISSING, NO_VERTICES, AU45_HEADER, CUDA_OOM)


class RenderParser(ConsoleParser):
    """``render.py``: each set it renders (``custom``, then ``train``, then ``test``, as asked) is an equal
    share of the progress; the ``Rendering progress`` bar (render.py:85) fills the first half of a set's
    share (render.py's first pass), ``FPS:`` ends that half; a silent second pass and ffmpeg fill the
    rest, unseen."""

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
        if clamped := CLAMPED.match(line):
            return Update(event={"frames_limited_to_audio": int(clamped["frames"])})
        if line.startswith("Rendering progress") and (bar := parse_bar(line)):
            self.fraction = FIRST_PASS_SHARE * (bar.n / bar.total if bar.total else 1.0)
            return Update(stage=self.stage, progress=self._progress())
        if total := TOTAL_FRAME.match(line):
            metrics = {"rendered_frames": float(total["frames"])}
            if self.stage == "custom":
                metrics["audio_frames"] = float(total["frames"])
            return Update(metrics=metrics)
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


def render_gt_path(model_path: str, set_name: str, iteration: int) -> str:
    """Where render.py leaves the real frames of a ``test`` or ``train`` set as a video, audio muxed in
    (render.py:50, :128–137): ``<model_path>/<set>/ours_<iter>/gt/<P>_<set>_<iter>iter_gt.mov``."""
    if set_name == "custom":
        raise ValueError("render.py writes no ground-truth video for custom audio (render.py:128).")
    renders = render_output_path(model_path, set_name, iteration)
    folder, name = posixpath.split(posixpath.dirname(renders))[0], posixpath.basename(renders)
    return f"{folder}/gt/{name.removesuffix('_renders.mov')}_gt.mov"


def render_output_path(model_path: str, set_name: str, iteration: int) -> str:
    """Where render.py leaves a set's result video, audio muxed in (render.py:49, :139):
    ``<model_path>/<set>/ours_<iter>/renders/<P>_<set>_<iter>iter_renders.mov``.

    ``<P>`` is the second-to-last ``/`` component of ``--model_path`` as typed: ``output/obama`` gives
    ``output_…``, ``output/obama/`` gives ``obama_…``. ``custom`` and ``train`` are named after the iteration
    render.py loaded, ``test`` after the raw ``--iteration`` (render.py:170 and :178; so -1 gives
    ``ours_-1``)."""
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
