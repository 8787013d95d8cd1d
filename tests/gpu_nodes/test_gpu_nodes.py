"""GPU nodes: reading nvidia-smi, probing nodes, running and stopping process trees on a local node,
moving files, and wrapping engine commands for Docker or a bare environment."""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from gpu_nodes.connections import (
    CommandNotFound,
    LocalConnection,
    NodeError,
    _group_members,
)
from gpu_nodes.models import Gpu, Node
from gpu_nodes.runtime import DOCKER_AS_NODE_USER, wrap
from gpu_nodes.services import node_drain, node_probe, parse_nvidia_smi
from tests.conftest import wait_for, write_fake_nvidia_smi

# --- parse_nvidia_smi ----------------------------------------------------------------------------------


def test_parse_nvidia_smi_reads_the_documented_csv():
    output = "0, NVIDIA H100 80GB HBM3, 81559, 1024, 37\n1, NVIDIA GeForce RTX 3090, 24576, 23000, 100\n"
    readings = parse_nvidia_smi(output)
    assert [(r.index, r.name, r.memory_total_mb, r.memory_used_mb, r.utilization_pct) for r in readings] == [
        (0, "NVIDIA H100 80GB HBM3", 81559, 1024, 37),
        (1, "NVIDIA GeForce RTX 3090", 24576, 23000, 100),
    ]


def test_parse_nvidia_smi_reads_unavailable_fields_as_zero():
    readings = parse_nvidia_smi("0, NVIDIA A100-SXM4-40GB, 40960, [N/A], [Not Supported]\n")
    assert (readings[0].memory_total_mb, readings[0].memory_used_mb, readings[0].utilization_pct) == (
        40960,
        0,
        0,
    )


def test_parse_nvidia_smi_keeps_a_name_that_holds_a_comma():
    readings = parse_nvidia_smi("3, NVIDIA A100 80GB PCIe, MIG 1g.10gb, 9728, 13, 5\n")
    assert readings[0].index == 3
    assert readings[0].name == "NVIDIA A100 80GB PCIe, MIG 1g.10gb"
    assert (readings[0].memory_total_mb, readings[0].memory_used_mb, readings[0].utilization_pct) == (
        9728,
        13,
        5,
    )


def test_parse_nvidia_smi_skips_blank_lines_and_rejects_other_formats():
    assert parse_nvidia_smi("\n\n0, Tesla T4, 15360, 0, 0\n\n")[0].name == "Tesla T4"
    assert parse_nvidia_smi("") == []
    with pytest.raises(ValueError, match="Unexpected nvidia-smi line"):
        parse_nvidia_smi("No devices were found\n")


# --- node_probe ----------------------------------------------------------------------------------------


def replace_nvidia_smi(tmp_path: Path, body: str, name: str = "local") -> None:
    """Swap the stand-in nvidia-smi that make_node put on PATH for a script with ``body``."""
    script = tmp_path / f"bin-{name}" / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_probe_records_each_gpu_of_a_node_online(make_node):
    node = make_node(gpus=2)
    assert node.status == Node.Status.ONLINE
    assert node.last_seen_at is not None
    assert node.last_error == ""
    gpus = list(node.gpus.order_by("index"))
    assert [(g.index, g.label, g.name, g.memory_total_mb, g.present) for g in gpus] == [
        (0, "GPU0", "NVIDIA H100 80GB HBM3", 81559, True),
        (1, "GPU1", "NVIDIA H100 80GB HBM3", 81559, True),
    ]


def test_probe_without_nvidia_smi_gives_one_cpu_slot(make_node):
    node = make_node()
    assert shutil.which("nvidia-smi") is None
    assert node.status == Node.Status.ONLINE
    slot = node.gpus.get()
    assert (slot.index, slot.label, slot.name, slot.is_cpu) == (Gpu.CPU_INDEX, "CPU", "CPU", True)


def test_probe_marks_node_offline_with_nvidia_smi_error(make_node, tmp_path):
    node = make_node(gpus=1)
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    replace_nvidia_smi(tmp_path, f'echo "{message}"\nexit 9')
    node = node_probe(node=node)
    assert node.status == Node.Status.OFFLINE
    assert message in node.last_error
    assert "exit 9" in node.last_error
    assert Node.objects.get(pk=node.pk).status == Node.Status.OFFLINE


def test_probe_marks_node_offline_when_nvidia_smi_prints_nonsense(make_node, tmp_path):
    node = make_node(gpus=1)
    replace_nvidia_smi(tmp_path, "echo 'Segmentation fault'")
    node = node_probe(node=node)
    assert node.status == Node.Status.OFFLINE
    assert "Segmentation fault" in node.last_error


def test_probe_after_an_error_brings_node_back_online_and_clears_the_error(make_node, tmp_path):
    node = make_node(gpus=1)
    replace_nvidia_smi(tmp_path, "echo 'driver gone' >&2\nexit 1")
    assert node_probe(node=node).status == Node.Status.OFFLINE
    write_fake_nvidia_smi(tmp_path / "bin-local", [("NVIDIA H100 80GB HBM3", 81559)])
    node = node_probe(node=node)
    assert (node.status, node.last_error) == (Node.Status.ONLINE, "")


def test_gpu_that_disappears_is_kept_but_not_present(make_node, tmp_path):
    node = make_node(gpus=2)
    write_fake_nvidia_smi(tmp_path / "bin-local", [("NVIDIA H100 80GB HBM3", 81559)])
    node_probe(node=node)
    assert {(g.index, g.present) for g in node.gpus.all()} == {(0, True), (1, False)}
    # It comes back on a later probe.
    write_fake_nvidia_smi(tmp_path / "bin-local", [("NVIDIA H100 80GB HBM3", 81559)] * 2)
    node_probe(node=node)
    assert {(g.index, g.present) for g in node.gpus.all()} == {(0, True), (1, True)}


def test_cpu_slot_is_retired_when_gpus_appear(make_node, tmp_path, monkeypatch):
    node = make_node()
    assert node.gpus.get().is_cpu
    write_fake_nvidia_smi(tmp_path / "bin-local", [("Tesla T4", 15360)])
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin-local'}{os.pathsep}{os.environ['PATH']}")
    node_probe(node=node)
    assert {(g.label, g.present) for g in node.gpus.all()} == {("CPU", False), ("GPU0", True)}


def test_probe_updates_readings_of_a_known_gpu(make_node, tmp_path):
    node = make_node(gpus=1)
    replace_nvidia_smi(tmp_path, "echo '0, NVIDIA H100 80GB HBM3, 81559, 40000, 88'")
    node_probe(node=node)
    gpu = node.gpus.get()
    assert (gpu.memory_used_mb, gpu.utilization_pct) == (40000, 88)
    assert node.gpus.count() == 1


def test_probe_keeps_a_draining_node_draining(make_node):
    node = make_node(gpus=1)
    node_drain(node=node)
    node = node_probe(node=node)
    assert node.status == Node.Status.DRAINING
    assert node.last_seen_at is not None


def test_probe_leaves_a_disabled_node_alone(make_node, tmp_path):
    node = make_node(gpus=1)
    Node.objects.filter(pk=node.pk).update(enabled=False)
    node.refresh_from_db()
    replace_nvidia_smi(tmp_path, "exit 1")
    node = node_probe(node=node)
    assert node.status == Node.Status.ONLINE  # not probed, so not marked offline either


def test_probe_of_an_ssh_node_without_transport_is_offline_with_a_clear_message(db, tmp_path):
    # Nothing listens on port 1 of loopback: whatever the SSH support, this node cannot be reached.
    node = Node.objects.create(
        name="rented", kind=Node.Kind.SSH, host="127.0.0.1", port=1, username="root", workdir=str(tmp_path)
    )
    node = node_probe(node=node)
    assert node.status == Node.Status.OFFLINE
    assert node.last_error


# --- LocalConnection: processes --------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running (not a zombie) on this machine."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] != b"Z"


@pytest.fixture
def started():
    """Processes a test starts with LocalConnection; whatever is left is killed at the end."""
    processes = []
    yield processes
    for process, marker in processes:
        LocalConnection().kill_tree(process.pid, marker=marker, grace=0.5)
        process.wait(5)


def start_tree(started, command: str, marker: str):
    process = LocalConnection().start(["sh", "-c", command], marker=marker)
    started.append((process, marker))
    return process


def test_kill_tree_stops_every_process_of_the_group_and_says_so(started):
    process = start_tree(started, "sleep 60 & sleep 60", marker="41.1")
    members = wait_for(
        lambda: len(_group_members(process.pid, "41.1")) >= 2 and _group_members(process.pid, "41.1")
    )
    assert os.getpgid(process.pid) == process.pid
    assert LocalConnection().is_running(process.pid, marker="41.1")
    assert LocalConnection().kill_tree(process.pid, marker="41.1", grace=2) is True
    assert process.wait(5) is not None
    wait_for(lambda: not any(alive(pid) for pid in members), timeout=5, message="group members to die")
    assert not LocalConnection().is_running(process.pid, marker="41.1")
    assert LocalConnection().kill_tree(process.pid, marker="41.1", grace=2) is False  # nothing left


def test_kill_tree_with_another_jobs_marker_kills_nothing(started):
    process = start_tree(started, "sleep 60 & sleep 60", marker="42.1")
    members = wait_for(
        lambda: len(_group_members(process.pid, "42.1")) >= 2 and _group_members(process.pid, "42.1")
    )
    assert LocalConnection().kill_tree(process.pid, marker="42.2", grace=1) is False
    assert not LocalConnection().is_running(process.pid, marker="42.2")
    time.sleep(0.2)
    assert all(alive(pid) for pid in members)
    assert process.wait(0) is None


def test_kill_tree_escalates_to_sigkill_when_sigterm_is_ignored(started):
    process = start_tree(started, "trap '' TERM; sleep 60 & sleep 60", marker="43.1")
    members = wait_for(
        lambda: len(_group_members(process.pid, "43.1")) >= 2 and _group_members(process.pid, "43.1")
    )
    began = time.monotonic()
    assert LocalConnection().kill_tree(process.pid, marker="43.1", grace=0.5) is True
    assert time.monotonic() - began < 5
    assert process.wait(5) == -9
    wait_for(lambda: not any(alive(pid) for pid in members), timeout=5, message="group members to die")


def test_started_process_streams_merged_output_and_exit_code(tmp_path):
    process = LocalConnection().start(
        ["sh", "-c", 'echo "out $TALKFORGE_JOB $FOO"; echo err >&2; pwd; exit 3'],
        marker="44.1",
        cwd=str(tmp_path),
        env={"FOO": "bar"},
    )
    output = b""
    while (chunk := process.read(5)) != b"":
        assert chunk is not None, "no output within 5 s"
        output += chunk
    assert process.wait(5) == 3
    assert output.decode().splitlines() == ["out 44.1 bar", "err", str(tmp_path)]


def test_start_makes_a_missing_folder_and_a_missing_program_raises_a_node_error(tmp_path):
    process = LocalConnection().start(["pwd"], marker="45.1", cwd=str(tmp_path / "missing" / "deeper"))
    assert process.read(5) == f"{tmp_path / 'missing' / 'deeper'}\n".encode()
    assert process.wait(5) == 0
    (tmp_path / "file").write_text("x")
    with pytest.raises(NodeError, match="Could not create"):
        LocalConnection().start(["true"], marker="45.1", cwd=str(tmp_path / "file" / "below"))
    with pytest.raises(CommandNotFound, match="not found"):
        LocalConnection().start(["no-such-engine-binary"], marker="45.1")


def test_run_returns_output_and_code_and_times_out_with_a_node_error():
    result = LocalConnection().run(["sh", "-c", "echo hi; echo there >&2; exit 4"])
    assert (result.returncode, result.output) == (4, "hi\nthere\n")
    with pytest.raises(NodeError, match="did not finish within"):
        LocalConnection().run(["sleep", "5"], timeout=0.3)
    with pytest.raises(CommandNotFound):
        LocalConnection().run(["no-such-engine-binary"])


def test_bare_node_environment_comes_first_on_path(db, tmp_path):
    env_bin = tmp_path / "venv" / "bin"
    env_bin.mkdir(parents=True)
    node = Node(name="bare", workdir=str(tmp_path), runtime=Node.Runtime.BARE, environment=str(env_bin))
    result = LocalConnection(node).run(["sh", "-c", 'echo "$PATH"'])
    assert result.output.strip().split(os.pathsep)[0] == str(env_bin)


# --- LocalConnection: files ----------------------------------------------------------------------------


def test_put_and_get_copy_files_and_make_parent_folders(tmp_path):
    source = tmp_path / "aud.wav"
    source.write_bytes(b"RIFF" + os.urandom(4096))
    remote = tmp_path / "node" / "data" / "obama" / "aud.wav"
    LocalConnection().put(source, str(remote))
    assert remote.read_bytes() == source.read_bytes()
    back = tmp_path / "back" / "aud.wav"
    LocalConnection().get(str(remote), back)
    assert back.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in remote.parent.iterdir()) == ["aud.wav"]  # no partial file left


def test_put_is_atomic_a_reader_never_sees_a_partial_file(tmp_path, monkeypatch):
    source = tmp_path / "model.ply"
    source.write_bytes(b"new" * 10000)
    target = tmp_path / "node" / "model.ply"
    target.parent.mkdir()
    target.write_bytes(b"old")
    seen_during_copy = []
    real_copyfile = shutil.copyfile

    def copyfile(src, dst, *args, **kwargs):
        # While bytes are being written, the final name still holds the old, complete file.
        seen_during_copy.append((Path(dst) != target, target.read_bytes()))
        return real_copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    LocalConnection().put(source, str(target))
    assert seen_during_copy == [(True, b"old")]
    assert target.read_bytes() == b"new" * 10000


def test_exists_and_make_dirs(tmp_path):
    conn = LocalConnection()
    path = tmp_path / "jobs" / "7" / "output"
    assert not conn.exists(str(path))
    conn.make_dirs(str(path))
    conn.make_dirs(str(path))  # already there: fine
    assert conn.exists(str(path))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NodeError, match="Could not create"):
        conn.make_dirs(str(blocker / "sub"))


# --- runtime.wrap --------------------------------------------------------------------------------------


@pytest.fixture
def docker_node(db):
    node = Node.objects.create(
        name="dock",
        workdir="/srv/talkforge",
        runtime=Node.Runtime.DOCKER,
        docker_image="gaussiantalker:latest",
    )
    Gpu.objects.create(node=node, index=1, name="NVIDIA H100 80GB HBM3")
    Gpu.objects.create(node=node, index=Gpu.CPU_INDEX, name="CPU", present=False)
    return node


def test_wrap_for_docker_pins_the_gpu_names_the_container_and_mounts_the_workdir(docker_node):
    gpu = docker_node.gpus.get(index=1)
    invocation = wrap(
        node=docker_node,
        gpu=gpu,
        argv=["python", "train.py", "-s", "/srv/talkforge/data/obama"],
        name="talkforge-job-7-1",
        mounts=["/srv/talkforge"],
        cwd="/srv/talkforge/jobs/7",
        env={"WANDB_MODE": "disabled"},
    )
    argv = invocation.argv
    # docker run through the node's shell, as the node's user (tests/gpu_nodes/test_runtime.py runs it)
    assert argv[:5] == ["sh", "-c", DOCKER_AS_NODE_USER, "docker-run", "--rm"]
    assert argv[argv.index("--gpus") + 1] == "device=1"
    assert argv[argv.index("--name") + 1] == "talkforge-job-7-1"
    assert argv[argv.index("-v") + 1] == "/srv/talkforge:/srv/talkforge"
    assert argv[argv.index("-w") + 1] == "/srv/talkforge/jobs/7"
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"] == ["HOME=/tmp", "WANDB_MODE=disabled"]
    image_at = argv.index("gaussiantalker:latest")
    assert argv[image_at + 1 :] == ["python", "train.py", "-s", "/srv/talkforge/data/obama"]
    assert invocation.container == "talkforge-job-7-1"
    assert "CUDA_VISIBLE_DEVICES" not in invocation.env  # the container sees only its GPU as cuda:0


def test_wrap_for_docker_on_the_cpu_slot_asks_for_no_gpu(docker_node):
    cpu = docker_node.gpus.get(index=Gpu.CPU_INDEX)
    invocation = wrap(node=docker_node, gpu=cpu, argv=["python", "x.py"], name="c", mounts=[])
    assert "--gpus" not in invocation.argv
    assert "-v" not in invocation.argv


def test_wrap_for_bare_sets_cuda_visible_devices_only(make_node):
    node = make_node(gpus=2)
    gpu = node.gpus.get(index=1)
    argv = ["python", "-u", "train.py"]
    invocation = wrap(node=node, gpu=gpu, argv=argv, name="n", mounts=[node.workdir], cwd=node.workdir)
    assert invocation.argv == argv
    assert invocation.env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert invocation.cwd == node.workdir
    assert invocation.container is None


def test_wrap_for_bare_cpu_slot_hides_every_gpu(make_node):
    node = make_node()
    invocation = wrap(node=node, gpu=node.gpus.get(), argv=["python"], name="n", mounts=[], env={"A": "1"})
    assert invocation.env == {"A": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_wrapped_bare_command_really_sees_only_its_gpu(make_node, tmp_path):
    node = make_node(gpus=2)
    invocation = wrap(
        node=node,
        gpu=node.gpus.get(index=1),
        argv=["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"],
        name="n",
        mounts=[],
    )
    result = LocalConnection(node).run(invocation.argv, env=invocation.env)
    assert result.output.strip() == "1"


# --- admin ---------------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, staff):
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_node", "change_node"]))
    client.force_login(staff)
    return client


def test_admin_probe_now_action_probes_the_selected_nodes(staff_client, make_node, tmp_path):
    node = make_node(gpus=2)
    Node.objects.filter(pk=node.pk).update(status=Node.Status.OFFLINE, last_error="was unreachable")
    response = staff_client.post(
        reverse("admin:gpu_nodes_node_changelist"),
        {"action": "probe_now", "_selected_action": [node.pk]},
        follow=True,
    )
    assert response.status_code == 200
    node.refresh_from_db()
    assert (node.status, node.last_error) == (Node.Status.ONLINE, "")
    messages = [str(message) for message in response.context["messages"]]
    assert messages == ["local: online — GPU0, GPU1"]


def test_admin_probe_now_reports_a_failing_node_as_an_error(staff_client, make_node, tmp_path):
    node = make_node(gpus=1)
    replace_nvidia_smi(
        tmp_path, "echo 'Unable to determine the device handle for GPU0000:01:00.0' >&2\nexit 15"
    )
    response = staff_client.post(
        reverse("admin:gpu_nodes_node_changelist"),
        {"action": "probe_now", "_selected_action": [node.pk]},
        follow=True,
    )
    [message] = list(response.context["messages"])
    assert message.level_tag == "error"
    assert "offline" in str(message)
    assert "Unable to determine the device handle" in str(message)


def test_admin_node_pages_are_closed_to_non_staff(client, alice, make_node):
    make_node()
    client.force_login(alice)
    response = client.get(reverse("admin:gpu_nodes_node_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_node_page_lists_nodes_and_slots_for_signed_in_users(client, alice, make_node):
    make_node(gpus=1)
    client.force_login(alice)
    response = client.get(reverse("node-list"))
    assert response.status_code == 200
    assert b"GPU0 NVIDIA H100 80GB HBM3" in response.content
    assert b"Manage nodes in the admin" not in response.content


def test_a_local_node_of_another_machine_is_probed_by_its_own_worker_not_here(db, redis_db, tmp_path):
    from core.queues import queue_named

    node = Node.objects.create(name="far", kind=Node.Kind.LOCAL, workdir=str(tmp_path), host="gpu-box-7")
    assert not node.reachable_here
    probed = node_probe(node=node)
    assert probed.status == Node.Status.OFFLINE and probed.last_seen_at is None  # nothing ran here
    queued = queue_named(node.queue_name).jobs
    assert [(job.func_name, job.args) for job in queued] == [("gpu_nodes.tasks.node_probe_task", (node.pk,))]


def test_register_local_node_binds_the_node_to_this_machine(db, tmp_path):
    import socket

    from django.core.management import call_command

    call_command("register_local_node", "--name", "here", "--workdir", str(tmp_path / "work"))
    node = Node.objects.get(name="here")
    assert node.host == socket.gethostname() and node.reachable_here
    assert node.status == Node.Status.ONLINE


@pytest.mark.django_db(transaction=True)
def test_a_probe_never_waits_on_the_key_share_locks_a_finishing_job_takes(make_node):
    """A finishing job's commit checks its (deferred) foreign keys with KEY SHARE locks on its node and
    GPU rows. The probe used FOR UPDATE on both, which waits for those locks (and deadlocked with a commit
    waiting on the probe: bench/soak.py). Held KEY SHARE locks must not stop a probe."""
    import psycopg
    from django.db import connection

    from gpu_nodes.services import node_probe

    node = make_node(gpus=1)
    gpu = node.gpus.get()
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    )
    try:
        other.execute("SELECT 1 FROM gpu_nodes_node WHERE id = %s FOR KEY SHARE", [node.pk])
        other.execute("SELECT 1 FROM gpu_nodes_gpu WHERE id = %s FOR KEY SHARE", [gpu.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        try:
            probed = node_probe(node=node)  # raised "canceling statement due to lock timeout" before
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
    finally:
        other.rollback()
        other.close()
    assert probed.status == Node.Status.ONLINE, probed.last_error
    assert probed.gpus.get().present


def test_the_rq_dashboard_lists_every_node_queue_and_its_workers(admin_client, make_node, redis_db):
    """django-rq lists only RQ_QUEUES; node queues come from RQ's own registry in Redis."""
    from rq import Worker

    from core.queues import queue_named, redis_connection

    node = make_node("gpu7")
    queue_named(node.queue_name).enqueue("jobs.tasks.run_job", 0)
    worker = Worker([queue_named(node.queue_name)], connection=redis_connection(), name="w-gpu7")
    worker.register_birth()
    try:
        page = admin_client.get("/admin/django-rq/").content.decode()
    finally:
        worker.register_death()
    assert "node-gpu7" in page and "default" in page
    row = page[page.index("node-gpu7") :].split("</tr>")[0]
    queued = re.search(r'queues/(\d+)/">\s*(\d+)\s*<', row)
    workers = re.search(r'workers/\d+/">\s*(\d+)\s*<', row)
    assert (queued[2], workers[1]) == ("1", "1"), row  # one job waiting, one worker serving the queue


def test_stop_removes_the_container_then_kills_the_tree_even_without_docker(started, tmp_path, monkeypatch):
    calls = tmp_path / "docker-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]))  # no other docker
    for marker in ("44.1", "44.2"):
        process = start_tree(started, "sleep 60 & sleep 60", marker=marker)
        wait_for(lambda marker=marker, process=process: len(_group_members(process.pid, marker)) >= 2)
        LocalConnection().stop(process.pid, marker=marker, grace=2, container=f"talkforge-{marker}")
        assert process.wait(5) is not None and not LocalConnection().is_running(process.pid, marker=marker)
        (bin_dir / "docker").unlink(
            missing_ok=True
        )  # the second time, docker cannot be found: the tree goes anyway
    assert calls.read_text().splitlines() == ["rm -f talkforge-44.1"]
