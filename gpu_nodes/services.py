"""Registering nodes and finding out what they have (the probe)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from talkforge.errors import ServiceError

from .connections import CommandNotFound, NodeError, connection_for
from .models import Gpu, Node

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


@transaction.atomic
def node_create(*, name: str, workdir: str, kind: str = Node.Kind.LOCAL, **fields) -> Node:
    node = Node(name=name, workdir=workdir, kind=kind, **fields)
    try:
        node.full_clean()
    except Exception as error:  # ValidationError → one readable message
        raise ServiceError(_validation_message(error)) from error
    node.save()
    return node


def _validation_message(error) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    return str(error)


def node_probe(*, node: Node) -> Node:
    """Ask the node what GPUs it has and mark it online or offline.

    A node without ``nvidia-smi`` is a CPU node with one slot (the seed's ``--gpu CPU``)."""
    if not node.enabled:
        return node
    try:
        connection = connection_for(node)
        try:
            result = connection.run(NVIDIA_SMI_QUERY, timeout=30)
            if result.returncode == 127:
                raise CommandNotFound("nvidia-smi not found")
            if result.returncode != 0:
                raise NodeError(
                    f"nvidia-smi failed (exit {result.returncode}): {result.output.strip()[:500]}"
                )
            readings = parse_nvidia_smi(result.output)
        except CommandNotFound:
            readings = []
        finally:
            connection.close()
    except (NodeError, ValueError) as error:
        return _node_mark_offline(node=node, error=str(error))
    return _node_record_probe(node=node, readings=readings)


@transaction.atomic
def _node_record_probe(*, node: Node, readings: list[GpuReading]) -> Node:
    node = Node.objects.select_for_update().get(pk=node.pk)
    seen = set()
    for reading in readings:
        Gpu.objects.update_or_create(
            node=node,
            index=reading.index,
            defaults={
                "name": reading.name,
                "memory_total_mb": reading.memory_total_mb,
                "memory_used_mb": reading.memory_used_mb,
                "utilization_pct": reading.utilization_pct,
                "present": True,
            },
        )
        seen.add(reading.index)
    if not readings:
        Gpu.objects.update_or_create(
            node=node, index=Gpu.CPU_INDEX, defaults={"name": "CPU", "present": True}
        )
        seen.add(Gpu.CPU_INDEX)
    # Slots that disappeared stay as rows (jobs refer to them) but take no new work.
    node.gpus.exclude(index__in=seen).update(present=False)
    if node.status != Node.Status.DRAINING:
        node.status = Node.Status.ONLINE
    node.last_seen_at = timezone.now()
    node.last_error = ""
    node.save(update_fields=["status", "last_seen_at", "last_error"])
    return node


def _node_mark_offline(*, node: Node, error: str) -> Node:
    logger.warning("node %s is offline: %s", node.name, error)
    Node.objects.filter(pk=node.pk).update(status=Node.Status.OFFLINE, last_error=error[:2000])
    node.refresh_from_db()
    return node


def nodes_probe_all() -> list[Node]:
    return [node_probe(node=node) for node in Node.objects.filter(enabled=True)]


def node_drain(*, node: Node) -> Node:
    """Running jobs finish; no new ones are placed here."""
    Node.objects.filter(pk=node.pk).update(status=Node.Status.DRAINING)
    node.refresh_from_db()
    return node


def node_set_enabled(*, node: Node, enabled: bool) -> Node:
    Node.objects.filter(pk=node.pk).update(enabled=enabled)
    node.refresh_from_db()
    if enabled:
        return node_probe(node=node)
    return node
