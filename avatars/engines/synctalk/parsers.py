"""SyncTalk (ZiqiaoPeng/SyncTalk @ d2427a3): reading its consoles (preprocessing, training, test) and where
``main.py --test`` leaves its video.

``main.py`` prints a ``Namespace(...)`` dump (main.py:142), then logs through ``rich`` (plain text without
a terminal, but wrapped at the console width: run it with a wide ``COLUMNS``, see the engine's ``env()``)
and draws tqdm bars without the ``|…|`` body (nerf_triplane/utils.py:1282):
``loss=0.0123 (0.0150), lr=0.009876: 45% 2700/6000 [01:23<01:40, 32.1it/s]``.

Its ``data_utils/process.py`` comes from the same lineage as GaussianTalker's (AD-NeRF → RAD-NeRF →
ER-NeRF) and prints the same ``[INFO] ===== … =====`` banners, so the banner-driven
``console.PreprocessParser`` serves it with this task table.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from jobs.console import ConsoleParser, Update

from .. import console
from ..console import (
    CUDA_OOM,
    NO_FACE,
    CrashWatch,
    PreprocessTask,
    clean_line,
    clock_seconds,
    finite_metrics,
    known,
    merge_updates,
    parse_bar,
    returncode_message,
    split_after_bar,
)

TRAINER_NAME = "ngp"  # main.py:183 and :237, Trainer('ngp', …): checkpoints and results are named after it

# data_utils/process.py: each task's banners and what it writes. 1: :16/:19 then :23/:32 (the AVE note
# :25); 2: :37/:40; 3: :45/:48; 4: :72/:124; 5: :129/:243, face_mask :150; 6: :53/:67; 7: :248/:260;
# 8: :264, flow_result :283, keypoints.txt :336, track_xys.npy :350, bundle_adjustment.py prints
# "bundle adjustment params saved" (data_utils/face_tracking/bundle_adjustment.py:63); 9: :357;
# 10: :363/:415.
SYNCTALK_TASKS: tuple[PreprocessTask, ...] = (
    # Task 1 prints two banner pairs: the audio, then its features ("AVE has been integrated …" for ave).
    PreprocessTask(
        1,
        "audio",
        ("extract audio from", "extract audio labels for"),
        "extracted audio labels",
        ("aud.wav",),
        label="Extracting the audio",
    ),
    PreprocessTask(
        2,
        "images",
        ("extract images from",),
        "extracted images",
        ("ori_imgs/*.jpg",),
        label="Splitting the video into frames",
    ),
    PreprocessTask(
        3,
        "semantics",
        ("extract semantics from",),
        "extracted semantics",
        ("parsing/*.png",),
        label="Segmenting face, hair, torso and background",
    ),
    PreprocessTask(
        4,
        "background",
        ("extract background image from",),
        "extracted background image",
        ("bc.jpg",),
        label="Estimating the background",
    ),
    PreprocessTask(
        5,
        "torso_gt",
        ("extract torso and gt images for",),
        "extracted torso and gt images",
        ("gt_imgs/*.jpg", "torso_imgs/*.png", "face_mask/*.png"),
        label="Separating the torso from the real frames",
    ),
    PreprocessTask(
        6,
        "landmarks",
        ("extract face landmarks from",),
        "extracted face landmarks",
        ("ori_imgs/*.lms",),
        label="Finding face landmarks",
    ),
    PreprocessTask(
        7,
        "face_tracking",
        ("perform face tracking",),
        "finished face tracking",
        ("track_params.pt",),
        label="Tracking the face in 3D",
    ),
    # Flow and blendshapes have a start banner only; flow's bundle adjustment ends with a plain line.
    PreprocessTask(
        8,
        "flow",
        ("extract flow",),
        None,
        ("flow_result/*.npy", "keypoints.txt", "track_xys.npy", "bundle_adjustment.pt"),
        end_line="bundle adjustment params saved",
        label="Following the head's motion (optical flow)",
    ),
    PreprocessTask(
        9,
        "blendshape",
        ("extract blendshape",),
        None,
        ("bs.npy",),
        label="Reading facial expressions (blendshapes)",
    ),
    PreprocessTask(
        10,
        "transforms",
        ("save transforms",),
        "finished saving transforms",
        ("transforms_train.json", "transforms_val.json"),
        label="Saving the camera poses",
    ),
)

# Task 1's features per --asr (data_utils/process.py:21–31): deepspeech runs extract_ds_features.py --input
# aud.wav (:27), which names its output <stem>_ds.npy (data_utils/deepspeech_features/extract_ds_features.py
# :78), the aud_ds.npy training reads (nerf_triplane/provider.py:166); hubert writes aud_hu.npy
# (data_utils/hubert.py, read at provider.py:170); ave computes them while training (provider.py:171).
AUDIO_FEATURES = {"ave": (), "deepspeech": ("aud_ds.npy",), "hubert": ("aud_hu.npy",)}

AVE_NOTE = "AVE has been integrated into the training code"

FACELESS_BLENDSHAPE = known(  # data_utils/blendshape_capture/main.py:63, face_blendshapes[0]
    r"IndexError: list index out of range",
    "A frame without a detectable face: MediaPipe found no face in at least one frame while extracting "
    "blendshapes. Use a video that shows the face in every frame and run preprocessing again.",
    stages={"blendshape"},
)
PRELOAD_KILLED = known(  # main.py:61 --preload
    r"^Killed$",
    "The engine was killed, most often for lack of memory (RAM): --preload 1/2 loads the whole video into "
    "memory. Use --preload 0 or a shorter video.",
)
TOO_MANY_FRAMES = known(  # main.py:221
    r"dataset too many frames",
    "The video has more frames than main.py's --ind_num (20000): use a shorter video or raise --ind_num.",
)
DEEPSPEECH_FEATURES_MISSING = known(  # nerf_triplane/provider.py:166 loads <dataset>/aud_ds.npy
    r"aud_ds\.npy",
    "Training with --asr_model deepspeech reads aud_ds.npy, which preprocessing writes only when run with "
    "--asr deepspeech (data_utils/process.py:27): run preprocessing task 1 again with --asr deepspeech, or "
    "train with --asr_model ave.",
)
AU45_HEADER = known(
    r"KeyError: ' AU45_r'",
    "au.csv has no ' AU45_r' column (with its leading space): make it with OpenFace FeatureExtraction, or "
    "train without --au45 (blendshapes from bs.npy are the default).",
)
FACELESS_LMD = known(
    r"'NoneType' object is not subscriptable",
    "The LMD metric found no face in a rendered or ground-truth frame and crashed (SyncTalk#44): the model "
    "renders frames without a face, or the video has frames without one. Check the results video.",
    stages={"evaluate"},
)

PREPROCESS_FAILURES = (NO_FACE, FACELESS_BLENDSHAPE, CUDA_OOM)
MAIN_FAILURES = (
    CUDA_OOM,
    PRELOAD_KILLED,
    TOO_MANY_FRAMES,
    DEEPSPEECH_FEATURES_MISSING,
    AU45_HEADER,
    FACELESS_LMD,
)


def expected_artifacts(task: int, asr: str = "ave") -> list[str]:
    """What SyncTalk's process.py task ``task`` must leave in ``data/<ID>/`` (glob patterns, the table above).
    Task 1's features depend on ``--asr``: none for ave (computed while training), ``aud_ds.npy`` for
    deepspeech, ``aud_hu.npy`` for hubert (``AUDIO_FEATURES``)."""
    if asr not in AUDIO_FEATURES:
        raise ValueError(f"--asr must be one of {sorted(AUDIO_FEATURES)}, not {asr!r}.")
    for entry in SYNCTALK_TASKS:
        if entry.number == task:
            extra = AUDIO_FEATURES[asr] if task == 1 else ()
            return [*entry.produces, *extra]
    raise ValueError(f"SyncTalk's process.py has no task {task}: tasks are 1 to {len(SYNCTALK_TASKS)}.")


class PreprocessParser(console.PreprocessParser):
    """SyncTalk's ``data_utils/process.py`` (10 tasks). Flow (8) and blendshapes (9) print no end banner:
    flow ends at ``bundle adjustment params saved``, blendshapes when the next task starts or the run ends."""

    table = SYNCTALK_TASKS
    failures = PREPROCESS_FAILURES

    def feed(self, line: str) -> Update | None:
        text = clean_line(line)
        if text.startswith(AVE_NOTE):
            return Update(stage=self.stage, event={"note": text})
        if text.startswith("frame_count:"):
            count = text.split(":", 1)[1].strip()
            return Update(metrics={"frames": float(count)}) if count.isdigit() else None
        return super().feed(line)


# --- main.py ---------------------------------------------------------------------------------------------

# nerf_triplane/utils.py line numbers unless said otherwise; main.py:142 prints the Namespace.
NAMESPACE_ITERS = re.compile(r"\biters=(?P<iters>\d+)")
NAMESPACE_WORKSPACE = re.compile(r"\bworkspace='(?P<workspace>[^']*)'")
# :727
TRAINER = re.compile(r"^\[INFO\] Trainer: (?P<name>\S+) \| (?P<time>[^|]+?) \| (?P<device>[^|]+?) \| "
                     r"(?P<precision>fp16|fp32) \| (?P<workspace>.*)$")  # fmt: skip
LATEST = re.compile(r"^\[INFO\] Latest checkpoint is (?P<path>\S+)")  # :1520
CHECKPOINT_EPOCH = re.compile(r"_ep(?P<epoch>\d+)\.pth$")
NO_CHECKPOINT = "[WARN] No checkpoint found, model randomly initialized."  # :1522
LOADED_AT = re.compile(r"^\[INFO\] load at epoch (?P<epoch>\d+), global step (?P<step>\d+)")  # :1556
FRAMES_LOADED = re.compile(r"^\[INFO\] load (?P<frames>\d+) (?P<kind>\w+) frames\.")  # provider.py:156
MAX_EPOCH = re.compile(r"^\[INFO\] max_epoch = (?P<epoch>\d+)")  # main.py:248
EPOCH_START = re.compile(r"^==> Start Training Epoch (?P<epoch>\d+), lr=(?P<lr>[\d.e-]+)")  # :1267
EPOCH_END = re.compile(r"^==> Finished Epoch (?P<epoch>\d+)\.")  # :1346
EPOCH_LOSS = re.compile(r"^loss=(?P<loss>[\d.e-]+|nan|inf)$")  # :1345
EVAL_START = re.compile(r"^\+\+> Evaluate at epoch (?P<epoch>\d+)")  # :1350
EVAL_END = re.compile(r"^\+\+> Evaluate epoch (?P<epoch>\d+) Finished\.")  # :1450
# Trainer.save_checkpoint prints nothing at d2427a3 (nerf_triplane/utils.py:1452–1513; "[INFO] saved
# checkpoint to" exists only in the unmerged pull requests #167/#168): checkpoints are found on disk
# (engine.list_checkpoints), never in the console.
TEST_START = re.compile(r"^==> Start Test, save results to (?P<path>.+)$")  # :1054
TEST_END = "==> Finished Test."  # :1103
METRIC = re.compile(  # :480, :516, :613
    r"^(?P<name>PSNR|LPIPS|LMD)(?: \((?P<kind>\w+)\))? = (?P<value>-?[\d.]+(?:e-?\d+)?|nan|inf)$"
)
# main.py's bars: "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]",
# the test bar without "{desc}: ". tqdm drops "{desc}: " while the desc is empty, and pbar.set_description
# (nerf_triplane/utils.py:1323, :1426) stores the desc with its own ": ", so a described bar reads
# "loss=… (…), lr=…: :  45% …": the colon comes twice, and neither belongs to the desc. Without a desc the
# line starts with the padding of {percentage:3.0f} (" 90% 9/10 …").
PLAIN_BAR = re.compile(
    r"^(?:(?P<desc>.*?)(?::\s+)+)?\s*(?P<pct>\d+)%\s+(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)(?:,\s*(?P<rate>[^\]]*))?\]"
)
DESC_ITEM = re.compile(
    r"(?P<key>loss|lr)=(?P<value>-?[\d.]+(?:e-?\d+)?|nan|inf)(?:\s+\((?P<mean>[\d.]+|nan|inf)\))?"
)


@dataclass(frozen=True)
class PlainBar:
    desc: str
    n: int
    total: int
    elapsed_seconds: float | None
    remaining_seconds: float | None
    metrics: dict[str, float]


def parse_plain_bar(line: str) -> PlainBar | None:
    """main.py's tqdm bar (no ``|…|`` body); its description carries ``loss=x (mean)`` and ``lr=y``."""
    match = PLAIN_BAR.match(line)
    if match is None:
        return None
    desc = (match["desc"] or "").strip()
    metrics: dict[str, float] = {}
    for item in DESC_ITEM.finditer(desc):
        metrics[item["key"]] = float(item["value"])
        if item["mean"] is not None:
            metrics[f"{item['key']}_mean"] = float(item["mean"])
    return PlainBar(
        desc=desc,
        n=int(match["n"]),
        total=int(match["total"]),
        elapsed_seconds=clock_seconds(match["elapsed"]),
        remaining_seconds=clock_seconds(match["remaining"]),
        metrics=finite_metrics(metrics),
    )


def checkpoint_name(epoch: int) -> str:
    """``ngp_ep<EEEE>.pth``, what Trainer.save_checkpoint names an epoch's checkpoint (nerf_triplane/utils.py
    :1452–1479) and load_checkpoint looks for (:1517)."""
    return f"{TRAINER_NAME}_ep{epoch:04d}.pth"


def result_video_path(workspace: str, epoch: int, with_audio: bool) -> str:
    """The video ``main.py --test`` writes (nerf_triplane/utils.py:1047–1050, :1098): ``<ws>/results/
    ngp_ep<EEEE>.mp4`` (silent), or
    ``ngp_ep<EEEE>_audio.mp4``, which exists only for ``--aud`` runs (with ``--asr_model ave``, :1101)."""
    if epoch < 0:
        raise ValueError(f"An epoch is 0 or more, not {epoch}.")
    suffix = "_audio" if with_audio else ""
    return posixpath.join(workspace, "results", f"{TRAINER_NAME}_ep{epoch:04d}{suffix}.mp4")


class MainParser(ConsoleParser):
    """What training and test runs of ``main.py`` share: the setup lines, the checkpoint it loaded, the
    evaluation figures, the test pass, and the known failures."""

    def __init__(self, *, expect_checkpoint: bool):
        self.expect_checkpoint = expect_checkpoint
        self.stage = "setup"
        self.workspace: str | None = None
        self.iters: int | None = None
        self.epoch = 0  # the model's epoch: loaded, then trained
        self.global_step = 0
        self.loaded_checkpoint: str | None = None
        self.no_checkpoint = False
        self.results_dir: str | None = None
        self.test_done = False
        self.evaluated = False
        self.best_progress = 0.0
        self.watch = CrashWatch(MAIN_FAILURES)

    def feed(self, line: str) -> Update | None:
        line = clean_line(line)
        if not line:
            return None
        # Trainer.test() never closes its bar (nerf_triplane/utils.py:1056, no pbar.close() before :1103):
        # with stdout and stderr merged, "==> Finished Test." arrives glued to the bar's last redraw.
        bar, rest = split_after_bar(line)
        if rest:
            return merge_updates(self._piece(bar), self.feed(rest))
        return self._piece(line)

    def _piece(self, line: str) -> Update | None:
        update = self._line(line)
        if update is None and (message := self.watch.see(line, self.stage)):
            return Update(event={"error": message})
        return update

    def _line(self, line: str) -> Update | None:
        if line.startswith("Namespace("):
            if iters := NAMESPACE_ITERS.search(line):
                self.iters = self.iters or int(iters["iters"])
            if workspace := NAMESPACE_WORKSPACE.search(line):
                self.workspace = workspace["workspace"]
            return Update(stage="setup")
        if trainer := TRAINER.match(line):
            self.workspace = trainer["workspace"].strip()
            return Update(stage="setup")
        if latest := LATEST.match(line):
            self.loaded_checkpoint = latest["path"]
            if epoch := CHECKPOINT_EPOCH.search(self.loaded_checkpoint):
                self.epoch = int(epoch["epoch"])  # "load at epoch E" follows and confirms it
            return Update(event={"checkpoint_loaded": {"file": self.loaded_checkpoint}})
        if line == NO_CHECKPOINT:
            self.no_checkpoint = True
            if self.expect_checkpoint:
                return Update(event={"error": self._no_checkpoint_message()})
            return Update(event={"note": "No checkpoint yet: training starts from a random model."})
        if loaded := LOADED_AT.match(line):
            self.epoch, self.global_step = int(loaded["epoch"]), int(loaded["step"])
            return Update(event={"resumed": {"epoch": self.epoch, "global_step": self.global_step}})
        if EVAL_START.match(line):
            self.stage = "evaluate"
            return Update(stage="evaluate")
        if metric := METRIC.match(line):
            return Update(metrics=finite_metrics({metric["name"].lower(): float(metric["value"])}))
        if EVAL_END.match(line):
            self.evaluated = True
            return self._after_evaluation()
        if start := TEST_START.match(line):
            self.stage, self.results_dir = "test", start["path"].strip()
            return Update(stage="test")
        if line == TEST_END:
            self.test_done = True
            return self._after_test()
        if bar := parse_plain_bar(line):
            return self._bar(bar)
        # "Loading train data: 45%|…| …", drawn with tqdm's default format
        if (bar := parse_bar(line)) and bar.desc.startswith("Loading"):
            return Update(stage="loading")
        return None

    def _bar(self, bar: PlainBar) -> Update | None:
        return None

    def _after_evaluation(self) -> Update | None:
        return None

    def _after_test(self) -> Update | None:
        return None

    def _raise(self, progress: float) -> float:
        self.best_progress = max(self.best_progress, min(1.0, progress))
        return self.best_progress

    def _no_checkpoint_message(self) -> str:
        where = f"{self.workspace}/checkpoints" if self.workspace else "the workspace's checkpoints folder"
        return (
            f"No checkpoint in {where}: main.py went on with a randomly initialised model, so its output is "
            "noise. Train this workspace first (stage 1), or point --workspace at a trained one."
        )

    def _failure(self, returncode: int) -> str | None:
        if self.watch.failure:
            return self.watch.failure
        if self.expect_checkpoint and self.no_checkpoint:
            return self._no_checkpoint_message()
        if returncode != 0:
            return returncode_message("main.py", returncode)
        return None


class TrainParser(MainParser):
    """``main.py`` training (main.py:240–261). Progress ≈ ((E−1)·train_frames + n) / iters, ``--iters`` being
    cumulative across stages; a run ends with an evaluation and a test on the val split, and succeeds only
    when ``==> Finished Test.`` was printed.

    ``expect_checkpoint``: stage 2 (``--finetune_lips``) and torso training continue an existing workspace,
    so ``[WARN] No checkpoint found`` is a failure there; a first stage from scratch expects it."""

    def __init__(self, *, iters: int, expect_checkpoint: bool = False):
        if iters <= 0:
            raise ValueError(f"--iters is a positive number, not {iters}.")
        super().__init__(expect_checkpoint=expect_checkpoint)
        self.iters = iters
        self.train_frames: int | None = None
        self.max_epoch: int | None = None
        self.epochs_finished = 0
        self.training_over = False

    def _line(self, line: str) -> Update | None:
        if frames := FRAMES_LOADED.match(line):
            if frames["kind"] == "train" and self.train_frames is None:
                self.train_frames = int(frames["frames"])
                return Update(stage="loading", metrics={"train_frames": float(self.train_frames)})
            if frames["kind"] == "test":
                self.training_over = True  # main.py loads the test split once training is over
            return None
        if max_epoch := MAX_EPOCH.match(line):
            self.max_epoch = int(max_epoch["epoch"])
            return Update(metrics={"max_epoch": float(self.max_epoch)})
        if start := EPOCH_START.match(line):
            self.epoch, self.stage = int(start["epoch"]), "train"
            progress = self._raise(self._done_iterations(self.epoch - 1, 0) / self.iters)
            return Update(
                stage="train", progress=progress, metrics=finite_metrics({"lr": float(start["lr"])})
            )
        if end := EPOCH_END.match(line):
            epoch = int(end["epoch"])
            self.epoch, self.epochs_finished = epoch, self.epochs_finished + 1
            progress = self._raise(self._done_iterations(epoch, 0) / self.iters)
            return Update(progress=progress)
        if loss := EPOCH_LOSS.match(line):
            return Update(metrics=finite_metrics({"epoch_loss": float(loss["loss"])}))
        if TEST_START.match(line):
            self.training_over = True
        return super()._line(line)

    def _done_iterations(self, epochs: int, n: int) -> int:
        return epochs * (self.train_frames or 0) + n

    def _bar(self, bar: PlainBar) -> Update | None:
        if self.stage != "train":
            return None  # evaluation and test bars say nothing about training progress
        if self.train_frames is None:
            self.train_frames = bar.total
        progress = self._raise(self._done_iterations(self.epoch - 1, bar.n) / self.iters)
        return Update(stage="train", progress=progress, eta_seconds=self._eta(bar), metrics=bar.metrics)

    def _eta(self, bar: PlainBar) -> float | None:
        """This epoch's remaining time plus the epochs after it at this epoch's pace (evaluations left out).
        Better than the runner's guess from elapsed time, which a resumed run (starting at 60%) would fool."""
        if bar.remaining_seconds is None or bar.elapsed_seconds is None or not self.max_epoch:
            return None
        epochs_after = max(0, self.max_epoch - self.epoch)
        return bar.remaining_seconds + epochs_after * (bar.elapsed_seconds + bar.remaining_seconds)

    def _after_evaluation(self) -> Update | None:
        if not self.training_over and self.epochs_finished:
            self.stage = "train"
        return Update(stage=self.stage)

    def _after_test(self) -> Update:
        self.stage = "complete"
        return Update(stage="complete", progress=self._raise(1.0), eta_seconds=0.0)

    def outcome(self, returncode: int) -> str | None:
        if failure := self._failure(returncode):
            return failure
        if not self.test_done:
            return (
                "main.py ended before its final test ('==> Finished Test.'): training did not finish. The "
                "log's last lines say why; run the same command again to resume from the last checkpoint."
            )
        return None


class TestParser(MainParser):
    """``main.py --test`` (main.py:175–211): a test pass that writes the video, then, without ``--aud``, an
    evaluation over the val split (PSNR, LPIPS, LMD). A missing checkpoint is always a failure here."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, *, evaluate: bool = True):
        super().__init__(expect_checkpoint=True)
        self.evaluate = evaluate
        self.test_share = 0.5 if evaluate else 1.0

    def _bar(self, bar: PlainBar) -> Update | None:
        fraction = bar.n / bar.total if bar.total else 1.0
        if self.stage == "test":
            return Update(stage="test", progress=self._raise(self.test_share * fraction))
        if self.stage == "evaluate":
            return Update(
                stage="evaluate",
                progress=self._raise(self.test_share + (1 - self.test_share) * fraction),
                metrics=bar.metrics,
            )
        return None

    def _after_test(self) -> Update:
        done = not self.evaluate
        return Update(stage="complete" if done else "test", progress=self._raise(self.test_share))

    def _after_evaluation(self) -> Update:
        return Update(stage="complete", progress=self._raise(1.0), eta_seconds=0.0)

    def result_video(self, *, with_audio: bool) -> str | None:
        """The video this run wrote, once the test finished and the workspace is known."""
        if not self.test_done or self.workspace is None:
            return None
        return result_video_path(self.workspace, self.epoch, with_audio)

    def outcome(self, returncode: int) -> str | None:
        if failure := self._failure(returncode):
            return failure
        if not self.test_done:
            return "main.py ended before '==> Finished Test.': no result video was written."
        if self.evaluate and not self.evaluated:
            return (
                "main.py wrote the video but ended before its evaluation finished: no metrics were computed."
            )
        return None
