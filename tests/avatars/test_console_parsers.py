"""Reading engine consoles (docs/engines.md): tqdm bars, safe_state timestamps, GaussianTalker's
training stages, and the demo engine, which must print and write what the real train.py does."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avatars import demo_kind
from avatars.engines.console import clock_seconds, parse_bar
from avatars.engines.gaussiantalker.parsers import TrainParser
from jobs.console import ConsoleParser, strip_timestamp
from jobs.kinds import kind_spec
from jobs.models import Job
from jobs.streams import LineSplitter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent.parent
DEMO_TRAIN = ROOT / "avatars" / "engines" / "demo" / "node" / "train.py"

SPEC_BAR = (
    "Training progress:  45%|████▌     | 3600/7999 [12:34<15:20,  4.78it/s, Loss=0.0123456, psnr=31.52, "
    "point=34650]"
)


def console_lines(data: bytes, chunk: int = 97) -> list[str]:
    """Lines as the runner sees them: the byte stream in arbitrary pieces through the LineSplitter."""
    splitter = LineSplitter()
    lines: list[str] = []
    for start in range(0, len(data), chunk):
        lines.extend(splitter.feed(data[start : start + chunk]))
    return lines + splitter.close()


def run_parser(parser: TrainParser, lines: list[str]) -> list:
    """(line, update) for every line that changed something."""
    return [(line, update) for line in lines if (update := parser.feed(line))]


def fixture_lines(name: str) -> list[str]:
    return console_lines((FIXTURES / name).read_bytes())


# --- parse_bar and friends ---------------------------------------------------------------------------


def test_parse_bar_reads_the_spec_example():
    bar = parse_bar(SPEC_BAR)
    assert bar is not None
    assert bar.desc == "Training progress"
    assert (bar.n, bar.total) == (3600, 7999)
    assert bar.remaining_seconds == 15 * 60 + 20
    assert bar.postfix == {"Loss": 0.0123456, "psnr": 31.52, "point": 34650.0}


def test_parse_bar_reads_tqdm_first_draw_with_unknown_remaining_time():
    bar = parse_bar("Training progress:   0%|          | 0/7999 [00:00<?, ?it/s]")
    assert bar is not None
    assert (bar.n, bar.total) == (0, 7999)
    assert bar.remaining_seconds is None
    assert bar.postfix == {}


def test_parse_bar_reads_hours_and_scientific_notation():
    bar = parse_bar(
        "Training progress:   3%|▎         | 300/10000 [01:02<1:02:03,  2.61it/s, Loss=1.5e-05, psnr=48.20]"
    )
    assert bar is not None
    assert bar.remaining_seconds == 3723
    assert bar.postfix == {"Loss": 1.5e-05, "psnr": 48.2}


def test_parse_bar_reads_render_bar_without_postfix():
    bar = parse_bar("Rendering progress: 100%|██████████| 4/4 [00:01<00:00,  3.05it/s]")
    assert bar is not None
    assert (bar.desc, bar.n, bar.total, bar.postfix) == ("Rendering progress", 4, 4, {})


@pytest.mark.parametrize(
    "line",
    [
        "[ITER 500] Saving Gaussians [16/11 12:30:01]",
        "Number of points at initialisation :  34650 [16/11 12:26:41]",
        "[INFO] load aud_features: torch.Size([5530, 29, 16]) [16/11 12:26:35]",
        "loss is nan,end training, reexecv program now. [16/11 12:28:01]",
        "",
    ],
)
def test_parse_bar_ignores_lines_that_are_not_bars(line):
    assert parse_bar(line) is None


def test_clock_seconds_reads_minutes_hours_and_unknown():
    assert clock_seconds("12:34") == 754
    assert clock_seconds("1:00:01") == 3601
    assert clock_seconds("?") is None
    assert clock_seconds("") is None


def test_strip_timestamp_removes_only_the_safe_state_suffix():
    assert strip_timestamp("Output folder: output/obama [16/11 12:26:35]") == "Output folder: output/obama"
    assert strip_timestamp("Optimizing output/obama") == "Optimizing output/obama"
    # A bracket that is not a trailing safe_state stamp stays.
    assert strip_timestamp("[16/11 12:26:35] at the start") == "[16/11 12:26:35] at the start"


def test_console_parser_turns_preprocess_banners_into_stages():
    parser = ConsoleParser()
    update = parser.feed("[INFO] ===== extract audio from data/obama/obama.mp4 to data/obama/aud.wav =====")
    assert update is not None
    assert update.stage == "extract audio from data/obama/obama.mp4 to data/obama/aud.wav"
    assert parser.feed("[INFO] fitting focal length...") is None
    assert parser.outcome(0) is None
    assert "code 2" in parser.outcome(2)


# --- GaussianTalker training console (fixture) --------------------------------------------------------


def test_fixture_is_a_real_console_stream_with_cr_redraws():
    data = (FIXTURES / "gaussiantalker_train.txt").read_bytes()
    # Bars redraw in place: many bars share one "\n"-line of the file; the splitter separates them.
    assert data.count(b"\rTraining progress") > data.count(b"\nTraining progress") + 100
    lines = console_lines(data)
    bars = [line for line in lines if line.startswith("Training progress")]
    assert len(bars) == data.count(b"Training progress")
    assert all(parse_bar(line) for line in bars)


def test_train_parser_moves_from_coarse_to_fine_and_ends_complete():
    parser = TrainParser()
    updates = run_parser(parser, fixture_lines("gaussiantalker_train.txt"))
    stages = [update.stage for _, update in updates if update.stage]
    transitions = [stage for i, stage in enumerate(stages) if i == 0 or stages[i - 1] != stage]
    assert transitions == ["coarse", "fine", "complete"]
    # The first fine bar (0/10000) comes right after the whole coarse stage.
    first_fine = next(update for _, update in updates if update.stage == "fine")
    assert first_fine.progress == pytest.approx(7999 / 17999)
    assert parser.restarts == 1


def test_train_parser_progress_is_monotonic_within_a_run_and_ends_at_one():
    parser = TrainParser()
    updates = run_parser(parser, fixture_lines("gaussiantalker_train.txt"))
    runs: list[list[float]] = [[]]
    for _, update in updates:
        if update.event and "restart" in update.event:
            runs.append([])
        if update.progress is not None:
            runs[-1].append(update.progress)
    assert len(runs) == 2
    for progress in runs:
        assert progress == sorted(progress)
        assert all(0.0 <= value <= 1.0 for value in progress)
    assert runs[0][-1] < 0.5  # the NaN came during the coarse stage
    assert runs[1][0] == 0.0  # the restart starts over
    assert runs[1][-1] == 1.0
    assert parser.outcome(0) is None


def test_train_parser_reads_loss_and_psnr_from_the_bar():
    parser = TrainParser()
    metrics = {}
    for _, update in run_parser(parser, fixture_lines("gaussiantalker_train.txt")):
        metrics.update(update.metrics)
    # The last bar of the fixture: Loss=0.0000382, psnr=47.18, point=35565
    assert metrics["loss"] == pytest.approx(0.0000382)
    assert metrics["psnr"] == pytest.approx(47.18)
    assert metrics["point"] == 35565


def test_train_parser_metrics_of_the_spec_bar():
    parser = TrainParser()
    update = parser.feed(SPEC_BAR)
    assert update.stage == "coarse"
    assert update.metrics == {"loss": 0.0123456, "psnr": 31.52, "point": 34650.0}
    assert update.progress == pytest.approx(3600 / (7999 + 10000))


def test_train_parser_nan_restart_goes_back_to_coarse_at_zero():
    parser = TrainParser()
    lines = fixture_lines("gaussiantalker_train.txt")
    nan_at = next(i for i, line in enumerate(lines) if line.startswith("loss is nan"))
    progress = []
    for line in lines[:nan_at]:
        update = parser.feed(line)
        if update and update.progress is not None:
            progress.append(update.progress)
    assert progress[-1] == pytest.approx(2300 / 17999)  # the last redraw before the NaN
    update = parser.feed(lines[nan_at])
    assert (update.stage, update.progress) == ("coarse", 0.0)
    assert update.event == {"restart": "NaN loss; the engine restarts"}
    after = parser.feed("Training progress:   1%|          | 100/7999 [00:03<04:23, 30.81it/s, Loss=0.19]")
    assert after.stage == "coarse"
    assert after.progress == pytest.approx(100 / 17999)


def raw_console_lines(name: str) -> list[str]:
    """The fixture cut only at its line endings, as a log replayed without the LineSplitter would be."""
    return (FIXTURES / name).read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")


@pytest.mark.parametrize("split", [raw_console_lines, fixture_lines])
def test_train_parser_nan_restart_glued_to_the_bar_is_seen(split):
    # train.py:180 prints while the bar of train.py:68 is open: the fixture is those calls, merged
    lines = split("gaussiantalker_train_nan.txt")
    parser = TrainParser()
    updates = run_parser(parser, lines)
    restarts = [update for _, update in updates if update.event and "restart" in update.event]
    assert len(restarts) == 1 and parser.restarts == 1
    assert (restarts[0].stage, restarts[0].progress) == ("coarse", 0.0)
    after = [
        update.progress
        for _, update in updates[
            updates.index(next((line, update) for line, update in updates if update is restarts[0])) + 1 :
        ]
        if update.progress
    ]
    assert after and max(after) < 100 / 17999  # the restarted run counts from zero


def test_glued_nan_line_is_one_raw_line_after_a_bar():
    glued = [line for line in raw_console_lines("gaussiantalker_train_nan.txt") if "loss is nan" in line]
    assert len(glued) == 1 and glued[0].startswith("Training progress:")


def test_train_parser_nan_restart_during_fine_stage_starts_over_in_coarse():
    parser = TrainParser(coarse_iterations=100, iterations=200)
    for line in [
        "Training progress: 100%|██████████| 100/100 [00:01<00:00, 99.0it/s, Loss=0.1]",
        "reset dataloader into random dataloader. [16/11 12:32:35]",
        "Training progress:  50%|█████     | 100/200 [00:01<00:01, 99.0it/s, Loss=0.05]",
    ]:
        last = parser.feed(line)
    assert (last.stage, last.progress) == ("fine", pytest.approx(200 / 300))
    parser.feed("loss is nan,end training, reexecv program now. [16/11 12:28:01]")
    again = parser.feed("Training progress:  10%|█         | 10/100 [00:00<00:01, 99.0it/s, Loss=0.2]")
    assert (again.stage, again.progress) == ("coarse", pytest.approx(10 / 300))


def test_train_parser_records_saved_checkpoints_per_stage():
    parser = TrainParser()
    saved = [
        update.event["checkpoint"]
        for _, update in run_parser(parser, fixture_lines("gaussiantalker_train.txt"))
        if update.event and "checkpoint" in update.event
    ]
    last_run = saved[saved.index({"stage": "coarse", "iteration": 2000}) + 1 :]
    assert [s["iteration"] for s in last_run if s["stage"] == "coarse"] == [1, *range(500, 8000, 500)]
    assert [s["iteration"] for s in last_run if s["stage"] == "fine"] == [1, *range(500, 10001, 500)]


def test_train_parser_outcome_is_none_only_after_training_complete_and_exit_zero():
    lines = fixture_lines("gaussiantalker_train.txt")
    complete = TrainParser()
    run_parser(complete, lines)
    assert complete.outcome(0) is None
    message = complete.outcome(1)
    assert message and "1" in message

    truncated = TrainParser()
    run_parser(truncated, [line for line in lines if not line.startswith("Training complete.")])
    message = truncated.outcome(0)
    assert message and "Training complete." in message


def test_train_parser_failed_run_keeps_its_progress_and_fails():
    parser = TrainParser()
    updates = run_parser(parser, fixture_lines("gaussiantalker_train_oom.txt"))
    progress = [update.progress for _, update in updates if update.progress is not None]
    assert progress == sorted(progress)
    assert progress[-1] == pytest.approx((7999 + 1200) / 17999)
    assert parser.stage == "fine"
    assert parser.outcome(1) is not None
    assert parser.outcome(0) is not None  # no "Training complete.": even exit 0 is a failure


def test_train_parser_metrics_are_always_valid_json():
    parser = TrainParser()
    update = parser.feed(
        "Training progress:  45%|████▌     | 3600/7999 [12:34<15:20,  4.78it/s, Loss=nan, psnr=inf]"
    )
    assert update is not None and update.progress is not None
    assert all(math.isfinite(value) for value in update.metrics.values()), update.metrics
    json.dumps(update.metrics, allow_nan=False)


def test_train_parser_progress_stays_monotonic_when_the_config_overrides_iterations():
    # The platform asked for 1000 fine iterations; the mmcv config made it 10000 (utils/params_utils.py:1–7).
    parser = TrainParser(coarse_iterations=7999, iterations=1000)
    progress = [
        update.progress for _, update in run_parser(parser, fixture_lines("gaussiantalker_train_oom.txt"))
    ]
    progress = [value for value in progress if value is not None]
    assert progress == sorted(progress)


# --- the demo engine -----------------------------------------------------------------------------------


def run_demo(tmp_path: Path, *args: str) -> tuple[int, bytes, Path]:
    model_path = tmp_path / "out" / "demo"
    completed = subprocess.run(
        [sys.executable, "-u", str(DEMO_TRAIN), "-s", str(tmp_path / "data" / "demo"), "-m", str(model_path)]
        + list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # merged, as the runner reads it
        timeout=60,
        check=False,
    )
    return completed.returncode, completed.stdout, model_path


def test_demo_engine_console_drives_the_parser_to_success(tmp_path):
    returncode, output, _ = run_demo(
        tmp_path, "--iterations", "40", "--coarse_iterations", "20", "--seconds", "0.2"
    )
    assert returncode == 0, output.decode(errors="replace")
    parser = TrainParser(coarse_iterations=20, iterations=40)
    updates = run_parser(parser, console_lines(output, chunk=13))
    progress = [update.progress for _, update in updates if update.progress is not None]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    stages = [update.stage for _, update in updates if update.stage]
    assert stages.index("coarse") < stages.index("fine") < stages.index("complete")
    metrics = {}
    for _, update in updates:
        metrics.update(update.metrics)
    assert {"loss", "psnr"} <= set(metrics)
    assert 0 < metrics["loss"] < 1
    assert parser.outcome(returncode) is None


def test_demo_engine_console_follows_the_spec_format(tmp_path):
    returncode, output, model_path = run_demo(
        tmp_path, "--iterations", "40", "--coarse_iterations", "20", "--seconds", "0.1"
    )
    assert returncode == 0
    lines = [line for line in console_lines(output) if line]
    assert lines[0] == f"Optimizing {model_path}"  # printed before safe_state: no timestamp
    for line in lines[1:]:
        if line.startswith("Training progress"):
            assert parse_bar(line) is not None, line
        else:
            assert strip_timestamp(line) != line, f"no safe_state timestamp: {line!r}"
    assert "Training complete." in [strip_timestamp(line) for line in lines]
    assert b"\rTraining progress" in output  # redrawn in place, as tqdm does


def test_demo_engine_writes_the_gaussiantalker_folder_layout(tmp_path):
    returncode, output, model_path = run_demo(
        tmp_path, "--iterations", "40", "--coarse_iterations", "20", "--seconds", "0.1", "--save_every", "10"
    )
    assert returncode == 0, output.decode(errors="replace")
    assert (model_path / "cfg_args").read_text().startswith("Namespace(")
    saved = sorted(path.name for path in (model_path / "point_cloud").iterdir())
    assert saved == sorted(
        [f"coarse_iteration_{n}" for n in (1, 10, 20)] + [f"iteration_{n}" for n in (1, 10, 20, 30, 40)]
    )
    expected_files = {"point_cloud.ply", "deformation.pth", "deformation_table.pth", "deformation_accum.pth"}
    if shutil.which("ffmpeg"):
        expected_files.add("0.png")
    for folder in (model_path / "point_cloud").iterdir():
        assert {path.name for path in folder.iterdir()} == expected_files, folder
        assert (folder / "point_cloud.ply").read_text().startswith("ply\n")
    # The final model is point_cloud/iteration_<iterations>/, as render.py expects.
    assert (model_path / "point_cloud" / "iteration_40" / "point_cloud.ply").is_file()
    # console.log is a byte-exact copy of what was printed.
    assert (model_path / "console.log").read_bytes() == output


def test_demo_engine_fail_at_exits_nonzero_and_the_parser_reports_failure(tmp_path):
    returncode, output, _ = run_demo(
        tmp_path, "--iterations", "40", "--coarse_iterations", "20", "--seconds", "0", "--fail_at", "30"
    )
    assert returncode == 1
    parser = TrainParser(coarse_iterations=20, iterations=40)
    updates = run_parser(parser, console_lines(output))
    assert max(update.progress for _, update in updates if update.progress is not None) < 1.0
    assert b"Training complete." not in output
    assert parser.outcome(returncode) is not None


def test_demo_engine_equal_stage_totals_still_show_the_fine_stage(tmp_path):
    returncode, output, _ = run_demo(
        tmp_path, "--iterations", "10", "--coarse_iterations", "10", "--seconds", "0", "--save_every", "5"
    )
    assert returncode == 0
    parser = TrainParser(coarse_iterations=10, iterations=10)
    updates = run_parser(parser, console_lines(output))
    assert "fine" in [update.stage for _, update in updates]
    saved = [update.event["checkpoint"] for _, update in updates if update.event]
    assert saved == [
        {"stage": "coarse", "iteration": 1},
        {"stage": "coarse", "iteration": 5},
        {"stage": "coarse", "iteration": 10},
        {"stage": "fine", "iteration": 1},
        {"stage": "fine", "iteration": 5},
        {"stage": "fine", "iteration": 10},
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"save_every": 5},
        {"stamp_lines": True},
    ],
    ids=["defaults", "save_every", "stamp_lines"],
)
def test_demo_command_built_by_the_platform_runs_to_success(make_node, alice, extra):
    node = make_node()
    params = {"seconds": 0.0, "iterations": 20, "coarse_iterations": 10, "save_every": 500, **extra}
    job = Job.objects.create(
        owner=alice, kind=demo_kind.DEMO_TRAIN, params=params, node=node, gpu=node.gpus.get()
    )
    plan = kind_spec(job.kind).plan(job)
    Path(plan.invocation.cwd).mkdir(parents=True)
    completed = subprocess.run(
        plan.invocation.argv,
        cwd=plan.invocation.cwd,
        env={**os.environ, **plan.invocation.env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout.decode(errors="replace")[-2000:]
    run_parser(plan.parser, console_lines(completed.stdout))
    assert plan.parser.outcome(completed.returncode) is None
    assert Path(plan.outputs["model_path"], "point_cloud", "iteration_20", "point_cloud.ply").is_file()
