"""Node self-test (``manage.py node_selftest``, the node admin's button): run against real folders on a
local node with pieces missing. The engine's environment is a real interpreter with a folder of stand-in
packages in front (the compiled extensions and, for the passing case, a CUDA torch: GPU hardware is the
edge of this machine's world); weights are real files, or missing ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from avatars.engines.registry import engine_for
from gpu_nodes.models import Node, NodeEngine
from gpu_nodes.services import node_set_engines

pytestmark = pytest.mark.django_db(transaction=True)

GAUSSIANTALKER = engine_for("gaussiantalker")

FAKE_CUDA_TORCH = """
__version__ = "1.12.1+cu116"


class cuda:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def get_device_name(index):
        return "NVIDIA H100 80GB HBM3"

    @staticmethod
    def mem_get_info(index):
        return 80000 * 2**20, 81559 * 2**20
"""


def environment(tmp_path: Path, *, modules: dict[str, str]) -> Path:
    """A bin folder whose ``python`` is this machine's interpreter with ``modules`` (dotted name → source)
    importable in front of everything else."""
    site = tmp_path / "site"
    for dotted, source in modules.items():
        parts = dotted.split(".")
        package = site.joinpath(*parts[:-1]) if len(parts) > 1 else site
        package.mkdir(parents=True, exist_ok=True)
        for level in range(1, len(parts)):
            (site.joinpath(*parts[:level]) / "__init__.py").touch()
        target = site.joinpath(*parts) / "__init__.py" if len(parts) == 1 else package / f"{parts[-1]}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return bin_dir


def put_weights(repo: Path, home: Path, *, skip: tuple[str, ...] = ()) -> None:
    for weight in GAUSSIANTALKER.weights:
        if weight.path in skip:
            continue
        path = (repo if weight.root == "repo" else home) / weight.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")


@pytest.fixture
def node(make_node, tmp_path, monkeypatch, settings):
    settings.NODE_SELFTEST_MIN_FREE_GB = 0
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return make_node()


def by_name(install: NodeEngine) -> dict[str, dict]:
    return {check["name"]: check for check in install.selftest["checks"]}


def test_a_complete_install_passes_every_check(node, tmp_path, capsys):
    repo = tmp_path / "GaussianTalker"
    put_weights(repo, tmp_path / "home")
    modules = {"torch": FAKE_CUDA_TORCH, "diff_gaussian_rasterization": "", "simple_knn._C": "",
               "pytorch3d._C": ""}  # fmt: skip
    env = environment(tmp_path, modules=modules)
    node_set_engines(
        node=node, engines=[{"engine": "gaussiantalker", "install_dir": str(repo), "environment": str(env)}]
    )

    call_command("node_selftest", node.name, "--engine", "gaussiantalker")

    install = NodeEngine.objects.get(node=node)
    assert install.selftest_passed is True and install.selftest_at is not None
    checks = by_name(install)
    assert checks["gpu"]["detail"].startswith("NVIDIA H100 80GB HBM3, 80000 MiB free of 81559 MiB")
    assert checks["python"]["detail"].endswith(f"in {repo}"), "it runs in the engine's repository folder"
    expected = {"reachable", "install folder", "environment", "disk", "python", "gpu", "ffmpeg"}
    expected |= {f"extension {name}" for name in GAUSSIANTALKER.extensions}
    expected |= {f"weight {weight.path}" for weight in GAUSSIANTALKER.weights}
    assert set(checks) == expected
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("PASS") == len(expected)


def test_missing_pieces_fail_with_what_to_do(node, tmp_path, capsys):
    """This machine's real torch (no CUDA here), one extension missing, two weights missing."""
    repo = tmp_path / "GaussianTalker"
    missing = ("data_utils/face_parsing/79999_iter.pth", ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb")
    put_weights(repo, tmp_path / "home", skip=missing)
    env = environment(tmp_path, modules={"diff_gaussian_rasterization": "", "pytorch3d._C": ""})
    node_set_engines(
        node=node, engines=[{"engine": "gaussiantalker", "install_dir": str(repo), "environment": str(env)}]
    )

    with pytest.raises(CommandError, match="Some checks failed"):
        call_command("node_selftest", node.name, "--engine", "gaussiantalker")

    install = NodeEngine.objects.get(node=node)
    assert install.selftest_passed is False
    checks = by_name(install)
    failed = {name for name, check in checks.items() if not check["ok"]}
    assert failed == {"gpu", "extension simple_knn._C"} | {f"weight {path}" for path in missing}
    assert "sees no CUDA GPU" in checks["gpu"]["detail"] and "--gpus" in checks["gpu"]["fix"]
    assert (
        "data_utils/face_parsing/test.py:96" in checks["weight data_utils/face_parsing/79999_iter.pth"]["fix"]
    )
    assert "deepspeech_features/extract_ds_features.py:98" in checks[f"weight {missing[1]}"]["fix"]
    assert checks["extension diff_gaussian_rasterization"]["ok"] and checks["ffmpeg"]["ok"]
    out = capsys.readouterr().out
    assert "FAIL gpu" in out and "fix: Give the runtime the GPU" in out


def test_no_install_folder_no_environment_and_no_disk_stop_before_the_runtime(node, tmp_path, settings):
    settings.NODE_SELFTEST_MIN_FREE_GB = 10**9  # more than any disk has
    node_set_engines(
        node=node,
        engines=[
            {"engine": "synctalk", "install_dir": str(tmp_path / "nowhere"), "environment": "/no/env/bin"}
        ],
    )
    with pytest.raises(CommandError):
        call_command("node_selftest", node.name)  # every engine the node lists
    checks = by_name(NodeEngine.objects.get(node=node))
    assert {name for name, check in checks.items() if not check["ok"]} == {
        "install folder",
        "environment",
        "disk",
    }
    assert "python" not in checks, "the runtime is not started when it is not there"
    assert "NODE_SELFTEST_MIN_FREE_GB" in checks["disk"]["fix"]


def test_a_docker_node_without_the_engines_image_says_how_to_build_it(make_node, settings):
    settings.NODE_SELFTEST_MIN_FREE_GB = 0
    node = make_node()
    Node.objects.filter(pk=node.pk).update(runtime=Node.Runtime.DOCKER, docker_image="demo:1")
    node.refresh_from_db()
    node_set_engines(node=node, engines=[{"engine": "synctalk", "image": "synctalk:not-built-here"}])
    with pytest.raises(CommandError):
        call_command("node_selftest", node.name, "--engine", "synctalk")
    runtime = by_name(NodeEngine.objects.get(node=node))["runtime"]
    assert not runtime["ok"] and "docker" in runtime["fix"].lower()


def test_an_engine_the_node_does_not_list_or_a_node_that_does_not_exist_is_refused(node):
    with pytest.raises(CommandError, match="does not list SyncTalk"):
        call_command("node_selftest", node.name, "--engine", "synctalk")
    with pytest.raises(CommandError, match="lists no engines"):
        call_command("node_selftest", node.name)
    with pytest.raises(CommandError, match="No node named 'ghost'"):
        call_command("node_selftest", "ghost")


def test_the_admin_button_queues_the_self_test_on_the_nodes_queue(
    admin_client, client, alice, node, redis_db
):
    from core.queues import queue_named

    node_set_engines(node=node, engines=[{"engine": "gaussiantalker"}, {"engine": "synctalk"}])
    url = reverse("admin:gpu_nodes_node_selftest", args=[node.pk])
    assert admin_client.get(url).status_code == 405
    page = admin_client.get(reverse("admin:gpu_nodes_node_change", args=[node.pk])).content.decode()
    assert url in page and "Self-test engines" in page and "not run: manage.py node_selftest" in page

    response = admin_client.post(url)
    assert response.status_code == 302
    queued = queue_named(node.queue_name).jobs
    assert sorted(job.args for job in queued) == [(node.pk, "gaussiantalker"), (node.pk, "synctalk")]
    assert {job.func_name for job in queued} == {"avatars.engines.selftest.selftest_task"}

    client.force_login(alice)  # not staff
    assert client.post(url).status_code == 302 and len(queue_named(node.queue_name).jobs) == 2


def test_the_worker_task_runs_it_and_the_api_shows_the_result(node, tmp_path, staff):
    from rest_framework.test import APIClient

    from avatars.engines.selftest import selftest_task

    node_set_engines(node=node, engines=[{"engine": "synctalk", "install_dir": str(tmp_path / "nowhere")}])
    assert selftest_task(node.pk, "synctalk") == "failed"
    assert selftest_task(node.pk, "gaussiantalker").startswith("Node local does not list GaussianTalker")
    api = APIClient()
    api.force_authenticate(staff)
    engines = api.get(f"/api/nodes/{node.pk}/").json()["engines"]
    assert engines[0]["engine"] == "synctalk" and engines[0]["selftest_passed"] is False
    assert any(
        check["name"] == "install folder" and not check["ok"] for check in engines[0]["selftest"]["checks"]
    )
