"""Wrapping an engine command for a node's runtime: a Docker container or a bare environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from .models import Gpu, Node
from .node_engines import node_engine

# Containers run as the node's user, not as the image's: the engine writes into the mounted workdir, and
# what it leaves there must belong to the account the platform reaches the node with (to read, move and
# delete it later). The uid:gid is resolved on the node, by the shell that starts docker, at the moment it
# starts (`id -u`, `id -g`): for an SSH node that is the remote account, which the platform could otherwise
# only take from a probe that may be old or not yet run. The docker arguments reach this shell as its
# positional parameters ("$@"), never pasted into the script, so nothing in them is read as shell syntax.
# (Rootless Docker and userns-remap map uids themselves; there the node should use the bare runtime or a
# rootful daemon.)
DOCKER_AS_NODE_USER = (
    'command -v docker >/dev/null 2>&1 || { echo "docker was not found on this node: install Docker with '
    'the NVIDIA container toolkit, or switch the node to the bare runtime." >&2; exit 127; }; '
    'uid=$(id -u) && gid=$(id -g) || exit 125; exec docker run --user "$uid:$gid" "$@"'
)
# The image's HOME belongs to the image's user; running as another uid, an engine could not write the
# caches that torch, TensorFlow, matplotlib or Hugging Face keep there. /tmp is writable by every uid in
# every image and private to the container (removed with it). Images that keep files under their HOME
# link them into this one at start (docker/engines/*/README.md).
CONTAINER_HOME = "/tmp"  # noqa: S108 - a path inside the container, private to it
# A bare engine with an environment of its own (GaussianTalker and SyncTalk pin different Pythons) runs
# with that environment's bin folder first on PATH, set by this shell on the node; the folder and the
# command reach it as positional parameters, never pasted into the script.
BARE_WITH_ENVIRONMENT = 'PATH="$1:$PATH"; export PATH; shift; exec "$@"'


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
    engine: str | None = None,
) -> Invocation:
    """``argv`` as it must run on ``node`` pinned to ``gpu``.

    Engines hard-code ``cuda:0`` (GaussianTalker utils/general_utils.py:139 ``torch.cuda.set_device(
    torch.device("cuda:0"))``), so a GPU is chosen only by what the process can see:
    ``CUDA_VISIBLE_DEVICES`` for bare runs, ``--gpus device=N`` for containers.

    A container is started through ``sh -c`` as the node's user with ``HOME`` set to ``/tmp`` (see
    ``DOCKER_AS_NODE_USER``): ``["sh", "-c", DOCKER_AS_NODE_USER, "docker-run", "--rm", …, IMAGE, *argv]``.
    IMAGE is the image of ``engine`` on the node (its NodeEngine row), else the node's own (the demo's).
    On a bare node an engine with an environment of its own runs through ``BARE_WITH_ENVIRONMENT``.
    """
    env = dict(env or {})
    install = node_engine(node, engine)
    if node.runtime == Node.Runtime.DOCKER:
        env.setdefault("HOME", CONTAINER_HOME)
        command = ["sh", "-c", DOCKER_AS_NODE_USER, "docker-run"]
        command += ["--rm", "--name", name, "--init", "--ipc=host"]
        if gpu is not None and not gpu.is_cpu:
            command += ["--gpus", f"device={gpu.index}"]
        for mount in mounts:
            command += ["-v", f"{mount}:{mount}"]
        if cwd:
            command += ["-w", cwd]
        for key, value in sorted(env.items()):
            command += ["-e", f"{key}={value}"]
        image = (install.image if install is not None else "") or node.docker_image
        return Invocation(argv=command + [image] + list(argv), container=name)
    if gpu is not None and not gpu.is_cpu:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu.index)
    elif gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if install is not None and install.environment and install.environment != node.environment:
        argv = ["sh", "-c", BARE_WITH_ENVIRONMENT, "engine-environment", install.environment, *argv]
    return Invocation(argv=list(argv), env=env, cwd=cwd)
