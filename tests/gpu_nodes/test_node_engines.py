"""Engines on nodes: which node can run which engine (an image per engine on docker nodes, a folder and an
environment per engine on bare ones), placement by the engine's GPU need with the reason on the waiting
job, the API and admin that set them, and the migration that keeps existing nodes able to run what they
ran."""

from __future__ import annotations

import os

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from avatars.models import Avatar
from core.errors import ServiceError
from gpu_nodes.connections import LocalConnection
from gpu_nodes.models import Gpu, Node, NodeEngine
from gpu_nodes.node_engines import engines_of
from gpu_nodes.runtime import BARE_WITH_ENVIRONMENT, wrap
from gpu_nodes.services import node_probe, node_set_engines
from jobs.models import Job
from jobs.services import job_submit, jobs_dispatch
from tests.conftest import write_fake_nvidia_smi

pytestmark = pytest.mark.django_db(transaction=True)


def avatar_of(owner, engine: str) -> Avatar:
    return Avatar.objects.create(
        owner=owner, name=f"A {engine}", slug=f"a-{engine}-{owner.pk}", engine=engine,
        status=Avatar.Status.TRAINING, video="avatars/x/x.mp4", consent_given_at=timezone.now(),
        consent_given_by=owner, consent_statement="yes",
    )  # fmt: skip


def gpu_node(name: str, tmp_path, monkeypatch, gpus: list[tuple[str, int]]) -> Node:
    """A local node probed through a stand-in nvidia-smi listing ``gpus`` ((name, MiB) pairs)."""
    bin_dir = tmp_path / f"bin-{name}"
    write_fake_nvidia_smi(bin_dir, gpus)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    workdir = tmp_path / f"work-{name}"
    workdir.mkdir()
    node = node_probe(node=Node.objects.create(name=name, workdir=str(workdir)))
    assert node.status == Node.Status.ONLINE, node.last_error
    return node


def train(owner, avatar) -> Job:
    return job_submit(
        owner=owner, kind="train", avatar=avatar, params={"avatar": avatar.pk, "iterations": 1000}
    )


# --- placement ----------------------------------------------------------------------------------------


def test_an_engines_job_goes_only_to_a_node_that_lists_the_engine(alice, tmp_path, monkeypatch, redis_db):
    node = gpu_node("big", tmp_path, monkeypatch, [("NVIDIA H100 80GB HBM3", 81559)])
    job = train(alice, avatar_of(alice, "gaussiantalker"))
    job.refresh_from_db()
    assert job.gpu_id is None, "the node has a free H100 but no GaussianTalker"
    assert job.stage == "waiting: no GPU with 24000 MB free that can run gaussiantalker"

    node_set_engines(node=node, engines=[{"engine": "synctalk"}])
    jobs_dispatch()
    assert Job.objects.get(pk=job.pk).gpu_id is None, "SyncTalk installed is not GaussianTalker"

    node_set_engines(node=node, engines=[{"engine": "synctalk"}, {"engine": "gaussiantalker"}])
    jobs_dispatch()
    job.refresh_from_db()
    assert (job.node, job.gpu.index, job.stage) == (node, 0, "placed")


def test_a_gpu_with_too_little_free_memory_is_skipped_and_the_job_says_why(
    alice, tmp_path, monkeypatch, redis_db
):
    small = gpu_node("small", tmp_path, monkeypatch, [("Tesla T4", 15360)])
    node_set_engines(node=small, engines=[{"engine": "gaussiantalker"}])
    avatar = avatar_of(alice, "gaussiantalker")
    job = train(alice, avatar)
    job.refresh_from_db()
    assert job.gpu_id is None
    assert job.stage == "waiting: no GPU with 24000 MB free that can run gaussiantalker"

    # A render needs less (10000 MB): the same T4 takes it.
    render = job_submit(owner=alice, kind="render_validation", avatar=avatar, params={"avatar": avatar.pk})
    assert Job.objects.get(pk=render.pk).node == small

    # Another process takes most of a big GPU (the last probe saw it): still too little free.
    big = gpu_node("big", tmp_path, monkeypatch, [("NVIDIA A100-SXM4-40GB", 40960)])
    node_set_engines(node=big, engines=[{"engine": "gaussiantalker"}])
    Gpu.objects.filter(node=big).update(memory_used_mb=30000)
    jobs_dispatch()
    assert Job.objects.get(pk=job.pk).gpu_id is None
    Gpu.objects.filter(node=big).update(memory_used_mb=1000)
    jobs_dispatch()
    job.refresh_from_db()
    assert job.node == big and job.stage == "placed"


def test_a_real_training_never_lands_on_a_cpu_slot(alice, make_node, redis_db):
    node = make_node()  # no nvidia-smi: one CPU slot
    node_set_engines(node=node, engines=[{"engine": "synctalk"}])
    job = train(alice, avatar_of(alice, "synctalk"))
    job.refresh_from_db()
    assert job.gpu_id is None and job.stage.startswith("waiting: no GPU with")
    # The demo engine runs on the CPU slot of the same node, with no row for it.
    demo = train(alice, avatar_of(alice, "demo"))
    assert Job.objects.get(pk=demo.pk).gpu.is_cpu


def test_a_waiting_job_says_it_waits_for_a_slot_once_a_fitting_node_is_only_busy(
    alice, tmp_path, monkeypatch, redis_db
):
    node = gpu_node("one", tmp_path, monkeypatch, [("NVIDIA H100 80GB HBM3", 81559)])
    node_set_engines(node=node, engines=[{"engine": "gaussiantalker"}])
    first = train(alice, avatar_of(alice, "gaussiantalker"))
    second = job_submit(owner=alice, kind="train", avatar=first.avatar, params={"avatar": first.avatar_id})
    assert Job.objects.get(pk=first.pk).stage == "placed"
    assert Job.objects.get(pk=second.pk).stage != "placed"
    assert not Job.objects.get(pk=second.pk).stage.startswith("waiting: no ")


def test_a_spoken_only_chat_reply_needs_no_engine_but_a_rendered_one_does(alice, make_node, redis_db):
    from avatars.models import Checkpoint
    from chat.models import Conversation, Message

    node = make_node()  # a CPU slot, no engines listed
    avatar = avatar_of(alice, "gaussiantalker")
    conversation = Conversation.objects.create(owner=alice, avatar=avatar, title="t")
    spoken = Message.objects.create(conversation=conversation, role="assistant")
    job = job_submit(owner=alice, kind="chat_reply", avatar=avatar, params={"message": spoken.pk})
    assert Job.objects.get(pk=job.pk).node == node, "no render: the worker speaks it anywhere"
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, finished_at=timezone.now())

    checkpoint = Checkpoint.objects.create(avatar=avatar, node=node, stage="fine", iteration=500, path="/x")
    rendered = Message.objects.create(conversation=conversation, role="assistant")
    params = {"message": rendered.pk, "checkpoint": checkpoint.pk}
    job = job_submit(owner=alice, kind="chat_reply", avatar=avatar, params=params)
    job.refresh_from_db()
    assert (
        job.gpu_id is None and job.stage == "waiting: no GPU with 10000 MB free that can run gaussiantalker"
    )


# --- where an engine runs ------------------------------------------------------------------------------


def test_a_docker_node_runs_each_engine_in_its_own_image(alice, tmp_path):
    node = Node.objects.create(
        name="d", workdir=str(tmp_path), runtime=Node.Runtime.DOCKER, docker_image="talkforge-demo:latest"
    )
    node_set_engines(
        node=node,
        engines=[
            {"engine": "gaussiantalker", "image": "gaussiantalker:8ec613b"},
            {"engine": "synctalk", "image": "synctalk:d2427a3"},
        ],
    )
    argv = ["python", "train.py"]
    for engine, image in (("gaussiantalker", "gaussiantalker:8ec613b"), ("synctalk", "synctalk:d2427a3"),
                          (None, "talkforge-demo:latest")):  # fmt: skip
        invocation = wrap(node=node, gpu=None, argv=argv, name="c", mounts=[], engine=engine)
        assert invocation.argv[-3:] == [image, *argv], engine
    assert engines_of(node) == ["gaussiantalker", "synctalk", "demo"]


def test_a_bare_engine_runs_in_its_own_environment(tmp_path):
    """The engine's environment comes first on PATH on the node (its python, not the node's)."""
    own = tmp_path / "gt-env" / "bin"
    own.mkdir(parents=True)
    (own / "which-env").write_text('#!/bin/sh\necho gaussiantalker-env "$@"\n')
    (own / "which-env").chmod(0o755)
    node = Node.objects.create(name="b", workdir=str(tmp_path))
    node_set_engines(node=node, engines=[{"engine": "gaussiantalker", "environment": str(own)}])
    invocation = wrap(
        node=node, gpu=None, argv=["which-env", "a b"], name="n", mounts=[], engine="gaussiantalker"
    )
    assert invocation.argv[:3] == ["sh", "-c", BARE_WITH_ENVIRONMENT]
    result = LocalConnection(node).run(invocation.argv, env=invocation.env)
    assert (result.returncode, result.output.strip()) == (0, "gaussiantalker-env a b")
    # Without an environment of its own the command is left as it is (the node's environment applies).
    plain = wrap(node=node, gpu=None, argv=["python"], name="n", mounts=[], engine="synctalk")
    assert plain.argv == ["python"]


def test_setting_engines_refuses_what_cannot_run_and_keeps_an_unchanged_self_test(tmp_path):
    docker = Node.objects.create(name="d", workdir="/w", runtime=Node.Runtime.DOCKER, docker_image="demo:1")
    bare = Node.objects.create(name="b", workdir="/w")
    refusals = [
        (docker, [{"engine": "gaussiantalker"}], "needs its image on docker node d"),
        (bare, [{"engine": "wav2lip"}], "'wav2lip' is not an engine"),
        (bare, [{"engine": "demo"}], "'demo' is not an engine"),
        (bare, [{"engine": "synctalk"}, {"engine": "synctalk"}], "listed twice"),
        (bare, [{"engine": "synctalk", "install_dir": "SyncTalk"}], "must be an absolute path"),
        (bare, [{"engine": "synctalk", "environment": "envs/st/bin"}], "must be an absolute path"),
    ]
    for node, engines, message in refusals:
        with pytest.raises(ServiceError, match=message):
            node_set_engines(node=node, engines=engines)
    assert not NodeEngine.objects.exists()

    node_set_engines(node=bare, engines=[{"engine": "synctalk", "install_dir": "/opt/SyncTalk"}])
    NodeEngine.objects.filter(node=bare).update(selftest={"checks": [{"name": "gpu", "ok": True}]})
    node_set_engines(node=bare, engines=[{"engine": "synctalk", "install_dir": "/opt/SyncTalk"}])
    assert NodeEngine.objects.get(node=bare).selftest_passed is True
    node_set_engines(node=bare, engines=[{"engine": "synctalk", "install_dir": "/opt/SyncTalk2"}])
    assert NodeEngine.objects.get(node=bare).selftest_passed is None, "a changed install was not tested"
    node_set_engines(node=bare, engines=[])
    assert not NodeEngine.objects.filter(node=bare).exists()


def test_staff_set_a_nodes_engines_through_the_api_and_a_refusal_changes_nothing(staff, tmp_path):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff)
    engines = [{"engine": "synctalk", "image": "synctalk:latest"}]
    body = {"name": "gpu-box", "kind": "local", "workdir": str(tmp_path / "w"), "runtime": "docker",
            "docker_image": "demo:1", "engines": engines}  # fmt: skip
    created = client.post("/api/nodes/", body, format="json")
    assert created.status_code == 201, created.content
    assert [(e["engine"], e["image"], e["selftest_passed"]) for e in created.json()["engines"]] == [
        ("synctalk", "synctalk:latest", None)
    ]
    node_id = created.json()["id"]
    refused = client.patch(
        f"/api/nodes/{node_id}/", {"engines": [{"engine": "gaussiantalker"}]}, format="json"
    )
    assert refused.status_code == 400 and "needs its image" in refused.content.decode()
    assert list(NodeEngine.objects.values_list("engine", "image")) == [("synctalk", "synctalk:latest")]

    body["name"] = "second"
    body["engines"] = [{"engine": "nope", "image": "x"}]
    assert client.post("/api/nodes/", body, format="json").status_code == 400
    assert not Node.objects.filter(name="second").exists(), "a node whose engines are refused is not made"


def test_the_admin_refuses_an_engine_without_its_image_on_a_docker_node(admin_client, tmp_path):
    form = {
        "name": "d", "kind": "local", "workdir": str(tmp_path), "runtime": "docker", "docker_image": "demo:1",
        "port": "22", "enabled": "on", "gpus-TOTAL_FORMS": "0", "gpus-INITIAL_FORMS": "0",
        "engines-TOTAL_FORMS": "1", "engines-INITIAL_FORMS": "0", "engines-0-engine": "synctalk",
        "engines-0-image": "",
    }  # fmt: skip
    response = admin_client.post(reverse("admin:gpu_nodes_node_add"), form)
    assert response.status_code == 200
    assert "synctalk needs its image on docker node d (e.g. synctalk:latest" in response.content.decode()
    assert not Node.objects.exists()
    form["engines-0-image"] = "synctalk:d2427a3"
    assert admin_client.post(reverse("admin:gpu_nodes_node_add"), form).status_code == 302
    assert list(NodeEngine.objects.values_list("node__name", "engine", "image")) == [
        ("d", "synctalk", "synctalk:d2427a3")
    ]


def test_the_nodes_page_lists_what_each_node_can_run(client, alice, tmp_path):
    node = Node.objects.create(name="b", workdir=str(tmp_path))
    node_set_engines(node=node, engines=[{"engine": "synctalk"}])
    client.force_login(alice)
    page = client.get(reverse("node-list")).content.decode()
    assert "<td>SyncTalk, Demo (CPU stand-in, not a real model)</td>" in page


# --- the migration --------------------------------------------------------------------------------------


def test_the_migration_keeps_every_node_able_to_run_what_it_ran(alice):
    before = ("gpu_nodes", "0004_node_cleanup")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    state = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "gpu_nodes"] + [before]
    apps = executor.loader.project_state(state).apps
    OldNode, OldJob, OldAvatar = (
        apps.get_model(*name.split(".")) for name in ("gpu_nodes.Node", "jobs.Job", "avatars.Avatar")
    )
    OldNode.objects.create(name="d", workdir="/w", runtime="docker", docker_image="my-synctalk:2")
    bare = OldNode.objects.create(name="b", workdir="/w", runtime="bare")
    OldNode.objects.create(name="unused", workdir="/w", runtime="bare")
    avatar = OldAvatar.objects.create(
        owner_id=alice.pk,
        name="A",
        slug="a",
        engine="gaussiantalker",
        video="x.mp4",
        consent_statement="y",
        consent_given_at=timezone.now(),
        consent_given_by_id=alice.pk,
    )
    OldJob.objects.create(owner_id=alice.pk, kind="train", node=bare, avatar=avatar)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    rows = set(NodeEngine.objects.values_list("node__name", "engine", "image"))
    assert rows == {("d", "synctalk", "my-synctalk:2"), ("b", "gaussiantalker", "")}
