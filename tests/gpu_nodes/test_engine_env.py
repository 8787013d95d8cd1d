"""Engines get a clean environment: on a local node, what programs need (PATH, HOME, locale, the GPU
selection and the driver's variables) and what the invocation sets, never the platform's secrets; on an
SSH node, the login's environment plus the invocation's variables, nothing of the worker's."""

from __future__ import annotations

import pytest

from gpu_nodes.connect import connection_for
from gpu_nodes.models import Gpu
from gpu_nodes.runtime import wrap

SECRETS = {
    "SECRET_KEY": "django-secret-that-must-stay-home",
    "CHAT_LLM_API_KEY": "sk-platform-key",
    "DATABASE_URL": "postgres://talkforge:db-password@db/talkforge",
    "REDIS_URL": "redis://:redis-password@redis:6379/0",
    "NVIDIA_API_KEY": "nvapi-registry-key",  # under an allowed prefix, yet a secret by its name
}


@pytest.fixture
def platform_secrets(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_CACHE_PATH", "/var/cache/cuda")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")


def printed_environment(node, gpu=None) -> dict[str, str]:
    """Start ``env`` on ``node`` the way the runner starts an engine (runtime wrap, then the connection's
    start) and read what it printed."""
    invocation = wrap(
        node=node, gpu=gpu, argv=["env"], name="talkforge-job-1-1", mounts=[node.workdir],
        cwd=node.workdir, env={"ENGINE_SETTING": "from-the-invocation"},
    )  # fmt: skip
    process = connection_for(node).start(
        invocation.argv, marker="1.1", cwd=invocation.cwd, env=invocation.env
    )
    output = b""
    while (chunk := process.read(10)) != b"":
        assert chunk is not None, "env printed nothing within 10 s"
        output += chunk
    assert process.wait(10) == 0
    return dict(line.split("=", 1) for line in output.decode().splitlines() if "=" in line)


def assert_no_secrets(environment: dict[str, str]) -> None:
    leaked = {name for name in environment if name in SECRETS}
    leaked |= {name for name, value in environment.items() if value in SECRETS.values()}
    assert not leaked, leaked


def test_an_engine_on_a_local_node_sees_no_secret_of_the_platform(platform_secrets, make_node):
    node = make_node(gpus=1)
    environment = printed_environment(node, gpu=Gpu.objects.get(node=node, index=0))
    assert_no_secrets(environment)
    assert environment["PATH"].split(":")[0].startswith(node.workdir.rsplit("/", 1)[0])  # nvidia-smi's bin
    assert environment["CUDA_VISIBLE_DEVICES"] == "0"  # the job's GPU, set by the invocation
    assert environment["CUDA_CACHE_PATH"] == "/var/cache/cuda"  # the driver's settings pass
    assert environment["LC_ALL"] == "C.UTF-8" and "HOME" in environment
    assert environment["ENGINE_SETTING"] == "from-the-invocation"
    assert environment["TALKFORGE_JOB"] == "1.1" and environment["PYTHONUNBUFFERED"] == "1"
    assert "DJANGO_SETTINGS_MODULE" not in environment


def test_commands_run_on_a_local_node_see_no_secret_either(platform_secrets, make_node):
    node = make_node()
    result = connection_for(node).run(["env"])
    environment = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert_no_secrets(environment)
    assert "PATH" in environment


def test_an_engine_on_an_ssh_node_sees_no_secret_of_the_worker(platform_secrets, make_ssh_node):
    node = make_ssh_node(name="env-remote", gpus=1)
    environment = printed_environment(node, gpu=Gpu.objects.get(node=node, index=0))
    assert_no_secrets(environment)
    assert "CUDA_CACHE_PATH" not in environment and "LC_ALL" not in environment  # the worker's own
    assert environment["CUDA_VISIBLE_DEVICES"] == "0"
    assert environment["ENGINE_SETTING"] == "from-the-invocation"
    assert environment["PATH"].split(":")[0] == node.environment  # the node's environment first
