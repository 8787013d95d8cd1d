"""Engine consoles and command lines (docs/engines.md): GaussianTalker's
preprocessing and rendering, SyncTalk's preprocessing, training and test, where their videos land, the argv
the platform builds, and the demo stand-in for GaussianTalker's process.py run for real on a tiny video.

The console fixtures are written by tests/fixtures/make_engine_fixtures.py: tqdm bars and what is glued to
them come from upstream's own calls (merged stdout and stderr), the rest is synthesised from the
upstream lines docs/engines.md cites."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avatars.engines import shell
from avatars.engines.gaussiantalker import commands as gaussiantalker_commands
from avatars.engines.gaussiantalker import parsers as gaussiantalker
from avatars.engines.gaussiantalker.parsers import (
    PreprocessParser,
    RenderParser,
    TrainParser,
    expected_artifacts,
    missing_artifacts,
    render_output_path,
)
from avatars.engines.registry import engine_for
from avatars.engines.synctalk import commands as synctalk_commands
from avatars.engines.synctalk import parsers as synctalk
from avatars.engines.synctalk.parsers import TestParser, parse_plain_bar, result_video_path
from jobs.console import Update
from jobs.streams import LineSplitter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent.parent
DEMO_PROCESS = ROOT / "avatars" / "engines" / "demo" / "node" / "process.py"

GT_STAGES = [
    "audio",
    "audio_features",
    "images",
    "semantics",
    "background",
    "torso_gt",
    "landmarks",
    "face_tracking",
    "transforms",
]
ST_STAGES = [
    "audio",
    "images",
    "semantics",
    "background",
    "torso_gt",
    "landmarks",
    "face_tracking",
    "flow",
    "blendshape",
    "transforms",
]
SPEC_ST_BAR = "loss=0.0123 (0.0150), lr=0.009876: 45% 2700/6000 [01:23<01:40, 32.1it/s]"


def console_lines(data: bytes, chunk: int = 89) -> list[str]:
    """Lines as the runner sees them: the byte stream in arbitrary pieces through the LineSplitter."""
    splitter = LineSplitter()
    lines: list[str] = []
    for start in range(0, len(data), chunk):
        lines.extend(splitter.feed(data[start : start + chunk]))
    return lines + splitter.close()


def fixture_lines(name: str) -> list[str]:
    return console_lines((FIXTURES / name).read_bytes())


def run_parser(parser, lines: list[str]) -> list[tuple[str, Update]]:
    """(line, update) for every line that changed something."""
    return [(line, update) for line in lines if (update := parser.feed(line))]


def progress_of(updates) -> list[float]:
    return [update.progress for _, update in updates if update.progress is not None]


def stage_transitions(updates) -> list[str]:
    stages = [update.stage for _, update in updates if update.stage]
    return [stage for i, stage in enumerate(stages) if i == 0 or stages[i - 1] != stage]


def merged_metrics(updates) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for _, update in updates:
        metrics.update(update.metrics)
    return metrics


def events(updates, key: str) -> list:
    return [update.event[key] for _, update in updates if update.event and key in update.event]


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_engine_fixtures", FIXTURES / "make_engine_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixtures_are_what_the_generator_writes():
    generator = load_generator()
    for name, make in generator.FIXTURES.items():
        assert (FIXTURES / name).read_bytes() == make().encode(), f"{name}: run make_engine_fixtures.py"


# --- GaussianTalker preprocessing ---------------------------------------------------------------------------


def test_preprocess_fixture_is_a_console_with_cr_redraws():
    data = (FIXTURES / "gaussiantalker_preprocess.txt").read_bytes()
    assert data.count(b"\r") > 100  # tqdm and ffmpeg redraw in place
    assert data.count(b"[INFO] =====") == 18


def test_preprocess_parser_walks_the_nine_tasks_to_success():
    parser = PreprocessParser()
    updates = run_parser(parser, fixture_lines("gaussiantalker_preprocess.txt"))
    assert stage_transitions(updates) == GT_STAGES
    progress = progress_of(updates)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    done = events(updates, "task_done")
    assert [event["task"] for event in done] == list(range(1, 10))
    assert [event["stage"] for event in done] == GT_STAGES
    assert parser.outcome(0) is None


def test_preprocess_progress_is_tasks_done_over_tasks_requested():
    parser = PreprocessParser()
    lines = fixture_lines("gaussiantalker_preprocess.txt")
    after = {}
    for line in lines:
        update = parser.feed(line)
        if update and update.event and "task_done" in update.event:
            after[update.event["task_done"]["task"]] = update.progress
    assert after == {task: pytest.approx(task / 9) for task in range(1, 10)}


def test_preprocess_face_tracking_batches_move_progress_inside_task_8():
    parser = PreprocessParser()
    inside = []
    for line in fixture_lines("gaussiantalker_preprocess.txt"):
        update = parser.feed(line)
        if update and line.endswith(" done") and " of " in line:
            inside.append(update.progress)
    batches = int((300 - 1) / 32 + 1)  # the fixture's 12 s clip: 300 frames
    assert len(inside) == batches == 10
    assert inside[0] == pytest.approx((7 + 1 / batches) / 9)
    assert inside[-1] == pytest.approx(8 / 9)
    assert inside == sorted(inside)


def test_preprocess_tqdm_bars_move_progress_but_ffmpeg_and_downloads_do_not():
    parser = PreprocessParser()
    for line in [
        "[INFO] ===== extract face landmarks from data/obama/ori_imgs =====",
        "size=    4096kB time=00:01:04.00 bitrate= 512.0kbits/s speed= 412x    ",
        "frame= 1206 fps=412 q=1.0 size=N/A time=00:00:48.00 bitrate=N/A speed=16.5x    ",
        " 47%|████▋     | 40.0M/85.7M [00:02<00:02, 19.9MB/s]",
    ]:
        update = parser.feed(line)
    assert update is None
    update = parser.feed(" 50%|█████     | 2765/5530 [01:12<01:12, 38.20it/s]")
    assert (update.stage, update.progress) == ("landmarks", pytest.approx(0.5 / 9))


def test_preprocess_parser_for_one_task():
    parser = PreprocessParser(tasks=[3])
    first = parser.feed("[INFO] ===== extract images from data/obama/obama.mp4 to data/obama/ori_imgs =====")
    assert (first.stage, first.progress) == ("images", 0.0)
    last = parser.feed("[INFO] ===== extracted images =====")
    assert last.progress == 1.0
    assert parser.outcome(0) is None


def test_preprocess_no_face_in_task_7_is_a_clear_failure():
    parser = PreprocessParser()
    updates = run_parser(parser, fixture_lines("gaussiantalker_preprocess_noface.txt"))
    assert stage_transitions(updates)[-1] == "landmarks"
    assert max(progress_of(updates)) < 7 / 9
    errors = events(updates, "error")
    assert len(errors) == 1 and "without a detectable face" in errors[0]
    for returncode in (1, 0):  # the exit code is not what decides
        message = parser.outcome(returncode)
        assert message and "face" in message and "every frame" in message


def test_preprocess_crashed_child_fails_the_run_even_when_process_py_exits_zero():
    # process.py --task 8: face_tracker.py dies, process.py prints its end banner and exits 0.
    parser = PreprocessParser(tasks=[8])
    updates = run_parser(parser, fixture_lines("gaussiantalker_preprocess_tracker_crash.txt"))
    assert progress_of(updates)[-1] == 1.0  # every banner was printed…
    message = parser.outcome(0)  # …and still the run failed
    assert message and "01_MorphableModel.mat" in message and "convert_BFM.py" in message


def test_preprocess_any_traceback_fails_the_run_and_names_the_task():
    parser = PreprocessParser(tasks=[9])
    for line in [
        "[INFO] ===== save transforms =====",
        "Traceback (most recent call last):",
        '  File "data_utils/process.py", line 310, in save_transforms',
        "    params_dict = torch.load(os.path.join(base_dir, 'track_params.pt'))",
        "FileNotFoundError: [Errno 2] No such file or directory: 'data/obama/track_params.pt'",
    ]:
        parser.feed(line)
    message = parser.outcome(1)
    assert "task 9 (transforms)" in message and "track_params.pt" in message


def test_preprocess_without_the_final_banner_fails_even_with_exit_zero():
    lines = fixture_lines("gaussiantalker_preprocess.txt")
    parser = PreprocessParser()
    run_parser(parser, [line for line in lines if "finished saving transforms" not in line])
    message = parser.outcome(0)
    assert message and "task 9 (transforms)" in message and "finished saving transforms" in message
    assert "exit code" in message


def test_preprocess_known_failures_say_what_to_do():
    cases = {
        "KeyError: 'vertices'": "GaussianTalker's own face tracking",
        "File 'data/obama/aud.wav' already exists. Overwrite? [y/N] Not overwriting - exiting": "Empty the",
        "python: can't open file 'nerf/asr.py': [Errno 2] No such file or directory": "--asr deepspeech",
    }
    for line, advice in cases.items():
        parser = PreprocessParser()
        parser.feed("[INFO] ===== extract audio from data/obama/obama.mp4 to data/obama/aud.wav =====")
        update = parser.feed(line)
        assert update.event and advice in update.event["error"]
        assert advice in parser.outcome(0)


def test_preprocess_no_face_message_only_for_the_landmark_task():
    parser = PreprocessParser()
    parser.feed("[INFO] ===== save transforms =====")
    parser.feed("Traceback (most recent call last):")
    parser.feed("TypeError: object of type 'NoneType' has no len()")
    message = parser.outcome(1)
    assert "detectable face" not in message and "TypeError" in message


def test_preprocess_parser_rejects_unknown_tasks():
    with pytest.raises(ValueError, match="tasks are 1 to 9"):
        PreprocessParser(tasks=[10])
    with pytest.raises(ValueError):
        PreprocessParser(tasks=[])


def test_expected_artifacts_follow_the_produces_column():
    assert expected_artifacts(1) == ["aud.wav", "aud_train.wav", "aud_novel.wav"]
    assert expected_artifacts(2) == ["aud_ds.npy"]
    assert expected_artifacts(3) == ["ori_imgs/*.jpg"]
    assert expected_artifacts(4) == ["parsing/*.png"]
    assert expected_artifacts(5) == ["bc.jpg"]
    assert expected_artifacts(6) == ["gt_imgs/*.jpg", "torso_imgs/*.png"]
    assert expected_artifacts(7) == ["ori_imgs/*.lms"]
    assert expected_artifacts(8) == ["track_params.pt"]
    assert expected_artifacts(9) == ["transforms_train.json", "transforms_val.json"]
    for task in (0, 10, -1):
        with pytest.raises(ValueError):
            expected_artifacts(task)


# --- GaussianTalker training: known failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "advice"),
    [
        ("KeyError: 'vertices'", "another tracker"),
        ("KeyError: ' AU45_r'", "OpenFace"),
        ("OSError: [Errno 98] Address already in use", "--port"),
    ],
)
def test_train_parser_names_known_failures(line, advice):
    parser = TrainParser()
    parser.feed("Traceback (most recent call last):")
    update = parser.feed(line)
    assert update.event and advice in update.event["error"]
    assert advice in parser.outcome(1)


# --- GaussianTalker rendering -------------------------------------------------------------------------------


def test_render_parser_reads_a_custom_audio_render():
    parser = RenderParser(sets=("custom",))
    updates = run_parser(parser, fixture_lines("gaussiantalker_render_custom.txt"))
    assert stage_transitions(updates) == ["loading", "custom"]
    assert parser.loaded_iteration == 10000
    assert events(updates, "loaded_iteration") == [10000]
    progress = progress_of(updates)
    assert progress == sorted(progress)
    assert progress[-1] == 0.5  # the bar is the first of two passes; success sets 1.0
    metrics = merged_metrics(updates)
    assert metrics["fps"] == pytest.approx(97.35232639157698)
    assert metrics["points"] == 36365
    assert metrics["frames"] == metrics["rendered_frames"] == 503
    # the custom audio's frames are what render.py rendered for the custom set (render.py:101), not the
    # training audio's "load aud_features" (scene/talking_dataset_readers.py:355, 5530 frames here)
    assert metrics["audio_frames"] == 503
    assert parser.outcome(0) is None
    video = render_output_path("output/obama", "custom", parser.loaded_iteration)
    assert video == "output/obama/custom/ours_10000/renders/output_custom_10000iter_renders.mov"


def test_render_parser_reads_the_validation_render_of_the_test_set():
    parser = RenderParser(sets=("test",))
    run_parser(parser, fixture_lines("gaussiantalker_render_validation.txt"))
    assert parser.outcome(0) is None
    assert parser.loaded_iteration == 10000
    # test uses the raw --iteration (-1 here), not the one loaded.
    video = render_output_path("output/obama", "test", -1)
    assert video == "output/obama/test/ours_-1/renders/output_test_-1iter_renders.mov"


def test_render_parser_shares_progress_between_sets():
    parser = RenderParser(sets=("custom", "test"))
    lines = [
        "Loading trained model at iteration 10000 [16/11 14:02:11]",
        "        test set rendering  :   503  frames   [16/11 14:02:11]",
        "Rendering progress:  50%|█████     | 2/4 [00:04<00:04,  2.44s/it]",
        "FPS: 95.1 [16/11 14:02:24]",
        "        test set rendering  :   503  frames   [16/11 14:02:40]",
        "Rendering progress: 100%|██████████| 4/4 [00:09<00:00,  2.44s/it]",
        "FPS: 96.0 [16/11 14:02:51]",
    ]
    progress = [
        update.progress for line in lines if (update := parser.feed(line)) and update.progress is not None
    ]
    assert progress == [0.0, 0.125, 0.25, 0.5, 0.75, 0.75]
    assert parser.stage == "test"
    assert parser.outcome(0) is None


def test_render_parser_fails_when_a_set_did_not_finish():
    lines = fixture_lines("gaussiantalker_render_custom.txt")
    parser = RenderParser()
    run_parser(parser, [line for line in lines if not line.startswith("FPS")])
    assert "custom set" in parser.outcome(0)

    killed = RenderParser()
    run_parser(killed, lines[:12])
    assert "memory" in killed.outcome(-9)
    assert "memory" in killed.outcome(137)


def test_render_parser_missing_cfg_args():
    parser = RenderParser()
    parser.feed("Rendering  output/obama")
    parser.feed("Looking for config file in output/obama/cfg_args")  # not a failure by itself
    assert parser.watch.failure is None
    parser.feed("FileNotFoundError: [Errno 2] No such file or directory: 'output/obama/cfg_args'")
    assert "cfg_args" in parser.outcome(1)


def test_render_parser_rejects_sets_render_py_does_not_have_or_order():
    with pytest.raises(ValueError):
        RenderParser(sets=("val",))
    with pytest.raises(ValueError):
        RenderParser(sets=("test", "custom"))
    with pytest.raises(ValueError):
        RenderParser(sets=())


@pytest.mark.parametrize(
    ("model_path", "set_name", "iteration", "expected"),
    [
        ("output/obama", "custom", 10000,
         "output/obama/custom/ours_10000/renders/output_custom_10000iter_renders.mov"),
        ("output/obama/", "custom", 10000,
         "output/obama/custom/ours_10000/renders/obama_custom_10000iter_renders.mov"),
        ("/srv/jobs/7/output/obama", "train", 500,
         "/srv/jobs/7/output/obama/train/ours_500/renders/output_train_500iter_renders.mov"),
        ("output/obama", "test", -1,
         "output/obama/test/ours_-1/renders/output_test_-1iter_renders.mov"),
        ("output/obama/", "test", 10000,
         "output/obama/test/ours_10000/renders/obama_test_10000iter_renders.mov"),
    ],
)  # fmt: skip
def test_render_output_path_follows_render_py(model_path, set_name, iteration, expected):
    assert render_output_path(model_path, set_name, iteration) == expected


def test_render_output_path_refuses_what_render_py_cannot_name():
    with pytest.raises(ValueError, match="second-to-last"):
        render_output_path("obama", "custom", 10000)
    with pytest.raises(ValueError, match="loaded"):
        render_output_path("output/obama", "custom", -1)
    with pytest.raises(ValueError):
        render_output_path("output/obama", "val", 10000)


# --- SyncTalk preprocessing ---------------------------------------------------------------------------------


def test_synctalk_preprocess_walks_ten_tasks():
    parser = synctalk.PreprocessParser()
    updates = run_parser(parser, fixture_lines("synctalk_preprocess.txt"))
    assert stage_transitions(updates) == ST_STAGES
    assert [event["task"] for event in events(updates, "task_done")] == list(range(1, 11))
    assert events(updates, "note") == [
        "AVE has been integrated into the training code, no need to extract audio features"
    ]
    assert merged_metrics(updates)["frames"] == 300  # the fixture's 12 s clip
    progress = progress_of(updates)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert parser.outcome(0) is None


def test_synctalk_preprocess_tasks_without_end_banner():
    # Flow ends at its bundle adjustment line; blendshapes end with the next task or with the process.
    parser = synctalk.PreprocessParser(tasks=[8, 9])
    parser.feed("[INFO] ===== extract flow =====")
    done = parser.feed("bundle adjustment params saved")
    assert done.event == {"task_done": {"task": 8, "stage": "flow"}} and done.progress == 0.5
    assert parser.feed("[INFO] ===== extract blendshape =====").stage == "blendshape"
    assert parser.outcome(0) is None
    assert parser.outcome(1) is not None

    crashed = synctalk.PreprocessParser(tasks=[9])
    crashed.feed("[INFO] ===== extract blendshape =====")
    crashed.feed("Traceback (most recent call last):")
    crashed.feed("IndexError: list index out of range")
    assert "MediaPipe found no face" in crashed.outcome(0)


def test_synctalk_expected_artifacts():
    assert synctalk.expected_artifacts(1) == ["aud.wav"]
    # extract_ds_features.py:78 writes <stem>_ds.npy; training reads aud_ds.npy (provider.py:166)
    assert synctalk.expected_artifacts(1, "deepspeech") == ["aud.wav", "aud_ds.npy"]
    assert synctalk.expected_artifacts(1, "hubert") == ["aud.wav", "aud_hu.npy"]
    assert "face_mask/*.png" in synctalk.expected_artifacts(5)
    assert synctalk.expected_artifacts(8) == [
        "flow_result/*.npy",
        "keypoints.txt",
        "track_xys.npy",
        "bundle_adjustment.pt",
    ]
    assert synctalk.expected_artifacts(9) == ["bs.npy"]
    assert synctalk.expected_artifacts(10) == ["transforms_train.json", "transforms_val.json"]
    with pytest.raises(ValueError):
        synctalk.expected_artifacts(11)
    with pytest.raises(ValueError):
        synctalk.expected_artifacts(1, "wav2vec")


# --- SyncTalk training --------------------------------------------------------------------------------------


def test_parse_plain_bar_reads_main_py_bars():
    bar = parse_plain_bar(SPEC_ST_BAR)
    assert (bar.n, bar.total, bar.remaining_seconds) == (2700, 6000, 100)
    assert bar.metrics == {"loss": 0.0123, "loss_mean": 0.015, "lr": 0.009876}
    first = parse_plain_bar(":   0% 0/6000 [00:00<?, ?it/s]")
    assert (first.desc, first.n, first.remaining_seconds) == ("", 0, None)
    test = parse_plain_bar("100% 550/550 [00:20<00:00, 27.2it/s]")
    assert (test.desc, test.n, test.total) == ("", 550, 550)
    padded = parse_plain_bar(" 90% 9/10 [00:00<00:00, 27.20it/s]")  # {percentage:3.0f} pads below 100
    assert (padded.desc, padded.n, padded.total) == ("", 9, 10)
    assert parse_plain_bar("loss=nan (nan), lr=0.009876: 45% 2700/6000 [01:23<01:40, 32.1it/s]").metrics == {
        "lr": 0.009876
    }
    for line in [
        "Training progress:  45%|████▌     | 3600/7999 [12:34<15:20,  4.78it/s, Loss=0.0123456]",
        "[INFO] max_epoch = 10",
        "loss=0.0150",
        "PSNR = 32.201000",
    ]:
        assert parse_plain_bar(line) is None


def test_plain_bar_reads_the_described_bars_as_tqdm_draws_them():
    # set_description stores "desc: " and bar_format adds "{desc}: " again (utils.py:1282/:1323, :1367/:1426)
    lines = fixture_lines("synctalk_train.txt")
    described = [line for line in lines if line.startswith("loss=") and "lr=" in line and ": : " in line]
    assert described and all(": :" not in line for line in lines if line.startswith("  0%"))
    bar = parse_plain_bar(described[-1])
    assert bar.desc.startswith("loss=") and not bar.desc.endswith(":")
    assert {"loss", "loss_mean", "lr"} <= set(bar.metrics)
    evaluation = next(line for line in lines if ": : " in line and "lr=" not in line)
    assert set(parse_plain_bar(evaluation).metrics) == {"loss", "loss_mean"}


def test_synctalk_train_progress_follows_epochs_and_frames():
    parser = synctalk.TrainParser(iters=60000)
    parser.feed("[INFO] load 6000 train frames.")
    start = parser.feed("==> Start Training Epoch 3, lr=0.009659 ...")
    assert (start.stage, start.progress) == ("train", pytest.approx(2 * 6000 / 60000))
    update = parser.feed(SPEC_ST_BAR)
    assert update.progress == pytest.approx((2 * 6000 + 2700) / 60000)
    assert update.metrics == {"loss": 0.0123, "loss_mean": 0.015, "lr": 0.009876}
    assert update.eta_seconds is None  # max_epoch not printed yet
    parser.feed("[INFO] max_epoch = 10")
    # 01:40 left in epoch 3, then 7 epochs of 01:23 + 01:40 each.
    assert parser.feed(SPEC_ST_BAR).eta_seconds == 100 + 7 * (83 + 100)


def test_synctalk_train_fixture_from_scratch():
    parser = synctalk.TrainParser(iters=600)  # the fixture's run: 100 frames, --iters 600
    updates = run_parser(parser, fixture_lines("synctalk_train.txt"))
    assert stage_transitions(updates)[:3] == ["setup", "loading", "train"]
    assert stage_transitions(updates)[-3:] == ["evaluate", "test", "complete"]
    assert parser.train_frames == 100 and parser.max_epoch == 6
    progress = progress_of(updates)
    assert progress == sorted(progress) and progress[-1] == 1.0
    # save_checkpoint prints nothing (nerf_triplane/utils.py:1452–1513): checkpoints are listed on disk
    assert events(updates, "checkpoint") == []
    metrics = merged_metrics(updates)
    assert (metrics["psnr"], metrics["lpips"], metrics["lmd"]) == (31.9, 0.0411, 2.85)
    assert {"loss", "loss_mean", "lr", "epoch_loss"} <= set(metrics)
    assert events(updates, "note")  # no checkpoint yet: expected from scratch
    assert parser.outcome(0) is None


def test_synctalk_train_evaluation_bars_do_not_move_training_progress():
    parser = synctalk.TrainParser(iters=600)
    lines = fixture_lines("synctalk_train.txt")
    evaluating, during = False, []
    for line in lines:
        update = parser.feed(line)
        evaluating = parser.stage == "evaluate"
        if evaluating and update and update.progress is not None:
            during.append(update.progress)
    assert during == []


def test_synctalk_missing_checkpoint_fails_a_run_that_needs_one():
    parser = synctalk.TrainParser(iters=1000, expect_checkpoint=True)
    updates = run_parser(parser, fixture_lines("synctalk_train.txt"))
    assert "No checkpoint" in events(updates, "error")[0]
    message = parser.outcome(0)
    assert message and "model/trial_may/checkpoints" in message and "random" in message


def test_synctalk_second_stage_resumes_from_the_latest_checkpoint():
    parser = synctalk.TrainParser(iters=1000, expect_checkpoint=True)  # the fixture's --iters 1000
    updates = run_parser(parser, fixture_lines("synctalk_train_finetune.txt"))
    assert events(updates, "checkpoint_loaded") == [{"file": "model/trial_may/checkpoints/ngp_ep0006.pth"}]
    assert events(updates, "resumed") == [{"epoch": 6, "global_step": 600}]
    progress = progress_of(updates)
    assert progress[0] == pytest.approx(0.6)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert events(updates, "checkpoint") == []  # seen on disk (engine.list_checkpoints), not in the console
    assert merged_metrics(updates)["psnr"] == 32.201
    assert parser.outcome(0) is None


def test_synctalk_train_ending_before_its_final_test_fails():
    lines = fixture_lines("synctalk_train.txt")
    parser = synctalk.TrainParser(iters=600)
    run_parser(parser, lines[: lines.index("==> Finished Epoch 4.")])
    assert "Finished Test" in parser.outcome(0)
    assert "code 1" in parser.outcome(1)


@pytest.mark.parametrize(
    ("line", "advice"),
    [
        ("RuntimeError: CUDA out of memory. Tried to allocate 1.50 GiB", "GPU ran out of memory"),
        ("Killed", "--preload 0"),
        ("AssertionError: [ERROR] dataset too many frames: 23000, please increase --ind_num", "--ind_num"),
        ("FileNotFoundError: [Errno 2] No such file or directory: 'data/May/aud_ds.npy'", "--asr deepspeech"),
        ("KeyError: ' AU45_r'", "--au45"),
    ],
)
def test_synctalk_known_failures(line, advice):
    parser = synctalk.TrainParser(iters=60000)
    parser.feed("==> Start Training Epoch 1, lr=0.010000 ...")
    update = parser.feed(line)
    assert advice in update.event["error"]
    assert advice in parser.outcome(1)


def test_synctalk_faceless_frame_crashes_lmd_during_evaluation():
    parser = TestParser()
    parser.feed("++> Evaluate at epoch 17 ...")
    parser.feed("TypeError: 'NoneType' object is not subscriptable")
    assert "LMD" in parser.outcome(1)


# --- SyncTalk test ------------------------------------------------------------------------------------------


def test_synctalk_test_run_writes_the_video_then_scores_it():
    parser = TestParser(evaluate=True)
    updates = run_parser(parser, fixture_lines("synctalk_test.txt"))
    # the test split loads with its bar (nerf_triplane/provider.py:282) before Trainer.test
    assert stage_transitions(updates) == ["setup", "loading", "test", "evaluate", "complete"]
    progress = progress_of(updates)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert 0.5 in progress  # the test pass is the first half
    assert parser.epoch == 17
    assert parser.results_dir == "model/trial_may/results"
    assert parser.result_video(with_audio=False) == "model/trial_may/results/ngp_ep0017.mp4"
    metrics = merged_metrics(updates)
    assert (metrics["psnr"], metrics["lpips"], metrics["lmd"]) == (32.201, 0.0394, 2.822)
    assert parser.outcome(0) is None


def test_synctalk_test_without_checkpoint_is_a_failure_even_with_exit_zero():
    parser = TestParser(evaluate=True)
    updates = run_parser(parser, fixture_lines("synctalk_test_no_checkpoint.txt"))
    assert events(updates, "error")
    message = parser.outcome(0)
    assert message and "No checkpoint" in message and "noise" in message


def test_synctalk_custom_audio_run_has_no_evaluation():
    parser = TestParser(evaluate=False)
    lines = fixture_lines("synctalk_test.txt")
    end = lines.index("==> Finished Test.")
    updates = run_parser(parser, lines[:end])
    progress = progress_of(updates)  # the test bar (utils.py:1056) moves it; only the marker ends the run
    assert len(progress) > 2 and progress == sorted(progress)
    assert parser.outcome(0) is not None
    done = parser.feed(lines[end])
    assert (done.stage, done.progress) == ("complete", 1.0)
    assert parser.outcome(0) is None
    assert parser.result_video(with_audio=True) == "model/trial_may/results/ngp_ep0017_audio.mp4"


def raw_console_lines(name: str) -> list[str]:
    """The fixture cut only at its line endings, as a log replayed without the LineSplitter would be."""
    return (FIXTURES / name).read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")


def test_synctalk_test_bar_is_never_closed_so_finished_test_is_glued_to_it():
    # nerf_triplane/utils.py:1056–1103: the fixture is Trainer.test's own tqdm call, never closed
    glued = [line for line in raw_console_lines("synctalk_train.txt") if "==> Finished Test." in line]
    assert len(glued) == 1 and not glued[0].startswith("==>")
    assert synctalk.parse_plain_bar(glued[0]) is not None


def test_synctalk_training_ends_complete_when_finished_test_is_glued_to_the_bar():
    parser = synctalk.TrainParser(iters=600)
    updates = run_parser(parser, raw_console_lines("synctalk_train.txt"))
    assert stage_transitions(updates)[-1] == "complete"
    assert progress_of(updates)[-1] == 1.0
    assert parser.outcome(0) is None


def test_synctalk_glued_line_gives_both_the_bar_state_and_the_marker():
    glued = next(line for line in raw_console_lines("synctalk_test.txt") if "==> Finished Test." in line)
    parser = TestParser(evaluate=False)
    parser.feed("==> Start Test, save results to model/trial_may/results")
    parser.feed("[INFO] Trainer: ngp | 2024-11-17_09-30-00 | cuda | fp16 | model/trial_may")
    update = parser.feed(glued)
    assert (update.stage, update.progress) == ("complete", 1.0)
    assert parser.test_done and parser.outcome(0) is None


def test_synctalk_test_that_stops_before_evaluating_fails():
    lines = fixture_lines("synctalk_test.txt")
    parser = TestParser(evaluate=True)
    run_parser(parser, lines[: lines.index("==> Finished Test.") + 1])
    assert "evaluation" in parser.outcome(0)


def test_result_video_path():
    assert result_video_path("model/trial_may", 19, False) == "model/trial_may/results/ngp_ep0019.mp4"
    assert result_video_path("model/trial_may/", 19, True) == "model/trial_may/results/ngp_ep0019_audio.mp4"
    assert result_video_path("/srv/ws", 12345, False) == "/srv/ws/results/ngp_ep12345.mp4"
    with pytest.raises(ValueError):
        result_video_path("model/trial_may", -1, False)


def test_synctalk_parsers_ignore_colour_codes():
    parser = synctalk.TrainParser(iters=60000)
    parser.feed("\x1b[34m[INFO] load 6000 train frames.\x1b[0m")
    update = parser.feed("\x1b[1m==> Start Training Epoch 2, lr=0.009330 ...\x1b[0m")
    assert update.progress == pytest.approx(0.1)


# --- command lines ------------------------------------------------------------------------------------------


def test_gaussiantalker_command_lines():
    assert gaussiantalker_commands.preprocess(data_root="data", name="obama", task=3) == [
        "python", "-u", "data_utils/process.py", "data/obama/obama.mp4", "--task", "3", "--asr", "deepspeech",
    ]  # fmt: skip
    assert gaussiantalker_commands.preprocess(data_root="/srv/jobs/7/data/", name="obama")[3:6] == [
        "/srv/jobs/7/data/obama/obama.mp4", "--task", "-1",
    ]  # fmt: skip
    assert gaussiantalker_commands.train(data_root="data", output_root="output", name="obama", port=6011) == [
        "python", "-u", "train.py", "-s", "data/obama", "--model_path", "output/obama",
        "--configs", "arguments/64_dim_1_transformer.py", "--port", "6011",
    ]  # fmt: skip
    assert gaussiantalker_commands.audio_features(wav="data/obama/test.wav") == [
        "python", "-u", "data_utils/deepspeech_features/extract_ds_features.py",
        "--input", "data/obama/test.wav", "--output", "data/obama/test.npy",
    ]  # fmt: skip
    assert gaussiantalker_commands.render(
        data_root="data", output_root="output", name="obama", custom_aud="test.npy", custom_wav="test.wav",
        iteration=10000,
    ) == [
        "python", "-u", "render.py", "-s", "data/obama", "--model_path", "output/obama",
        "--configs", "arguments/64_dim_1_transformer.py", "--iteration", "10000", "--batch", "128",
        "--custom_aud", "test.npy", "--custom_wav", "test.wav", "--skip_train", "--skip_test",
    ]  # fmt: skip
    validation = gaussiantalker_commands.validation_render(
        data_root="data", output_root="output", name="obama", iteration=500, batch=64
    )
    assert validation == [
        "python", "-u", "render.py", "-s", "data/obama", "--model_path", "output/obama",
        "--configs", "arguments/64_dim_1_transformer.py", "--iteration", "500", "--batch", "64",
        "--skip_train",
    ]  # fmt: skip


def test_synctalk_command_lines():
    assert synctalk_commands.preprocess(name="may", task=8) == [
        "python", "-u", "data_utils/process.py", "data/may/may.mp4", "--asr", "ave", "--task", "8",
    ]  # fmt: skip
    assert synctalk_commands.train(name="may", workspace="may-head") == [
        "python", "-u", "main.py", "data/may", "--workspace", "model/may-head", "-O", "--iters", "60000",
        "--asr_model", "ave",
    ]  # fmt: skip
    assert synctalk_commands.train(name="may", workspace="may-head", iters=100000, finetune_lips=True) == [
        "python", "-u", "main.py", "data/may", "--workspace", "model/may-head", "-O", "--iters", "100000",
        "--finetune_lips", "--patch_size", "64", "--asr_model", "ave",
    ]  # fmt: skip
    assert synctalk_commands.test(name="may", workspace="may-head", portrait=True) == [
        "python", "-u", "main.py", "data/may", "--workspace", "model/may-head", "-O", "--test",
        "--asr_model", "ave", "--portrait",
    ]  # fmt: skip
    assert synctalk_commands.custom_audio(name="may", workspace="may-head", wav="demo/test.wav") == [
        "python", "-u", "main.py", "data/may", "--workspace", "model/may-head", "-O", "--test",
        "--test_train", "--asr_model", "ave", "--aud", "demo/test.wav",
    ]  # fmt: skip


BAD_NAMES = ["Obama", "-obama", "ob ama", "ob/ama", "a;rm -rf", "", "x" * 64, "obäma", "ob_ama", "..", "a\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_command_builders_refuse_unsafe_names(name):
    builders = [
        lambda: gaussiantalker_commands.preprocess(data_root="data", name=name),
        lambda: gaussiantalker_commands.train(data_root="data", output_root="output", name=name),
        lambda: gaussiantalker_commands.render(
            data_root="data",
            output_root="output",
            name=name,
            custom_aud="a.npy",
            custom_wav="a.wav",
            iteration=1,
        ),
        lambda: synctalk_commands.preprocess(name=name),
        lambda: synctalk_commands.train(name=name, workspace="ws"),
        lambda: synctalk_commands.train(name="may", workspace=name),
        lambda: synctalk_commands.test(name="may", workspace=name),
    ]
    for build in builders:
        with pytest.raises(ValueError, match="not allowed"):
            build()


@pytest.mark.parametrize("name", ["obama", "may-2", "0", "a" * 63, "9lives"])
def test_command_builders_accept_safe_names(name):
    assert shell.validate_name(name) == name
    assert synctalk_commands.train(name=name, workspace=name)[3] == f"data/{name}"


@pytest.mark.parametrize(
    "path", ["my data", "../data", "data/../../etc", "-data", "data;ls", "$HOME/data", ""]
)
def test_command_builders_refuse_unsafe_paths(path):
    with pytest.raises(ValueError, match="not allowed"):
        gaussiantalker_commands.preprocess(data_root=path, name="obama")
    with pytest.raises(ValueError, match="not allowed"):
        gaussiantalker_commands.audio_features(wav=f"{path}/x.wav" if path else "x y.wav")


def test_command_builders_check_numbers():
    with pytest.raises(ValueError):
        gaussiantalker_commands.preprocess(data_root="data", name="obama", task=10)
    with pytest.raises(ValueError):
        synctalk_commands.preprocess(name="may", task=11)
    assert synctalk_commands.preprocess(name="may", task=10)[-1] == "10"
    with pytest.raises(ValueError):
        gaussiantalker_commands.train(data_root="data", output_root="output", name="obama", port=80)
    with pytest.raises(ValueError):
        gaussiantalker_commands.validation_render(
            data_root="data", output_root="output", name="obama", iteration=10000, batch=0
        )
    with pytest.raises(ValueError):
        gaussiantalker_commands.validation_render(
            data_root="data", output_root="output", name="obama", iteration=0
        )
    with pytest.raises(ValueError):
        synctalk_commands.train(name="may", workspace="ws", iters=0)
    with pytest.raises(ValueError):
        synctalk_commands.custom_audio(name="may", workspace="ws", wav="demo/test.npy")
    with pytest.raises(ValueError):
        synctalk_commands.test(name="may", workspace="ws", asr_model="wav2vec")


def test_every_command_runs_python_unbuffered_and_env_covers_children():
    argvs = [
        gaussiantalker_commands.preprocess(data_root="data", name="obama"),
        gaussiantalker_commands.train(data_root="data", output_root="output", name="obama"),
        gaussiantalker_commands.audio_features(wav="x.wav"),
        gaussiantalker_commands.validation_render(
            data_root="data", output_root="output", name="obama", iteration=10000
        ),
        synctalk_commands.preprocess(name="may"),
        synctalk_commands.test(name="may", workspace="ws"),
    ]
    assert all(argv[:2] == ["python", "-u"] for argv in argvs)
    assert engine_for("gaussiantalker").env() == {"PYTHONUNBUFFERED": "1"}
    assert engine_for("synctalk").env() == {"PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}


# Upstream's arguments/64_dim_1_transformer.py, OptimizationParams part (these override the CLI:
# utils/params_utils.py:1–7).
GT_CONFIG = """ModelHiddenParams = dict(
    multires = [1,2],
    defor_depth = 2,
    n_layer=1,
    train_tri_plane=True,
)
OptimizationParams = dict(
    dataloader=True,
    densify_from_iter =1000,
    iterations = 10000,
    batch_size=32,
    coarse_iterations = 7999,
    densify_until_iter = 7000,
    canonical_tri_plane_factor_list=["opacity","shs"], #["scales","rotations","opacity","shs"]
)
"""


def config_values(text: str) -> dict:
    namespace: dict = {}
    exec(compile(text, "config.py", "exec"), namespace)  # what mmcv.Config.fromfile does with it
    return namespace["OptimizationParams"]


def test_derived_config_text_changes_only_the_iterations():
    text = gaussiantalker_commands.derived_config_text(GT_CONFIG, 3000)
    values = config_values(text)
    assert values["iterations"] == 3000
    assert values["coarse_iterations"] == 7999
    assert [line for line in text.splitlines() if line not in GT_CONFIG.splitlines()] == [
        "    iterations = 3000,"
    ]
    both = config_values(gaussiantalker_commands.derived_config_text(GT_CONFIG, 3000, coarse_iterations=500))
    assert (both["iterations"], both["coarse_iterations"]) == (3000, 500)


def test_derived_config_text_fails_clearly_when_it_cannot_find_the_value():
    with pytest.raises(ValueError, match="does not set 'iterations"):
        gaussiantalker_commands.derived_config_text("OptimizationParams = dict(batch_size=32)\n", 3000)
    with pytest.raises(ValueError, match="2 times"):
        gaussiantalker_commands.derived_config_text(GT_CONFIG + "X = dict(\n    iterations=5,\n)\n", 3000)
    with pytest.raises(ValueError):
        gaussiantalker_commands.derived_config_text(GT_CONFIG, 0)


# --- the demo process.py, for real --------------------------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("ffprobe")), reason="needs ffmpeg"
)


def make_video(folder: Path, name: str = "demo") -> Path:
    video = folder / name / f"{name}.mp4"
    video.parent.mkdir(parents=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "3", "-shortest", str(video)],
        check=True, timeout=60,
    )  # fmt: skip
    return video


def run_demo_process(video: Path, *args: str) -> tuple[int, bytes]:
    completed = subprocess.run(
        [sys.executable, "-u", str(DEMO_PROCESS), str(video), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # merged, as the runner reads it
        timeout=120,
        check=False,
    )
    return completed.returncode, completed.stdout


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    """One full demo preprocessing run, shared by the tests that read its console and files."""
    video = make_video(tmp_path_factory.mktemp("demo-process"))
    returncode, output = run_demo_process(video)
    return video.parent, returncode, output


@needs_ffmpeg
def test_demo_process_console_drives_the_parser_to_success(demo_dataset):
    _, returncode, output = demo_dataset
    assert returncode == 0, output.decode(errors="replace")[-3000:]
    parser = PreprocessParser()
    updates = run_parser(parser, console_lines(output, chunk=17))
    assert stage_transitions(updates) == GT_STAGES
    progress = progress_of(updates)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert parser.outcome(returncode) is None
    assert b"\r" in output  # tqdm-style redraws


@needs_ffmpeg
def test_demo_process_leaves_every_expected_artifact(demo_dataset):
    folder, _, _ = demo_dataset
    assert missing_artifacts(folder, range(1, 10)) == []
    for task in range(1, 10):
        for pattern in expected_artifacts(task):
            assert list(folder.glob(pattern)), pattern
    frames = sorted(folder.glob("ori_imgs/*.jpg"))
    assert len(frames) == 75  # 3 s at 25 fps
    assert {path.name for path in frames} == {f"{i}.jpg" for i in range(75)}
    for sub, suffix in (
        ("parsing", ".png"),
        ("gt_imgs", ".jpg"),
        ("torso_imgs", ".png"),
        ("ori_imgs", ".lms"),
    ):
        assert len(list(folder.glob(f"{sub}/*{suffix}"))) == 75, sub


@needs_ffmpeg
def test_demo_process_transforms_use_the_real_split(demo_dataset):
    folder, _, _ = demo_dataset
    train = json.loads((folder / "transforms_train.json").read_text())
    val = json.loads((folder / "transforms_val.json").read_text())
    split = int(75 * 10 / 11)
    assert [frame["img_id"] for frame in train["frames"]] == list(range(split))
    assert [frame["img_id"] for frame in val["frames"]] == list(range(split, 75))
    for transforms in (train, val):
        assert {"focal_len", "cx", "cy", "frames"} <= set(transforms)
        assert (transforms["cx"], transforms["cy"]) == (128.0, 128.0)
        assert "placeholder" in transforms["talkforge_demo"]
        frame = transforms["frames"][0]
        assert frame["aud_id"] == frame["img_id"]
        assert len(frame["transform_matrix"]) == 4 and all(len(row) == 4 for row in frame["transform_matrix"])


def probe(path: Path, entries: str) -> list[str]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", entries,
         "-of", "default=noprint_wrappers=1:nokey=1", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.split()


@needs_ffmpeg
def test_demo_process_audio_is_real_and_split_ten_to_one(demo_dataset):
    folder, _, _ = demo_dataset
    for name in ("aud.wav", "aud_train.wav", "aud_novel.wav"):
        sample_rate, channels = probe(folder / name, "stream=sample_rate,channels")
        assert (sample_rate, channels) == ("16000", "1"), name
    whole = float(probe(folder / "aud.wav", "format=duration")[0])
    train = float(probe(folder / "aud_train.wav", "format=duration")[0])
    novel = float(probe(folder / "aud_novel.wav", "format=duration")[0])
    assert whole == pytest.approx(3.0, abs=0.05)
    assert train == pytest.approx(whole * 10 / 11, abs=0.05)
    assert novel == pytest.approx(whole / 11, abs=0.05)


@needs_ffmpeg
def test_demo_process_placeholders_say_so(demo_dataset):
    folder, _, _ = demo_dataset
    for name in ("aud_ds.npy", "aud.npy", "track_params.pt"):
        assert "demo placeholder" in (folder / name).read_text()
    landmarks = (folder / "ori_imgs" / "0.lms").read_text().splitlines()
    assert len(landmarks) == 68
    points = [tuple(map(float, line.split())) for line in landmarks]
    assert all(0 <= x <= 256 and 0 <= y <= 256 for x, y in points)
    assert probe(folder / "torso_imgs" / "0.png", "stream=pix_fmt") == ["rgba"]
    assert probe(folder / "parsing" / "0.png", "stream=width,height") == ["256", "256"]


@needs_ffmpeg
def test_demo_process_one_task_at_a_time_leaves_each_tasks_artifacts(tmp_path):
    video = make_video(tmp_path, "solo")
    for task in range(1, 10):
        returncode, output = run_demo_process(video, "--task", str(task))
        parser = PreprocessParser(tasks=[task])
        run_parser(parser, console_lines(output))
        assert parser.outcome(returncode) is None, output.decode(errors="replace")[-2000:]
        assert missing_artifacts(video.parent, [task]) == [], task


@needs_ffmpeg
def test_demo_process_fail_task_7_is_the_no_face_crash(tmp_path):
    video = make_video(tmp_path, "noface")
    returncode, output = run_demo_process(video, "--fail_task", "7")
    assert returncode == 1
    assert b"TypeError: object of type 'NoneType' has no len()" in output
    parser = PreprocessParser()
    updates = run_parser(parser, console_lines(output))
    assert max(progress_of(updates)) < 7 / 9
    message = parser.outcome(returncode)
    assert message and "face" in message
    assert b"extracted face landmarks" not in output


@needs_ffmpeg
def test_demo_process_fail_task_8_exits_zero_and_still_fails(tmp_path):
    video = make_video(tmp_path, "nobfm")
    for task in (3, 7):
        assert run_demo_process(video, "--task", str(task))[0] == 0
    returncode, output = run_demo_process(video, "--task", "8", "--fail_task", "8")
    assert returncode == 0  # like process.py: the child crashed, the parent did not notice
    parser = PreprocessParser(tasks=[8])
    run_parser(parser, console_lines(output))
    assert "Basel Face Model" in parser.outcome(returncode)
    assert missing_artifacts(video.parent, [8]) == ["track_params.pt"]


def test_metrics_from_every_parser_are_finite():
    lines = [
        ("loss=nan (nan), lr=inf: 45% 2700/6000 [01:23<01:40, 32.1it/s]", synctalk.TrainParser(iters=60000)),
        ("PSNR = nan", synctalk.TrainParser(iters=60000)),
        ("FPS: inf [16/11 14:02:24]", RenderParser()),
    ]
    for line, parser in lines:
        parser.stage = "train"
        update = parser.feed(line)
        assert update is not None
        assert all(math.isfinite(value) for value in update.metrics.values())
        json.dumps(update.metrics, allow_nan=False)


def test_gaussiantalker_module_exposes_the_task_table_in_order():
    assert [task.stage for task in gaussiantalker.GAUSSIANTALKER_TASKS] == GT_STAGES
    assert [task.stage for task in synctalk.SYNCTALK_TASKS] == ST_STAGES
