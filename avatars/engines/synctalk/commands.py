"""SyncTalk's command lines (ZiqiaoPeng/SyncTalk @ d2427a3), built from validated inputs.

Pure functions returning argv lists run in the repository root (``/SyncTalk`` in its image); the checks
they share are in ``avatars/engines/shell.py``. Every flag names the upstream line it mirrors.
"""

from __future__ import annotations

from ..shell import PYTHON, join, positive, validate_name, validate_path
from ..shell import task as check_task

TASKS = range(1, 11)  # data_utils/process.py:447–484, tasks 1 to 10
ASR = ("ave", "deepspeech", "hubert")  # data_utils/process.py:422, main.py:110
# The README's recipe (README.md:161–162, scripts/train_may.sh): the head for 60000 iterations, then the
# lips fine-tuned in the same workspace up to 100000. --iters is cumulative (main.py:247 makes it a
# number of epochs, and a resumed run continues from its epoch), so stage 2 must ask for more.
HEAD_ITERS = 60000
LIPS_ITERS = 100000
PATCH_SIZE = 64  # README.md:162; main.py:136 needs num_rays divisible by its square


def preprocess(*, name: str, task: int = -1, asr: str = "ave", data_root: str = "data") -> list[str]:
    """``process.py data/<ID>/<ID>.mp4 --asr ave --task N`` (data_utils/process.py:420–422), run from the
    SyncTalk root."""
    validate_name(name, "avatar name")
    validate_path(data_root, "data folder")
    _asr(asr)
    check_task(task, TASKS, "SyncTalk")
    return [
        *PYTHON,
        "data_utils/process.py",
        join(data_root, name, f"{name}.mp4"),
        "--asr",
        asr,
        "--task",
        str(task),
    ]


def recipe(iterations: int | None) -> dict[str, int]:
    """The two stages of a SyncTalk training for a total of ``iterations`` (None: README's 100000): the
    head up to 60% of it (README's 60000 of 100000), then the lips up to all of it."""
    lips = LIPS_ITERS if iterations is None else positive(iterations, "The number of iterations")
    head = lips * HEAD_ITERS // LIPS_ITERS
    if head < 1:
        raise ValueError(
            f"SyncTalk needs at least 2 iterations: its head stage runs 60% of them, not {lips}."
        )
    return {"head_iters": head, "lips_iters": lips}


def train(
    *,
    name: str,
    workspace: str,
    iters: int = HEAD_ITERS,
    finetune_lips: bool = False,
    asr_model: str = "ave",
    data_root: str = "data",
    model_root: str = "model",
) -> list[str]:
    """``main.py data/<ID> --workspace model/<ws> -O --iters N --asr_model ave`` (README.md:161); stage 2
    adds ``--finetune_lips --patch_size 64`` (README.md:162, main.py:70 and :73) and resumes the same
    workspace (``--ckpt latest``, main.py:30). ``--iters`` is cumulative: stage 2 must ask for more than
    stage 1 did, or it only evaluates and tests. No ``--portrait`` here: main.py uses it only to blend test
    and evaluation frames (nerf_triplane/utils.py:929, :1076), and the README trains without it."""
    positive(iters, "--iters")
    argv = [*_main(name, workspace, data_root, model_root), "-O", "--iters", str(iters)]  # main.py:19, :27
    if finetune_lips:
        argv += ["--finetune_lips", "--patch_size", str(PATCH_SIZE)]
    return [*argv, "--asr_model", _asr(asr_model)]


def test(
    *,
    name: str,
    workspace: str,
    portrait: bool = False,
    ckpt: str | None = None,
    asr_model: str = "ave",
    data_root: str = "data",
    model_root: str = "model",
) -> list[str]:
    """``main.py data/<ID> --workspace model/<ws> -O --test --asr_model ave [--portrait]`` (README.md:123,
    :125; main.py:20 ``--test``): the val split rendered and scored (PSNR, LPIPS, LMD). ``--portrait``
    (main.py:91) pastes the face back into the original frames (nerf_triplane/utils.py:1076): the README's
    headline figures are with it (README.md:134: PSNR 37.644, against 32.201 without). It breaks a torso
    model (README.md:194), which the platform does not train. ``ckpt``: a checkpoint file to load
    (main.py:30; a path is loaded at nerf_triplane/utils.py:745–748); None loads the workspace's latest."""
    argv = [*_main(name, workspace, data_root, model_root), "-O", "--test", "--asr_model", _asr(asr_model)]
    if portrait:
        argv.append("--portrait")
    if ckpt is not None:
        argv += ["--ckpt", validate_path(ckpt, "checkpoint file")]
    return argv


def custom_audio(
    *,
    name: str,
    workspace: str,
    wav: str,
    portrait: bool = False,
    data_root: str = "data",
    model_root: str = "model",
) -> list[str]:
    """Drive a trained model with a WAV (README.md:140): ``--test --test_train --aud x.wav`` (main.py:21,
    :89) with AVE features computed on the fly; the video with sound is
    ``<ws>/results/ngp_ep<EEEE>_audio.mp4`` (nerf_triplane/utils.py:1101). ``--portrait`` as in
    :func:`test`."""
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


def workspace_path(workspace: str, model_root: str = "model") -> str:
    """The ``--workspace`` path (main.py:23) for a workspace name."""
    validate_path(model_root, "model folder")
    return join(model_root, validate_name(workspace, "workspace name"))


def _main(name: str, workspace: str, data_root: str, model_root: str) -> list[str]:
    validate_name(name, "avatar name")
    validate_path(data_root, "data folder")
    return [
        *PYTHON,
        "main.py",
        join(data_root, name),
        "--workspace",
        workspace_path(workspace, model_root),
    ]


def _asr(asr: str) -> str:
    if asr not in ASR:
        raise ValueError(f"SyncTalk's audio encoder is one of {ASR}, not {asr!r}.")
    return asr
