"""Engine containers run as the node's user, with a HOME they can write (gpu_nodes/runtime.py ``wrap``).

Without ``--user`` everything an engine writes into the mounted workdir belongs to the image's user (root or
uid 1000), and the platform's own account can then neither read nor delete it. The wrapped command is run
for real here, on a local node and over SSH, with a stand-in ``docker`` that prints the arguments it got:
so the test sees the uid:gid that the node's shell resolved, not what the platform guessed.
"""

from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path

import pytest

from gpu_nodes.connect import connection_for
from gpu_nodes.connections import LocalConnection
from gpu_nodes.models import Gpu, Node
from gpu_nodes.runtime import CONTAINER_HOME, DOCKER_AS_NODE_USER, wrap

# Prints each argument on a line of its own (none of the ones below holds a newline).
FAKE_DOCKER = "#!/bin/sh\nfor arg do printf '%s\\n' \"$arg\"; done\n"
HOSTILE = "a b; echo $(id) `id` 'q' \"d\" > /tmp/x"  # must reach the engine as one argument, untouched


def install_fake_docker(folder, owner=None):
    folder.mkdir(parents=True, exist_ok=True)
    docker = folder / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    if owner is not None:
        os.lchown(docker, owner.pw_uid, owner.pw_gid)
    return folder


@pytest.fixture
def docker_node(db, tmp_path):
    node = Node.objects.create(
        name="dock",
        workdir=str(tmp_path / "work"),
        runtime=Node.Runtime.DOCKER,
        docker_image="synctalk:latest",
    )
    Gpu.objects.create(node=node, index=1, name="NVIDIA H100 80GB HBM3")
    return node


def test_a_container_runs_as_the_local_user_with_home_in_tmp(docker_node, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{install_fake_docker(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    work = docker_node.workdir
    invocation = wrap(
        node=docker_node,
        gpu=docker_node.gpus.get(index=1),
        argv=["python", "-u", "main.py", HOSTILE],
        name="talkforge-job-7-1",
        mounts=[work],
        cwd=work,
        env={"WANDB_MODE": "disabled"},
    )
    assert invocation.argv[:4] == ["sh", "-c", DOCKER_AS_NODE_USER, "docker-run"]
    assert invocation.container == "talkforge-job-7-1" and invocation.env == {}
    result = LocalConnection(docker_node).run(invocation.argv, env=invocation.env)
    assert result.returncode == 0, result.output
    assert result.output.splitlines() == [
        "run",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "--rm",
        "--name",
        "talkforge-job-7-1",
        "--init",
        "--ipc=host",
        "--gpus",
        "device=1",
        "-v",
        f"{work}:{work}",
        "-w",
        work,
        "-e",
        "HOME=/tmp",
        "-e",
        "WANDB_MODE=disabled",
        "synctalk:latest",
        "python",
        "-u",
        "main.py",
        HOSTILE,
    ]
    assert CONTAINER_HOME == "/tmp"


def test_a_home_the_caller_chose_is_kept(docker_node):
    invocation = wrap(
        node=docker_node, gpu=None, argv=["true"], name="c", mounts=[], env={"HOME": "/work/home"}
    )
    assert "HOME=/work/home" in invocation.argv and "HOME=/tmp" not in invocation.argv


def test_a_node_without_docker_says_so(docker_node, tmp_path, monkeypatch):
    tools = tmp_path / "tools"  # sh and id, but no docker
    tools.mkdir()
    for program in ("sh", "id"):
        (tools / program).symlink_to(next(
            f"{folder}/{program}" for folder in os.environ["PATH"].split(os.pathsep)
            if os.access(f"{folder}/{program}", os.X_OK)
        ))  # fmt: skip
    monkeypatch.setenv("PATH", str(tools))
    invocation = wrap(node=docker_node, gpu=None, argv=["true"], name="c", mounts=[])
    result = LocalConnection(docker_node).run(invocation.argv)
    assert result.returncode == 127
    assert "docker was not found on this node" in result.output


def test_over_ssh_the_container_runs_as_the_remote_account(make_ssh_node, ssh_server):
    """The SSH node's account is not this process's: only the node can say which uid it has."""
    node = make_ssh_node(name="dock-user", gpus=1)
    account = pwd.getpwnam(ssh_server.user)
    assert account.pw_uid != os.getuid(), "the test needs a remote account other than the local one"
    # The stand-in docker goes first on the remote PATH: the node's environment folder, which the SSH
    # connection puts there for a bare node. The invocation is wrapped as for a docker node.
    install_fake_docker(Path(node.environment), owner=account)
    as_docker = Node.objects.get(pk=node.pk)
    as_docker.runtime, as_docker.docker_image = Node.Runtime.DOCKER, "synctalk:latest"
    invocation = wrap(
        node=as_docker,
        gpu=node.gpus.get(index=0),
        argv=["python", "-u", "main.py", HOSTILE],
        name="talkforge-job-9-1",
        mounts=[node.workdir],
        cwd=node.workdir,
    )
    process = connection_for(node).start(invocation.argv, marker="9.1", cwd=node.workdir, env=invocation.env)
    output = b""
    while (chunk := process.read(10)) != b"":
        assert chunk is not None, "the wrapped command printed nothing within 10 s"
        output += chunk
    assert process.wait(10) == 0, output
    args = output.decode().splitlines()
    assert args[:3] == ["run", "--user", f"{account.pw_uid}:{account.pw_gid}"], shlex.join(args)
    assert args[args.index("-e") + 1] == "HOME=/tmp"
    assert args[args.index("synctalk:latest") + 1 :] == ["python", "-u", "main.py", HOSTILE]
    assert args[args.index("--gpus") + 1] == "device=0"
