"""How the platform reaches a node: run commands there, stream their output, stop them, move files.

``NodeConnection`` is the interface every node kind implements; ``LocalConnection`` runs on this machine.
Each job's process starts in its own session (so its pid is also its process-group id) with the
environment marker ``TALKFORGE_JOB=<marker>``; stopping a job kills that whole group, and only after
checking the marker, so a recycled pid can never take an unrelated process down with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .models import Node

MARKER_VARIABLE = "TALKFORGE_JOB"

logger = logging.getLogger(__name__)


class NodeError(Exception):
    """The node could not do what was asked; the message says what and what to do about it."""


class CommandNotFound(NodeError):
    pass


class ConnectionLost(NodeError):
    """The connection to the node broke; what runs there may still be running."""


class Unreachable(NodeError):
    """The node could not be reached at all (refused, timed out, no route): nothing ran there."""


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


class RunningProcess(ABC):
    """A process started on a node, its stdout and stderr merged into one byte stream."""

    pid: int

    @abstractmethod
    def read(self, timeout: float) -> bytes | None:
        """Up to 64 KiB of output; ``b""`` at end of stream; None if nothing came within ``timeout``."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""


class NodeConnection(ABC):
    """What the runner needs from a node, whatever its kind."""

    @abstractmethod
    def start(
        self, argv: Sequence[str], *, marker: str, cwd: str | None = None, env: dict[str, str] | None = None
    ) -> RunningProcess:
        """Start ``argv`` in a session of its own, in ``cwd`` (created if missing)."""

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> CommandResult: ...

    @abstractmethod
    def kill_tree(self, pid: int, *, marker: str, grace: float) -> bool:
        """Stop every process of the job's group (SIGTERM, then SIGKILL after ``grace``).

        Returns True if anything of the job was still running."""

    def stop(self, pid: int | None, *, marker: str, grace: float, container: str | None = None) -> None:
        """Stop a job's process on the node, whatever it left running: its container first (``docker rm
        -f``: what runs in a container is the Docker daemon's child, not in the process tree), then its
        process tree (``kill_tree``). A container that cannot be removed is logged; the tree goes anyway."""
        if container:
            try:
                self.run(["docker", "rm", "-f", container], timeout=60)
            except NodeError:
                logger.exception("could not remove container %s", container)
        if pid is not None:
            self.kill_tree(pid, marker=marker, grace=grace)

    @abstractmethod
    def is_running(self, pid: int, *, marker: str) -> bool: ...

    @abstractmethod
    def put(self, local_path: Path, remote_path: str) -> None: ...

    @abstractmethod
    def get(self, remote_path: str, local_path: Path) -> None: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def make_dirs(self, path: str) -> None:
        """Create ``path`` and its parents if missing."""

    def close(self) -> None:  # noqa: B027 - most connections have nothing to close
        pass

    def free_bytes(self, path: str) -> int:
        result = self.run(["df", "-Pk", path], timeout=30)
        try:
            return int(result.output.strip().splitlines()[-1].split()[3]) * 1024
        except (IndexError, ValueError):
            raise NodeError(
                f"Could not read the free space of {path}: {result.output.strip()[:200]}"
            ) from None


class LocalProcess(RunningProcess):
    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid = popen.pid
        self._fd = popen.stdout.fileno()
        self._eof = False

    def read(self, timeout: float) -> bytes | None:
        if self._eof:
            return b""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self._fd, 65536)
        if not data:
            self._eof = True
            self._popen.stdout.close()
        return data

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _group_members(pgid: int, marker: str) -> list[int]:
    """Pids in process group ``pgid`` that carry the job's marker (Linux /proc)."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read()
            # Fields after the command name (which may hold spaces) start after the last ')'.
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] == b"Z":
                continue
            with open(f"/proc/{entry}/environ", "rb") as environ_file:
                if needle in environ_file.read().split(b"\0"):
                    members.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return members


# What a process started on this machine (an engine, nvidia-smi, docker, rm) inherits from the worker: what
# programs need to run, the GPU selection and the driver's settings. Nothing else: the worker's environment
# holds the platform's secrets (SECRET_KEY, DATABASE_URL, REDIS_URL, CHAT_LLM_API_KEY, …), and an engine
# is third-party code fed with uploaded data. SSH nodes never see it: commands there get the login's
# environment plus the invocation's own variables (gpu_nodes/ssh.py SSHConnection._shell).
INHERITED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "LD_LIBRARY_PATH",  # CUDA libraries outside the loader's default folders
    # The docker CLI of a docker-runtime node needs them to reach its daemon; containers get none of them
    # (gpu_nodes/runtime.py passes only the invocation's variables with -e).
    "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
    # A benchmark's run tag (bench/_harness.py): its cleanup finds the engines it started by it. No secret.
    "TALKFORGE_BENCH_RUN",
})  # fmt: skip
INHERITED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_")
# Even under an allowed prefix, a name that says it holds a secret stays behind (NVIDIA_API_KEY, …).
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")


def engine_environment(node: Node | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a process started on a local node: the allowed part of this process's
    environment, the node's bare environment first on PATH, then the invocation's own variables."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if (name in INHERITED_NAMES or name.startswith(INHERITED_PREFIXES))
        and not any(word in name.upper() for word in SECRET_WORDS)
    }
    if node is not None and node.runtime == Node.Runtime.BARE and node.environment:
        inherited["PATH"] = f"{node.environment}{os.pathsep}{inherited.get('PATH', os.defpath)}"
    return inherited | dict(env or {})


class LocalConnection(NodeConnection):
    """This machine. Used by the workers that serve a local node's queue."""

    def __init__(self, node: Node | None = None):
        self.node = node

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        return engine_environment(self.node, env)

    def start(self, argv, *, marker, cwd=None, env=None):
        if cwd:
            self.make_dirs(cwd)
        full_env = self._env(env) | {MARKER_VARIABLE: marker, "PYTHONUNBUFFERED": "1"}
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                bufsize=0,
            )
        except FileNotFoundError:
            raise CommandNotFound(
                f"{argv[0]!r} was not found on node {self._name}: install it or fix the node's environment."
            ) from None
        return LocalProcess(popen)

    def run(self, argv, *, cwd=None, env=None, timeout=60):
        try:
            completed = subprocess.run(
                list(argv),
                cwd=cwd,
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]!r} was not found on node {self._name}.") from None
        except subprocess.TimeoutExpired:
            raise NodeError(
                f"{argv[0]!r} did not finish within {timeout:.0f} s on node {self._name}."
            ) from None
        output = (completed.stdout + completed.stderr).decode("utf-8", "replace")
        return CommandResult(completed.returncode, output)

    def kill_tree(self, pid, *, marker, grace):
        members = _group_members(pid, marker)
        if not members:
            return False
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_members(pid, marker):
            time.sleep(0.05)
        if _group_members(pid, marker):
            self._signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _group_members(pid, marker):
                time.sleep(0.05)
        return True

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def is_running(self, pid, *, marker):
        return bool(_group_members(pid, marker))

    def put(self, local_path, remote_path):
        self._copy(Path(local_path), Path(remote_path))

    def get(self, remote_path, local_path):
        self._copy(Path(remote_path), Path(local_path))

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        # Atomic on arrival: a reader never sees half a file under the final name; the partial file is the
        # writer's own (two workers may copy one file at once).
        if not source.is_file():
            raise NodeError(f"{source} does not exist on this machine.")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_native_id()}.part")
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise NodeError(f"Could not copy {source} to {target}: {error}") from None

    def exists(self, path):
        return Path(path).exists()

    def make_dirs(self, path):
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise NodeError(f"Could not create {path} on node {self._name}: {error.strerror}.") from None

    @property
    def _name(self) -> str:
        return self.node.name if self.node else "local"
