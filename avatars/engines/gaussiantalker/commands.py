"""GaussianTalker's command lines (KU-CVLAB/GaussianTalker @ 8ec613b), built from validated inputs.

Pure functions returning argv lists run in the repository root (``/GaussianTalker`` in its image); the
checks they share are in ``avatars/engines/shell.py``. Every flag names the upstream line it mirrors.
"""

from __future__ import annotations

import re

from ..shell import PYTHON, join, positive, run_name, validate_name, validate_path
from ..shell import task as check_task

CONFIG = "arguments/64_dim_1_transformer.py"  # README.md:122, the config every README command passes
PORT = 6009  # train.py:381, the viewer socket's default port
# What the shipped configs set (arguments/64_dim_1_transformer.py:32 and :34); train.py takes both from
# --configs, never from its CLI.
ITERATIONS = 10000
COARSE_ITERATIONS = 7999
# train.py:214: "if iteration % 500 == 0 or iteration == 1" — the only saves (point_cloud/iteration_N).
SAVE_EVERY = 500
TASKS = range(1, 10)  # data_utils/process.py:402–434, tasks 1 to 9


def preprocess(*, data_root: str, name: str, task: int = -1) -> list[str]:
    """``process.py <data_root>/<name>/<name>.mp4 --task N --asr deepspeech`` (data_utils/process.py:381–383).
    ``--asr wav2vec`` calls a script GaussianTalker does not ship (process.py:47), so DeepSpeech is fixed.
    Outputs land next to the video."""
    validate_path(data_root, "data folder")
    validate_name(name, "avatar name")
    video = join(data_root, name, f"{name}.mp4")
    check_task(task, TASKS, "GaussianTalker")
    return [*PYTHON, "data_utils/process.py", video, "--task", str(task), "--asr", "deepspeech"]


def audio_features(*, wav: str, output: str | None = None) -> list[str]:
    """DeepSpeech features for a custom audio: ``x.wav`` → ``x.npy`` ``[T,16,29]``, one row per frame
    (data_utils/deepspeech_features/extract_ds_features.py:25 ``--input``, :30 ``--output``). The WAV must
    be mono 16 kHz 16-bit PCM (others break or give near-silent features: deepspeech_features.py:144)."""
    validate_path(wav, "audio file")
    if not wav.endswith(".wav"):
        raise ValueError(f"The DeepSpeech extractor reads .wav files, not {wav!r}.")
    output = output if output is not None else wav[: -len(".wav")] + ".npy"
    validate_path(output, "features file")
    return [
        *PYTHON,
        "data_utils/deepspeech_features/extract_ds_features.py",
        "--input",
        wav,
        "--output",
        output,
    ]


def model_path(output_root: str, name: str, run: int | None = None) -> str:
    """``--model_path``: ``<output_root>/<name>/run-<run>`` for a training run, ``<output_root>/<name>`` for
    a model trained before runs had folders of their own. Upstream never empties it (train.py:297,
    ``os.makedirs(exist_ok=True)``), so each run needs its own, or a shorter retraining leaves the
    previous run's later ``point_cloud/iteration_N`` beside its own."""
    validate_path(output_root, "output folder")
    validate_name(name, "avatar name")
    return join(output_root, name) if run is None else join(output_root, name, run_name(run))


def train(
    *,
    data_root: str,
    output_root: str,
    name: str,
    run: int | None = None,
    config: str = CONFIG,
    port: int = PORT,
) -> list[str]:
    """``train.py -s <data_root>/<name> --model_path <model> --configs <cfg> --port <port>`` (README.md:122;
    train.py:381 ``--port``).

    No ``--iterations``: the mmcv config overrides it (utils/params_utils.py:1–7). For another count, write a
    config with :func:`derived_config_text` and pass its path as ``config``. Each parallel job needs its
    own ``port`` (the viewer socket, gaussian_renderer/network_gui.py:30)."""
    validate_path(data_root, "data folder")
    validate_path(config, "config file")
    positive(port, "The viewer port", 1024)
    if port > 65535:
        raise ValueError(f"The viewer port must be at most 65535, not {port}.")
    return [
        *PYTHON, "train.py",
        "-s", join(data_root, name),
        "--model_path", model_path(output_root, name, run),
        "--configs", config,
        "--port", str(port),
    ]  # fmt: skip


def recipe(iterations: int | None) -> dict[str, int]:
    """The two stages train.py runs (train.py:276–284: coarse, then fine) for a fine stage of
    ``iterations`` (None: the shipped config's 10000), or ValueError saying what to choose.

    - train.py:214 saves only at iteration 1 and every 500: a count that is not a multiple of 500 loses
      its tail (the last save is the last multiple), so it is refused rather than silently cut.
    - the coarse stage runs ``coarse_iterations`` (7999) whatever the fine count, but steps its optimizer
      only while ``iteration < opt.iterations`` (train.py:252): below 8000 it would idle to 7999. So a
      shorter fine stage gets a coarse stage scaled like the shipped config's (7999 of 10000)."""
    if iterations is None:
        return {"coarse_iterations": COARSE_ITERATIONS, "iterations": ITERATIONS}
    positive(iterations, "The number of iterations")
    if iterations % SAVE_EVERY:
        lower = iterations // SAVE_EVERY * SAVE_EVERY
        higher = lower + SAVE_EVERY
        keeps = f"its last save would be iteration {lower}" if lower else "it would save only iteration 1"
        choose = f"{lower} or {higher}" if lower else str(higher)
        raise ValueError(
            f"GaussianTalker saves its model only at iteration 1 and every {SAVE_EVERY} (train.py:214): "
            f"with {iterations} iterations {keeps} and the rest would be lost. Choose a multiple of "
            f"{SAVE_EVERY}, such as {choose}."
        )
    coarse = min(COARSE_ITERATIONS, iterations * COARSE_ITERATIONS // ITERATIONS)
    return {"coarse_iterations": coarse, "iterations": iterations}


ITERATIONS_LINE = re.compile(
    r"^(?P<indent>[ \t]*)iterations(?P<eq>\s*=\s*)(?P<value>\d+)(?P<rest>\s*,?.*)$", re.M
)
COARSE_ITERATIONS_LINE = re.compile(
    r"^(?P<indent>[ \t]*)coarse_iterations(?P<eq>\s*=\s*)(?P<value>\d+)(?P<rest>\s*,?.*)$", re.M
)


def derived_config_text(base_config_text: str, iterations: int, coarse_iterations: int | None = None) -> str:
    """A copy of an mmcv config (``arguments/64_dim_*.py``) with ``iterations = N`` (the fine stage,
    arguments/64_dim_1_transformer.py:32) changed, and ``coarse_iterations`` (:34) too if given: train.py
    takes these from ``--configs``, not from its CLI (utils/params_utils.py:1–7).

    Fails if the config does not set the value exactly once, rather than train for the wrong length."""
    positive(iterations, "iterations")
    text = _replace_once(ITERATIONS_LINE, base_config_text, iterations, "iterations")
    if coarse_iterations is not None:
        positive(coarse_iterations, "coarse_iterations")
        text = _replace_once(COARSE_ITERATIONS_LINE, text, coarse_iterations, "coarse_iterations")
    return text


def _replace_once(pattern: re.Pattern[str], text: str, value: int, key: str) -> str:
    found = pattern.findall(text)
    if len(found) != 1:
        how = "does not set" if not found else f"sets {len(found)} times"
        raise ValueError(
            f"The config {how} '{key} = <number>' on a line of its own (in OptimizationParams), so the "
            f"{key} cannot be changed safely. Use a GaussianTalker config like {CONFIG}."
        )
    return pattern.sub(lambda match: f"{match['indent']}{key}{match['eq']}{value}{match['rest']}", text)


def render(
    *,
    data_root: str,
    output_root: str,
    name: str,
    custom_aud: str,
    custom_wav: str,
    iteration: int,
    run: int | None = None,
    batch: int = 128,
    config: str = CONFIG,
) -> list[str]:
    """Render custom audio (README.md:139): ``render.py … --iteration N --batch B --custom_aud x.npy
    --custom_wav x.wav --skip_train --skip_test``. ``custom_aud``/``custom_wav`` are joined to the dataset
    folder by render.py (render.py:169): pass names inside it, or absolute paths. The video:
    parsers.render_output_path(…, "custom", …)."""
    argv = _render(data_root, output_root, name, run, config, iteration, batch)
    validate_path(custom_aud, "audio features")
    validate_path(custom_wav, "audio file")
    return [*argv, "--custom_aud", custom_aud, "--custom_wav", custom_wav, "--skip_train", "--skip_test"]


def validation_render(
    *,
    data_root: str,
    output_root: str,
    name: str,
    iteration: int,
    run: int | None = None,
    batch: int = 128,
    config: str = CONFIG,
) -> list[str]:
    """Render the held-out val split (the ``test`` set, render.py:178) with its own audio and a
    ground-truth video to compare with: ``--skip_train`` only (render.py:215)."""
    return [*_render(data_root, output_root, name, run, config, iteration, batch), "--skip_train"]


def _render(
    data_root: str, output_root: str, name: str, run: int | None, config: str, iteration: int, batch: int
) -> list[str]:
    validate_path(data_root, "data folder")
    validate_path(config, "config file")
    if iteration == -1:
        # render.py:214 defaults to -1, which Scene resolves with searchForMaxIteration
        # (utils/system_utils.py:26–28): it also reads coarse_iteration_N folders, so a fine stage shorter
        # than the coarse one loads a number whose fine folder does not exist.
        raise ValueError(
            "--iteration -1 lets render.py pick the highest number in point_cloud/, coarse stage included: "
            "pass the fine-stage iteration to render."
        )
    positive(iteration, "--iteration")
    positive(batch, "--batch")
    return [
        *PYTHON, "render.py",
        "-s", join(data_root, name),
        "--model_path", model_path(output_root, name, run),
        "--configs", config,
        "--iteration", str(iteration),  # render.py:214
        "--batch", str(batch),  # render.py:220, required
    ]  # fmt: skip
