"""SSH nodes against a real OpenSSH server on loopback (tests/ssh_server.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from core.errors import ServiceError
from gpu_nodes import secrets
from gpu_nodes.connect import connection_for
from gpu_nodes.connections import CommandNotFound, NodeError, _group_members
from gpu_nodes.models import Node
from gpu_nodes.services import (
    node_confirm_host_key,
    node_fetch_host_key,
    node_probe,
    node_register_ssh,
    node_set_credentials,
)
from gpu_nodes.ssh import pool, upload_partial_path
from tests.conftest import free_port


def test_registration_pins_the_host_key_only_after_a_staff_user_confirms_its_fingerprint(ssh_server, db):
    folder = ssh_server.user_folder("pin")
    node = node_register_ssh(
        name="pin", host=ssh_server.host, port=ssh_server.port, username=ssh_server.user,
        workdir=str(folder / "work"), password=ssh_server.password,
    )  # fmt: skip
    assert node.host_key_fingerprint == ssh_server.host_fingerprint  # what ssh-keygen -l says
    assert not node.host_key_pinned

    unconfirmed = node_probe(node=node)
    assert unconfirmed.status == Node.Status.OFFLINE
    assert "has not been confirmed" in unconfirmed.last_error

    with pytest.raises(ServiceError, match="is not the one the server presented"):
        node_confirm_host_key(node=node, fingerprint="SHA256:" + "A" * 43)
    confirmed = node_confirm_host_key(node=node, fingerprint=ssh_server.host_fingerprint)
    assert confirmed.status == Node.Status.ONLINE, confirmed.last_error
    assert [gpu.label for gpu in confirmed.gpus.all()] == ["CPU"]  # no nvidia-smi on that PATH
    assert confirmed.facts["os"].startswith("Linux")
    assert confirmed.facts["workdir_free_bytes"] > 0


@pytest.mark.parametrize("login", ["password", "key"])
def test_password_and_key_logins_reach_the_node_and_find_its_gpus(make_ssh_node, login):
    node = make_ssh_node(name=f"login-{login}", gpus=2, login=login)
    assert node.status == Node.Status.ONLINE, node.last_error
    assert [(gpu.label, gpu.name) for gpu in node.gpus.all()] == [
        ("GPU0", "NVIDIA A100-SXM4-80GB"),
        ("GPU1", "NVIDIA A100-SXM4-80GB"),
    ]


def test_a_passphrase_protected_key_works_and_a_wrong_passphrase_is_refused_up_front(
    make_ssh_node, ssh_server
):
    node = make_ssh_node(
        name="protected", private_key=ssh_server.encrypted_key, key_passphrase=ssh_server.key_passphrase
    )
    assert node.status == Node.Status.ONLINE, node.last_error
    with pytest.raises(ServiceError, match="passphrase"):
        node_set_credentials(node=node, private_key=ssh_server.encrypted_key, key_passphrase="wrong")
    with pytest.raises(ServiceError, match="passphrase"):
        node_set_credentials(node=node, private_key=ssh_server.encrypted_key)


def test_credentials_are_encrypted_at_rest(make_ssh_node, ssh_server):
    node = make_ssh_node(name="secret", login="password")
    stored = Node.objects.values_list("password_encrypted", flat=True).get(pk=node.pk)
    assert ssh_server.password not in stored
    assert secrets.decrypt(stored) == ssh_server.password


def test_a_wrong_password_marks_the_node_offline_with_what_to_do(make_ssh_node):
    node = make_ssh_node(name="wrongpw", login="password")
    node = node_set_credentials(node=node, password="not-the-password")
    node = node_probe(node=node)
    assert node.status == Node.Status.OFFLINE
    assert "refused the login" in node.last_error and "Enter the credentials again" in node.last_error


def test_an_unreachable_host_is_refused_at_registration(db):
    with pytest.raises(ServiceError, match="Cannot reach 127.0.0.1"):
        node_register_ssh(
            name="nowhere", host="127.0.0.1", port=free_port(), username="x", workdir="/tmp/x", password="x"
        )
    assert not Node.objects.exists()


def test_a_changed_host_key_stops_the_node_and_names_both_fingerprints(make_ssh_node, ssh_server):
    node = make_ssh_node(name="changed")
    pinned = node.host_key_fingerprint
    ssh_server.new_host_key()
    try:
        pool.drop(node)
        node = node_probe(node=node)
        assert node.status == Node.Status.OFFLINE
        assert "changed" in node.last_error
        assert pinned in node.last_error and ssh_server.host_fingerprint in node.last_error
        # A staff user who checked the new key confirms it; the node works again.
        node = node_fetch_host_key(node=node)
        node = node_confirm_host_key(node=node, fingerprint=ssh_server.host_fingerprint)
        assert node.status == Node.Status.ONLINE, node.last_error
    finally:
        pool.drop(node)


def test_missing_runtime_and_commands_are_named(make_ssh_node):
    node = make_ssh_node(name="runtime")
    Node.objects.filter(pk=node.pk).update(environment=node.environment + "-missing")
    node = node_probe(node=Node.objects.get(pk=node.pk))
    assert node.status == Node.Status.OFFLINE
    assert "does not exist" in node.last_error and "environment" in node.last_error

    Node.objects.filter(pk=node.pk).update(runtime=Node.Runtime.DOCKER, docker_image="gaussiantalker:latest")
    node = node_probe(node=Node.objects.get(pk=node.pk))
    assert node.status == Node.Status.OFFLINE
    assert "Docker" in node.last_error
    assert "install Docker" in node.last_error or "Start the Docker daemon" in node.last_error

    with pytest.raises(CommandNotFound, match="no-such-command"):
        connection_for(node).run(["no-such-command", "--flag"])


def test_the_transport_is_reused_and_reopened_when_broken(make_ssh_node):
    node = make_ssh_node(name="pooled")
    conn = connection_for(node)
    assert conn.run(["true"]).returncode == 0
    first = pool._transports[node.pk][0]
    assert conn.run(["echo", "again"]).output == "again\n"
    assert pool._transports[node.pk][0] is first
    first.close()  # the connection breaks
    assert conn.run(["echo", "back"]).output == "back\n"
    assert pool._transports[node.pk][0] is not first


def test_arguments_and_environment_arrive_exactly_as_given(make_ssh_node):
    node = make_ssh_node(name="quoting")
    conn = connection_for(node)
    tricky = ["it's", "$HOME", "a b", "`id`", "; rm -rf /", "ünïcode"]
    assert conn.run(["printf", "%s\\n", *tricky]).output.splitlines() == tricky
    result = conn.run(["sh", "-c", 'printf %s "$TF_VALUE"'], env={"TF_VALUE": "$(whoami) 'q'"})
    assert result.output == "$(whoami) 'q'"
    with pytest.raises(NodeError, match="not allowed"):
        conn.run(["true"], env={"BAD;NAME": "x"})


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_as(owner_folder, path, data: bytes) -> None:
    """Leave a file the SSH user owns, as its own broken transfer would have."""
    path.write_bytes(data)
    os.chown(path, owner_folder.stat().st_uid, owner_folder.stat().st_gid)


def test_files_go_both_ways_intact_atomically_and_resume(make_ssh_node, ssh_server, tmp_path):
    node = make_ssh_node(name="files")
    conn = connection_for(node)
    source = tmp_path / "video.mp4"
    source.write_bytes(os.urandom(3_000_000))
    remote_dir = ssh_server.user_folder("files-remote")
    remote = str(remote_dir / "data" / "video.mp4")

    conn.put(source, remote)
    assert sha256(remote_dir / "data" / "video.mp4") == sha256(source)
    assert not list((remote_dir / "data").glob(".video.mp4.*part"))

    # A broken upload left the first megabyte; the next attempt completes it.
    again = str(remote_dir / "data" / "again.mp4")
    write_as(remote_dir, Path(upload_partial_path(again, sha256(source))), source.read_bytes()[:1_000_000])
    conn.put(source, again)
    assert sha256(remote_dir / "data" / "again.mp4") == sha256(source)

    # A damaged partial file is detected by its hash and replaced.
    damaged = str(remote_dir / "data" / "damaged.mp4")
    write_as(remote_dir, Path(upload_partial_path(damaged, sha256(source))), b"x" * 1_000_000)
    conn.put(source, damaged)
    assert sha256(remote_dir / "data" / "damaged.mp4") == sha256(source)

    back = tmp_path / "back" / "video.mp4"
    back.parent.mkdir()
    (back.parent / ".video.mp4.part").write_bytes(source.read_bytes()[:500_000])
    conn.get(remote, back)
    assert sha256(back) == sha256(source)
    assert not (back.parent / ".video.mp4.part").exists()


def test_a_full_disk_on_the_node_is_reported_before_sending(make_ssh_node, ssh_server, tmp_path):
    node = make_ssh_node(name="fulldisk")
    small = ssh_server.user_folder("small")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(small)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("this machine cannot mount a small tmpfs to fill")
    try:
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(2_000_000))
        with pytest.raises(NodeError, match="not enough free space"):
            connection_for(node).put(source, str(small / "big.bin"))
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_kill_tree_stops_the_whole_remote_group_and_only_with_the_right_marker(make_ssh_node):
    node = make_ssh_node(name="killer")
    conn = connection_for(node)
    process = conn.start(
        ["sh", "-c", "sleep 60 & sleep 60 & echo started; wait"], marker="7.1", cwd=node.workdir
    )
    assert process.read(5) == b"started\n"
    members = _group_members(process.pid, "7.1")  # same machine: the remote tree is visible here
    assert len(members) == 3 and conn.is_running(process.pid, marker="7.1")

    assert conn.kill_tree(process.pid, marker="8.1", grace=1) is False  # not that job's processes
    assert _group_members(process.pid, "7.1") == members

    assert conn.kill_tree(process.pid, marker="7.1", grace=2) is True
    assert _group_members(process.pid, "7.1") == []
    assert not conn.is_running(process.pid, marker="7.1")
    assert process.wait(10) is not None


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", password="root-password-1")


def test_staff_registers_an_ssh_node_in_the_admin_and_the_password_is_never_shown_again(
    ssh_server, superuser, client
):
    folder = ssh_server.user_folder("admin")
    client.force_login(superuser)
    response = client.post(
        "/admin/gpu_nodes/node/add/",
        {
            "name": "admin-ssh", "kind": "ssh", "host": ssh_server.host, "port": ssh_server.port,
            "username": ssh_server.user, "password": ssh_server.password, "workdir": str(folder / "work"),
            "runtime": "bare", "environment": "", "enabled": "on",
            "gpus-TOTAL_FORMS": "0", "gpus-INITIAL_FORMS": "0", "engines-TOTAL_FORMS": "0",
            "engines-INITIAL_FORMS": "0",
        },
        follow=True,
    )  # fmt: skip
    assert response.status_code == 200, (response.redirect_chain, response.content[:500])
    node = Node.objects.get(name="admin-ssh")
    assert node.host_key_fingerprint == ssh_server.host_fingerprint and not node.host_key_pinned
    assert ssh_server.host_fingerprint in response.content.decode()  # shown for the staff user to check
    page = client.get(f"/admin/gpu_nodes/node/{node.pk}/change/").content.decode()
    assert ssh_server.host_fingerprint in page
    assert ssh_server.password not in page and node.password_encrypted not in page


def test_admin_refuses_an_unreachable_ssh_node_with_the_reason(superuser, client):
    client.force_login(superuser)
    response = client.post(
        "/admin/gpu_nodes/node/add/",
        {
            "name": "gone", "kind": "ssh", "host": "127.0.0.1", "port": free_port(), "username": "x",
            "password": "x", "workdir": "/srv/x", "runtime": "bare", "enabled": "on",
            "gpus-TOTAL_FORMS": "0", "gpus-INITIAL_FORMS": "0", "engines-TOTAL_FORMS": "0",
            "engines-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    assert response.status_code == 200
    assert "Cannot reach 127.0.0.1" in response.content.decode()
    assert not Node.objects.exists()


def test_the_api_registers_confirms_and_never_returns_credentials(ssh_server, staff, client):
    client.force_login(staff)
    folder = ssh_server.user_folder("api")
    response = client.post(
        "/api/nodes/",
        {"name": "api-ssh", "kind": "ssh", "host": ssh_server.host, "port": ssh_server.port,
         "username": ssh_server.user, "private_key": ssh_server.private_key, "workdir": str(folder / "work")},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["host_key_fingerprint"] == ssh_server.host_fingerprint and body["host_key_confirmed"] is False
    node = Node.objects.get(name="api-ssh")
    for text in (response.content.decode(), client.get("/api/nodes/").content.decode()):
        assert "PRIVATE KEY" not in text and node.private_key_encrypted not in text
        assert "private_key" not in text and "password" not in text

    wrong = client.post(f"/api/nodes/{node.pk}/confirm_host_key/", {"fingerprint": "SHA256:nope"})
    assert wrong.status_code == 400 and "not the one the server presented" in wrong.json()["detail"]
    right = client.post(
        f"/api/nodes/{node.pk}/confirm_host_key/", {"fingerprint": ssh_server.host_fingerprint}
    )
    assert right.status_code == 200 and right.json()["status"] == "online", right.json()


def test_a_node_behind_a_jump_host_is_reached_through_it(make_ssh_node, ssh_server):
    jump = make_ssh_node(name="bastion", gpus=0)
    inner = make_ssh_node(name="inner", gpus=1, jump=jump)
    assert inner.status == Node.Status.ONLINE, inner.last_error
    assert inner.jump == jump
    assert connection_for(inner).run(["echo", "through"]).output == "through\n"


def test_a_node_that_goes_down_is_marked_offline_and_gets_work_again_when_back(make_ssh_node, ssh_server):
    node = make_ssh_node(name="flaky")
    ssh_server.stop()
    try:
        pool.drop(node)
        node = node_probe(node=node)
        assert node.status == Node.Status.OFFLINE
        assert "Cannot reach" in node.last_error
    finally:
        ssh_server.start()
    node = node_probe(node=node)
    assert node.status == Node.Status.ONLINE, node.last_error


def test_a_key_the_server_does_not_accept_is_refused_with_what_to_do(make_ssh_node, tmp_path):
    from tests.ssh_server import keygen

    node = make_ssh_node(name="wrongkey")
    keygen(tmp_path / "stranger")
    node = node_set_credentials(node=node, private_key=(tmp_path / "stranger").read_text())
    pool.drop(node)
    node = node_probe(node=node)
    assert node.status == Node.Status.OFFLINE
    assert "refused the login" in node.last_error


def test_two_workers_sending_one_file_at_once_both_succeed(make_ssh_node, ssh_server, tmp_path):
    """The first jobs on a fresh node upload the same engine script at once; a shared partial file made
    one of them fail (or move a half-written file into place)."""
    import threading

    node = make_ssh_node(name="twice")
    source = tmp_path / "train.py"
    source.write_bytes(os.urandom(4_000_000))
    folder = ssh_server.user_folder("twice-remote")
    remote = str(folder / "engines" / "train.py")
    errors = []

    def send():
        try:
            connection_for(node).put(source, remote)
        except NodeError as error:
            errors.append(error)

    # Two writers (threads here; workers are processes): each names its own partial file.
    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sha256(folder / "engines" / "train.py") == sha256(source)
    assert not list((folder / "engines").glob("*.part"))
