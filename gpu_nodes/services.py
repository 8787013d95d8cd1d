"""Registering nodes and finding out what they have (the probe)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.errors import ServiceError

from . import secrets
from .cleanup import node_cleanups_run
from .connect import connection_for
from .connections import CommandNotFound, NodeError
from .engine_catalog import real_engines
from .models import Gpu, Node, NodeEngine

logger = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int
    utilization_pct: int


def _number(value: str) -> int:
    # nvidia-smi prints "[N/A]" or "[Not Supported]" for readings some GPUs lack.
    value = value.strip()
    try:
        return int(float(value))
    except ValueError:
        return 0


def parse_nvidia_smi(output: str) -> list[GpuReading]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu
    --format=csv,noheader,nounits``: one line per GPU, comma-separated."""
    readings = []
    for line in output.splitlines():
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 5:
            raise ValueError(f"Unexpected nvidia-smi line: {line!r}")
        # A GPU name may itself hold commas; the last three fields are numbers.
        index, name = parts[0], ", ".join(parts[1:-3])
        total, used, utilization = parts[-3:]
        readings.append(GpuReading(int(index), name, _number(total), _number(used), _number(utilization)))
    return readings


def _validation_message(error) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    return str(error)


def node_probe(*, node: Node) -> Node:
    """Reach the node and find out what it has: OS, free disk in the workdir, the runtime (docker, or the
    bare environment), and its GPUs. Marks it online, or offline with the reason and what to do.

    A node without ``nvidia-smi`` is a CPU node with one slot (``--gpu CPU`` in the original
    prototype's CLI, docs/engines.md)."""
    if not node.enabled:
        return node
    if not node.reachable_here:
        # A local node of another machine: its own worker probes it (gpu_nodes.tasks.node_probe_task).
        from core.queues import queue_named

        queue_named(node.queue_name).enqueue("gpu_nodes.tasks.node_probe_task", node.pk, job_timeout=120)
        return node
    try:
        connection = connection_for(node)
        try:
            facts = _node_facts(node, connection)
            readings = _gpu_readings(connection)
        finally:
            connection.close()
    except (NodeError, ValueError) as error:
        return _node_mark_offline(node=node, error=str(error))
    node = _node_record_probe(node=node, readings=readings, facts=facts)
    try:
        # Folders of data deleted while the node was away go now that it is back (gpu_nodes/cleanup.py).
        node_cleanups_run(node=node)
    except Exception:
        logger.exception("removing deleted data on node %s failed; the next probe tries again", node.name)
    return node


def _gpu_readings(connection) -> list[GpuReading]:
    try:
        result = connection.run(NVIDIA_SMI_QUERY, timeout=30)
    except CommandNotFound:
        return []
    if result.returncode == 127:
        return []
    if result.returncode != 0:
        raise NodeError(
            f"nvidia-smi failed (exit {result.returncode}): {result.output.strip()[:500]}. "
            "Check the NVIDIA driver on the node."
        )
    return parse_nvidia_smi(result.output)


def _node_facts(node: Node, connection) -> dict:
    facts = {"os": connection.run(["uname", "-srm"], timeout=30).output.strip()}
    connection.make_dirs(node.workdir)
    facts["workdir_free_bytes"] = connection.free_bytes(node.workdir)
    if node.runtime == Node.Runtime.DOCKER:
        try:
            result = connection.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
        except CommandNotFound:
            raise NodeError(
                f"Docker is not installed on node {node.name}, whose runtime is docker: install Docker with "
                "the NVIDIA container toolkit, or switch the node to the bare runtime."
            ) from None
        if result.returncode != 0:
            raise NodeError(
                f"Docker on node {node.name} does not answer: {result.output.strip()[:300]}. "
                "Start the Docker daemon and make sure the node's user may use it (the docker group)."
            )
        facts["docker"] = result.output.strip()
    elif node.environment:
        if not connection.exists(node.environment):
            raise NodeError(
                f"The environment {node.environment} does not exist on node {node.name}: create it there, "
                "or correct the node's environment folder."
            )
        facts["environment"] = node.environment
    return facts


@transaction.atomic
def _node_record_probe(*, node: Node, readings: list[GpuReading], facts: dict) -> Node:
    # FOR NO KEY UPDATE, and plain UPDATEs of the slots: a job's row refers to its node and GPU, and
    # PostgreSQL checks those (deferred) foreign keys with KEY SHARE locks when the job's transaction
    # commits. FOR UPDATE conflicts with KEY SHARE, so a probe holding the node while a finishing job held
    # its GPU deadlocked one of them (bench/soak.py found it); NO KEY UPDATE does not.
    node = Node.objects.select_for_update(no_key=True).get(pk=node.pk)
    node.facts = facts
    seen = set()
    slots = [
        (r.index, {"name": r.name, "memory_total_mb": r.memory_total_mb, "memory_used_mb": r.memory_used_mb,
                   "utilization_pct": r.utilization_pct})
        for r in readings
    ] or [(Gpu.CPU_INDEX, {"name": "CPU"})]  # fmt: skip
    for index, values in slots:
        if not Gpu.objects.filter(node=node, index=index).update(present=True, **values):
            Gpu.objects.create(node=node, index=index, present=True, **values)
        seen.add(index)
    # Slots that disappeared stay as rows (jobs refer to them) but take no new work.
    node.gpus.exclude(index__in=seen).update(present=False)
    if node.status != Node.Status.DRAINING:
        node.status = Node.Status.ONLINE
    node.last_seen_at = timezone.now()
    node.last_error = ""
    node.save(update_fields=["status", "last_seen_at", "last_error", "facts"])
    return node


def _node_mark_offline(*, node: Node, error: str) -> Node:
    logger.warning("node %s is offline: %s", node.name, error)
    Node.objects.filter(pk=node.pk).update(status=Node.Status.OFFLINE, last_error=error[:2000])
    node.refresh_from_db()
    return node


def node_mark_unreachable(*, node: Node, error: str) -> None:
    """A job could not reach an online node: take it out of placement until a probe finds it back (a
    draining or disabled node keeps its state)."""
    marked = Node.objects.filter(pk=node.pk, status=Node.Status.ONLINE).update(
        status=Node.Status.OFFLINE, last_error=error[:2000]
    )
    if marked:
        logger.warning(
            "node %s is unreachable, taken out of placement until a probe finds it: %s", node, error
        )


def nodes_probe_all() -> list[Node]:
    """Probe every enabled node this process can reach (SSH nodes, and local nodes of this machine)."""
    return [node_probe(node=node) for node in Node.objects.filter(enabled=True) if node.reachable_here]


def node_register_local(*, name: str, workdir: str, **fields) -> Node:
    """Register a node on the machine of the workers that serve its queue, and probe it."""
    node = Node(name=name, workdir=workdir, kind=Node.Kind.LOCAL, **fields)
    _validate(node)
    node.save()
    return node_probe(node=node)


CONNECTION_FIELDS = ("host", "port", "username", "jump")


def node_update(*, node: Node, **fields) -> Node:
    """Change a node's settings. A new address means a new server: its host key must be confirmed again."""
    moved = node.kind == Node.Kind.SSH and any(
        key in fields and fields[key] != getattr(node, key) for key in CONNECTION_FIELDS
    )
    for key, value in fields.items():
        setattr(node, key, value)
    _validate(node)
    node.save()
    if moved:
        return node_fetch_host_key(node=node)
    return node


# --- SSH nodes ---------------------------------------------------------------------------------------


def ssh_credentials_sealed(*, password: str, private_key: str, key_passphrase: str) -> dict:
    """The Node fields that store an SSH login, encrypted (gpu_nodes/secrets.py): a private key (with its
    passphrase) wins over a password, and the other way of logging in is cleared. Nothing is checked."""
    if private_key:
        return {
            "private_key_encrypted": secrets.encrypt(private_key),
            "key_passphrase_encrypted": secrets.encrypt(key_passphrase),
            "password_encrypted": "",
        }
    return {"password_encrypted": secrets.encrypt(password), "private_key_encrypted": "",
            "key_passphrase_encrypted": ""}  # fmt: skip


def _clean_credentials(*, password: str, private_key: str, key_passphrase: str) -> dict:
    from .ssh import load_private_key

    if private_key:
        load_private_key(private_key, key_passphrase)  # refuses a bad key or passphrase now, not at first use
    elif not password:
        raise ServiceError("Give a password or a private key for the SSH login.")
    return ssh_credentials_sealed(password=password, private_key=private_key, key_passphrase=key_passphrase)


def node_register_ssh(
    *,
    name: str,
    host: str,
    username: str,
    workdir: str,
    port: int = 22,
    password: str = "",
    private_key: str = "",
    key_passphrase: str = "",
    runtime: str = Node.Runtime.BARE,
    docker_image: str = "",
    environment: str = "",
    jump: Node | None = None,
) -> Node:
    """Register an SSH node and fetch its host key. It takes no jobs until a staff user confirms the key's
    fingerprint (``node_confirm_host_key``); nothing about the server is trusted before that."""
    from .ssh import host_key_fetch

    if not host:
        raise ServiceError("Give the SSH node's host name or address.")
    if not username:
        raise ServiceError("Give the user name to log in as.")
    if jump is not None and (jump.kind != Node.Kind.SSH or jump.jump_id is not None):
        raise ServiceError(
            f"Jump host {jump.name} must be an SSH node reached directly (no jump of its own)."
        )
    try:
        credentials = _clean_credentials(
            password=password, private_key=private_key, key_passphrase=key_passphrase
        )
    except NodeError as error:
        raise ServiceError(str(error)) from None
    node = Node(
        name=name, kind=Node.Kind.SSH, host=host, port=port, username=username, workdir=workdir,
        runtime=runtime, docker_image=docker_image, environment=environment, jump=jump,
        status=Node.Status.OFFLINE, **credentials,
    )  # fmt: skip
    _validate(node)
    try:
        node.host_key_type, node.host_key, node.host_key_fingerprint = host_key_fetch(
            host=host, port=port, via=jump
        )
    except NodeError as error:
        raise ServiceError(str(error)) from None
    node.save()
    return node


def _validate(node: Node) -> None:
    try:
        node.full_clean()
    except ValidationError as error:
        raise ServiceError(_validation_message(error)) from error
    if not node.workdir.startswith("/"):
        raise ServiceError(f"workdir: {node.workdir!r} must be an absolute path on the node.")
    if node.runtime == Node.Runtime.DOCKER and not node.docker_image:
        raise ServiceError(
            "docker_image: the docker runtime needs an image for the CPU demo and the platform's scripts "
            "(each engine's own image is set under engines)."
        )


# --- engines on a node ---------------------------------------------------------------------------------


def engine_install_problem(
    node: Node, name: str, *, image: str, install_dir: str, environment: str
) -> str | None:
    """What is wrong with this install of engine ``name`` on ``node`` (API, admin), or None."""
    if node.runtime == Node.Runtime.DOCKER and not image:
        default = real_engines()[name].default_image
        return (
            f"{name} needs its image on docker node {node.name} (e.g. {default}, built from "
            f"docker/engines/{name}/)."
        )
    for label, path in (("install_dir", install_dir), ("environment", environment)):
        if path and not path.startswith("/"):
            return f"{name}'s {label} {path!r} must be an absolute path on the node."
    return None


@transaction.atomic
def node_set_engines(*, node: Node, engines: list[dict]) -> list[NodeEngine]:
    """Replace what ``node`` says about its engines: one entry per engine it can run, with its image
    (docker) or its repository folder and environment (bare). An unchanged entry keeps its self-test."""
    known = real_engines()
    seen: set[str] = set()
    rows = []
    for entry in engines:
        name = entry.get("engine", "")
        if name not in known:
            choices = ", ".join(known) or "none"
            raise ServiceError(
                f"engines: {name!r} is not an engine this platform runs (choose from {choices})."
            )
        if name in seen:
            raise ServiceError(f"engines: {name} is listed twice; give each engine once.")
        seen.add(name)
        image = entry.get("image", "").strip()
        install_dir = entry.get("install_dir", "").strip()
        environment = entry.get("environment", "").strip()
        fields = {"image": image, "install_dir": install_dir, "environment": environment}
        if problem := engine_install_problem(node, name, **fields):
            raise ServiceError(f"engines: {problem}")
        row = NodeEngine.objects.filter(node=node, engine=name).first() or NodeEngine(node=node, engine=name)
        changed = (row.image, row.install_dir, row.environment) != (image, install_dir, environment)
        row.image, row.install_dir, row.environment = image, install_dir, environment
        if changed:
            row.selftest, row.selftest_at = {}, None  # what was tested is not what is set now
        row.full_clean(validate_unique=False)
        row.save()
        rows.append(row)
    NodeEngine.objects.filter(node=node).exclude(engine__in=seen).delete()
    return rows


def node_set_credentials(
    *, node: Node, password: str = "", private_key: str = "", key_passphrase: str = ""
) -> Node:
    try:
        credentials = _clean_credentials(
            password=password, private_key=private_key, key_passphrase=key_passphrase
        )
    except NodeError as error:
        raise ServiceError(str(error)) from None
    Node.objects.filter(pk=node.pk).update(**credentials)
    node.refresh_from_db()
    return node


def node_fetch_host_key(*, node: Node) -> Node:
    """Read the server's current host key again (after a reinstall); it needs a new confirmation."""
    from .ssh import host_key_fetch

    try:
        key_type, key, fingerprint = host_key_fetch(host=node.host, port=node.port, via=node.jump)
    except NodeError as error:
        raise ServiceError(str(error)) from None
    Node.objects.filter(pk=node.pk).update(
        host_key_type=key_type, host_key=key, host_key_fingerprint=fingerprint, host_key_confirmed_at=None,
        status=Node.Status.OFFLINE, last_error="Host key fetched again: confirm its fingerprint.",
    )  # fmt: skip
    node.refresh_from_db()
    return node


def node_confirm_host_key(*, node: Node, fingerprint: str) -> Node:
    """A staff user checked the fingerprint (e.g. with ``ssh-keygen -lf`` on the server) and confirms it."""
    if not node.host_key:
        raise ServiceError(f"Node {node.name} has no fetched host key to confirm: fetch it first.")
    if fingerprint.strip() != node.host_key_fingerprint:
        raise ServiceError(
            f"The fingerprint you confirmed ({fingerprint.strip()}) is not the one the server presented "
            f"({node.host_key_fingerprint}). Check it again on the server: "
            "ssh-keygen -lf /etc/ssh/ssh_host_*.pub"
        )
    Node.objects.filter(pk=node.pk).update(host_key_confirmed_at=timezone.now())
    node.refresh_from_db()
    return node_probe(node=node)


def node_drain(*, node: Node) -> Node:
    """Running jobs finish; no new ones are placed here."""
    Node.objects.filter(pk=node.pk).update(status=Node.Status.DRAINING)
    node.refresh_from_db()
    return node


def node_resume(*, node: Node) -> Node:
    """End draining: the node takes new jobs again once a probe finds it well."""
    Node.objects.filter(pk=node.pk, status=Node.Status.DRAINING).update(status=Node.Status.OFFLINE)
    node.refresh_from_db()
    return node_probe(node=node)


def node_set_enabled(*, node: Node, enabled: bool) -> Node:
    Node.objects.filter(pk=node.pk).update(enabled=enabled)
    node.refresh_from_db()
    if enabled:
        return node_probe(node=node)
    return node
