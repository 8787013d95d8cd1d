"""Engine command lines built from validated parts: the checks every engine's ``commands.py`` shares.

Each builder returns an argv list to run in the engine's repository root on the node; the job kinds wrap
it for the node's runtime (gpu_nodes/runtime.py ``wrap``).

Unbuffered output: every command starts ``python -u``, **and** the job passes the engine's ``env()``
(``PYTHONUNBUFFERED=1``) to ``wrap(env=...)``. Both are needed. ``-u`` covers the engine's own process
wherever it runs; but the runner sets ``PYTHONUNBUFFERED=1`` only on the process it starts, which for a
Docker node is the ``docker`` client: the variable does not reach the container unless it goes through
``wrap(env=...)`` (``-e``). And ``process.py`` starts most of its steps as ``python …`` children through
``os.system`` (GaussianTalker data_utils/process.py:24, SyncTalk data_utils/process.py:18), which never
see ``-u`` but do inherit the environment; without the variable their output would arrive in 4 KiB lumps.

Names: avatar, run and workspace names end up in paths and, inside the engines, in ``os.system`` shell
strings (unquoted), so they must match ``^[a-z0-9][a-z0-9-]{0,62}$``; paths the platform chooses must be
plain (letters, digits, ``_ . / -``, no ``..``). Anything else raises ValueError.
"""

from __future__ import annotations

import re
import shlex

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # used with fullmatch: "$" would let a final "\n" through
# No blanks, quotes or shell syntax (process.py and render.py paste paths into os.system strings); no
# leading "-" (it would read as an option).
SAFE_PATH = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]*")

PYTHON = ("python", "-u")


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


def join(root: str, *names: str) -> str:
    return "/".join([root.rstrip("/"), *names])


def positive(value: int, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be a whole number of at least {minimum}, not {value!r}.")
    return value


def task(value: int, tasks: range, engine: str) -> int:
    """A ``process.py --task`` number of ``engine``: one of ``tasks``, or -1 for all."""
    if isinstance(value, bool) or not isinstance(value, int) or (value != -1 and value not in tasks):
        raise ValueError(
            f"{engine}'s process.py has tasks {tasks.start} to {tasks.stop - 1}, or -1 for all; "
            f"not {value!r}."
        )
    return value


def run_name(run: int) -> str:
    """The folder of one training run inside an avatar's model folder: ``run-<train job id>``."""
    return validate_name(f"run-{positive(run, 'A run id')}", "run folder")


def shell_and(*commands: list[str]) -> list[str]:
    """Several commands, each quoted part by part, run one after the other while they succeed."""
    return ["sh", "-c", " && ".join(shlex.join(command) for command in commands)]
