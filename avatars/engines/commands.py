"""The engines' command lines, built from validated inputs (shared/spec/engines.md §1.3–§1.6, §2.2–§2.5).

Pure functions: each returns an argv list to run in the engine's repository root (GaussianTalker or SyncTalk)
on the node; jobs/kinds.py wraps it for the node's runtime (gpu_nodes/runtime.py ``wrap``).

Unbuffered output: every command starts ``python -u``, **and** the job should pass :func:`engine_env` to
``wrap(env=...)``. Both are needed. ``-u`` covers the engine's own process wherever it runs; but the runner
sets ``PYTHONUNBUFFERED=1`` only on the process it starts, which for a Docker node is the ``docker`` client:
the variable does not reach the container unless it goes through ``wrap(env=...)`` (``-e``). And
``process.py`` starts most of its steps as ``python …`` children through ``os.system``, which never see
``-u`` but do inherit the environment; without the variable their output would arrive in 4 KiB lumps.

Names: avatar and workspace names end up in paths and, inside the engines, in ``os.system`` shell strings
(unquoted), so they must match ``^[a-z0-9][a-z0-9-]{0,62}$``; paths the platform chooses must be plain
(letters, digits, ``_ . / -``, no ``..``). Anything else raises ValueError.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # used with fullmatch: "$" would let a final "\n" through
# No blanks, quotes or shell syntax (process.py and render.py paste paths into os.system strings); no
# leading "-" (it would read as an option).
SAFE_PATH = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]*")

PYTHON = ("python", "-u")

GAUSSIANTALKER_CONFIG = "arguments/64_dim_1_transformer.py"
GAUSSIANTALKER_PORT = 6009
GAUSSIANTALKER_ITERATION = (
    10000  # the fine stage's last save with the shipped configs: point_cloud/iteration_10000
)
GAUSSIANTALKER_TASKS = range(1, 10)
SYNCTALK_TASKS = range(1, 11)
SYNCTALK_ASR = ("ave", "deepspeech", "hubert")
SYNCTALK_HEAD_ITERS = 60000  # stage 1 (README)
SYNCTALK_LIPS_ITERS = 100000  # stage 2, --finetune_lips: --iters is cumulative, so it must exceed stage 1's
SYNCTALK_PATCH_SIZE = 64


def validate_name(value: str, what: str = "name") -> str:
    """``value`` if it is a safe avatar/workspace name, else ValueError saying what is allowed."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(
            f"The {what} {value!r} is not allowed: use 1 to 63 lowercase letters, digits and '-', starting "
            "with a letter or digit."
        )
    return value


def validate_path(value: str, what: str = "path") -> str:
    """``value`` if it is a plain path (see the module docstring), else ValueError."""
    if not isinstance(value, str) or not SAFE_PATH.fullmatch(value) or ".." in value.split("/"):
        raise ValueError(
            f"The {what} {value!r} is not allowed: the engines paste paths into shell commands, so use only "
            "letters, digits, '_', '.', '/' and '-' (not first), and no '..'."
        )
    return value


def _join(root: str, *names: str) -> str:
    return "/".join([root.rstrip("/"), *names])


def _positive(value: int, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be a whole number of at least {minimum}, not {value!r}.")
    return value


def _task(task: int, tasks: range, engine: str) -> int:
    if isinstance(task, bool) or not isinstance(task, int) or (task != -1 and task not in tasks):
        raise ValueError(
            f"{engine}'s process.py has tasks {tasks.start} to {tasks.stop - 1}, or -1 for all; not {task!r}."
        )
    return task


def engine_env(engine: str) -> dict[str, str]:
    """Environment for an engine run, to pass to ``wrap(env=...)`` (see the module docstring).

    SyncTalk logs through ``rich``, which wraps lines at the console width (80 without a terminal) and would
    split long lines (paths) in two; ``COLUMNS`` widens it (rich reads it; UNVERIFIED for SyncTalk's pin)."""
    if engine not in ("gaussiantalker", "synctalk"):
        raise ValueError(f"Unknown engine {engine!r}.")
    env = {"PYTHONUNBUFFERED": "1"}
    if engine == "synctalk":
        env["COLUMNS"] = "1000"
    return env


# --- GaussianTalker ----------------------------------------------------------------------------------------


def gaussiantalker_preprocess(*, data_root: str, name: str, task: int = -1) -> list[str]:
    """``process.py <data_root>/<name>/<name>.mp4 --task N --asr deepspeech`` (§1.3). ``--asr wav2vec`` calls
    a script GaussianTalker does not ship, so DeepSpeech is fixed. Outputs land next to the video."""
    validate_path(data_root, "data folder")
    validate_name(name, "avatar name")
    video = _join(data_root, name, f"{name}.mp4")
    _task(task, GAUSSIANTALKER_TASKS, "GaussianTalker")
    return [*PYTHON, "data_utils/process.py", video, "--task", str(task), "--asr", "deepspeech"]


def gaussiantalker_audio_features(*, wav: str, output: str | None = None) -> list[str]:
    """DeepSpeech features for a custom audio (§1.4): ``x.wav`` → ``x.npy`` ``[T,16,29]``, one row per frame.
    The WAV must be mono 16 kHz 16-bit PCM (others break or give near-silent features)."""
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


def gaussiantalker_train(
    *,
    data_root: str,
    output_root: str,
    name: str,
    config: str = GAUSSIANTALKER_CONFIG,
    port: int = GAUSSIANTALKER_PORT,
) -> list[str]:
    """``train.py -s <data_root>/<name> --model_path <output_root>/<name> --configs <cfg> --port <port>``
    (§1.5).

    No ``--iterations``: the mmcv config overrides it. For another count, write a config with
    :func:`derived_config_text` and pass its path as ``config``. Each parallel job needs its own ``port``
    (the viewer socket)."""
    validate_path(data_root, "data folder")
    validate_path(output_root, "output folder")
    validate_name(name, "avatar name")
    validate_path(config, "config file")
    _positive(port, "The viewer port", 1024)
    if port > 65535:
        raise ValueError(f"The viewer port must be at most 65535, not {port}.")
    return [
        *PYTHON, "train.py",
        "-s", _join(data_root, name),
        "--model_path", _join(output_root, name),
        "--configs", config,
        "--port", str(port),
    ]  # fmt: skip


ITERATIONS_LINE = re.compile(
    r"^(?P<indent>[ \t]*)iterations(?P<eq>\s*=\s*)(?P<value>\d+)(?P<rest>\s*,?.*)$", re.M
)
COARSE_ITERATIONS_LINE = re.compile(
    r"^(?P<indent>[ \t]*)coarse_iterations(?P<eq>\s*=\s*)(?P<value>\d+)(?P<rest>\s*,?.*)$", re.M
)


def derived_config_text(base_config_text: str, iterations: int, coarse_iterations: int | None = None) -> str:
    """A copy of an mmcv config (``arguments/64_dim_*.py``) with ``iterations = N`` (the fine stage) changed,
    and ``coarse_iterations`` too if given: train.py takes these from ``--configs``, not from its CLI (§1.5).

    Fails if the config does not set the value exactly once, rather than train for the wrong length."""
    _positive(iterations, "iterations")
    text = _replace_once(ITERATIONS_LINE, base_config_text, iterations, "iterations")
    if coarse_iterations is not None:
        _positive(coarse_iterations, "coarse_iterations")
        text = _replace_once(COARSE_ITERATIONS_LINE, text, coarse_iterations, "coarse_iterations")
    return text


def _replace_once(pattern: re.Pattern[str], text: str, value: int, key: str) -> str:
    found = pattern.findall(text)
    if len(found) != 1:
        how = "does not set" if not found else f"sets {len(found)} times"
        raise ValueError(
            f"The config {how} '{key} = <number>' on a line of its own (in OptimizationParams), so the "
            f"{key} cannot be changed safely. Use a GaussianTalker config like {GAUSSIANTALKER_CONFIG}."
        )
    return pattern.sub(lambda match: f"{match['indent']}{key}{match['eq']}{value}{match['rest']}", text)


def gaussiantalker_render(
    *,
    data_root: str,
    output_root: str,
    name: str,
    custom_aud: str,
    custom_wav: str,
    iteration: int = GAUSSIANTALKER_ITERATION,
    batch: int = 128,
    config: str = GAUSSIANTALKER_CONFIG,
) -> list[str]:
    """Render custom audio (§1.6): ``render.py … --iteration N --batch B --custom_aud x.npy --custom_wav x.wav
    --skip_train --skip_test``. ``custom_aud``/``custom_wav`` are joined to the dataset folder by render.py:
    pass names inside it, or absolute paths. The video: gaussiantalker.render_output_path(…, "custom", …)."""
    argv = _render(data_root, output_root, name, config, iteration, batch)
    validate_path(custom_aud, "audio features")
    validate_path(custom_wav, "audio file")
    return [*argv, "--custom_aud", custom_aud, "--custom_wav", custom_wav, "--skip_train", "--skip_test"]


def gaussiantalker_validation_render(
    *,
    data_root: str,
    output_root: str,
    name: str,
    iteration: int = GAUSSIANTALKER_ITERATION,
    batch: int = 128,
    config: str = GAUSSIANTALKER_CONFIG,
) -> list[str]:
    """Render the held-out val split (``test`` set) with its own audio and a ground-truth video to compare
    with (§1.7): ``--skip_train`` only."""
    return [*_render(data_root, output_root, name, config, iteration, batch), "--skip_train"]


def _render(
    data_root: str, output_root: str, name: str, config: str, iteration: int, batch: int
) -> list[str]:
    validate_path(data_root, "data folder")
    validate_path(output_root, "output folder")
    validate_name(name, "avatar name")
    validate_path(config, "config file")
    _positive(iteration, "--iteration", -1)
    if iteration == 0:
        raise ValueError("--iteration is -1 (the latest saved) or a saved iteration, not 0.")
    _positive(batch, "--batch")
    return [
        *PYTHON, "render.py",
        "-s", _join(data_root, name),
        "--model_path", _join(output_root, name),
        "--configs", config,
        "--iteration", str(iteration),
        "--batch", str(batch),
    ]  # fmt: skip


# --- SyncTalk ---------------------------------------------------------------------------------------------


def synctalk_preprocess(*, name: str, task: int = -1, asr: str = "ave", data_root: str = "data") -> list[str]:
    """``process.py data/<ID>/<ID>.mp4 --asr ave --task N`` (§2.2), run from the SyncTalk root."""
    validate_name(name, "avatar name")
    validate_path(data_root, "data folder")
    _asr(asr)
    _task(task, SYNCTALK_TASKS, "SyncTalk")
    return [
        *PYTHON,
        "data_utils/process.py",
        _join(data_root, name, f"{name}.mp4"),
        "--asr",
        asr,
        "--task",
        str(task),
    ]


def synctalk_train(
    *,
    name: str,
    workspace: str,
    iters: int = SYNCTALK_HEAD_ITERS,
    finetune_lips: bool = False,
    asr_model: str = "ave",
    data_root: str = "data",
    model_root: str = "model",
) -> list[str]:
    """``main.py data/<ID> --workspace model/<ws> -O --iters N --asr_model ave`` (§2.4); stage 2 adds
    ``--finetune_lips --patch_size 64`` and resumes the same workspace. ``--iters`` is cumulative: stage 2
    must ask for more than stage 1 did (README: 60000, then 100000), or it only evaluates and tests."""
    _positive(iters, "--iters")
    argv = [*_main(name, workspace, data_root, model_root), "-O", "--iters", str(iters)]
    if finetune_lips:
        argv += ["--finetune_lips", "--patch_size", str(SYNCTALK_PATCH_SIZE)]
    return [*argv, "--asr_model", _asr(asr_model)]


def synctalk_test(
    *,
    name: str,
    workspace: str,
    portrait: bool = False,
    asr_model: str = "ave",
    data_root: str = "data",
    model_root: str = "model",
) -> list[str]:
    """``main.py data/<ID> --workspace model/<ws> -O --test --asr_model ave [--portrait]`` (§2.5): the val
    split rendered and scored (PSNR, LPIPS, LMD). ``--portrait`` pastes the face back into the frames."""
    argv = [*_main(name, workspace, data_root, model_root), "-O", "--test", "--asr_model", _asr(asr_model)]
    return [*argv, "--portrait"] if portrait else argv


def synctalk_custom_audio(
    *,
    name: str,
    workspace: str,
    wav: str,
    portrait: bool = False,
    data_root: str = "data",
    model_root: str = "model",
) -> list[str]:
    """Drive a trained model with a WAV (§2.3, §2.5): ``--test --test_train --aud x.wav`` with AVE features
    computed on the fly; the video with sound is ``<ws>/results/ngp_ep<EEEE>_audio.mp4``."""
    validate_path(wav, "audio file")
    if not wav.endswith(".wav"):
        raise ValueError(f"With --asr_model ave, --aud takes a .wav file, not {wav!r}.")
    argv = [
        *_main(name, workspace, data_root, model_root),
        "-O",
        "--test",
        "--test_train",
        "--asr_model",
        "ave",
    ]
    if portrait:
        argv.append("--portrait")
    return [*argv, "--aud", wav]


def synctalk_workspace(workspace: str, model_root: str = "model") -> str:
    """The ``--workspace`` path for a workspace name."""
    validate_path(model_root, "model folder")
    return _join(model_root, validate_name(workspace, "workspace name"))


def _main(name: str, workspace: str, data_root: str, model_root: str) -> list[str]:
    validate_name(name, "avatar name")
    validate_path(data_root, "data folder")
    return [
        *PYTHON,
        "main.py",
        _join(data_root, name),
        "--workspace",
        synctalk_workspace(workspace, model_root),
    ]


def _asr(asr: str) -> str:
    if asr not in SYNCTALK_ASR:
        raise ValueError(f"SyncTalk's audio encoder is one of {SYNCTALK_ASR}, not {asr!r}.")
    return asr
