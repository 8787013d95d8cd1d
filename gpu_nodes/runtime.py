"""Wrapping an engine command for a node's runtime: a Docker container or a bare environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from .models import Gpu, Node


@dataclass(frozen=True)
class Invocation:
    """A command ready to start on a node."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    container: str | None = None  # set for the docker runtime: stop it with ``docker rm -f``


def wrap(
    *,
    node: Node,
    gpu: Gpu | None,
    argv: list[str],
    name: str,
    mounts: list[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> Invocation:
    """``argv`` as it must run on ``node`` pinned to ``gpu``.

    Engines hard-code ``cuda:0``, so a GPU is chosen only by what the process can see:
    ``CUDA_VISIBLE_DEVICES`` for bare runs, ``--gpus device=N`` for containers (spec §0)."""
    env = dict(env or {})
    if node.runtime == Node.Runtime.DOCKER:
        command = ["docker", "run", "--rm", "--name", name, "--init", "--ipc=host"]
        if gpu is not None and not gpu.is_cpu:
            command += ["--gpus", f"device={gpu.index}"]
        for mount in mounts:
            command += ["-v", f"{mount}:{mount}"]
        if cwd:
            command += ["-w", cwd]
        for key, value in sorted(env.items()):
            command += ["-e", f"{key}={value}"]
        return Invocation(argv=command + [node.docker_image] + list(argv), container=name)
    if gpu is not None and not gpu.is_cpu:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu.index)
    elif gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return Invocation(argv=list(argv), env=env, cwd=cwd)
