"""Moving an avatar's preprocessed dataset between nodes, so a training placed on a node without the data
starts from the copy another node holds instead of preprocessing the video again (hours on real engines).

The dataset travels as one tar archive through the worker: packed on the source node, fetched, sent to the
target (each copy verified by size and SHA-256 by the connections), unpacked there. Nodes never need to
reach each other, which rented machines behind NAT usually cannot.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path, PurePosixPath

from django.conf import settings

from gpu_nodes.connect import connection_for
from gpu_nodes.connections import NodeConnection, NodeError
from gpu_nodes.models import Node
from jobs import events
from jobs.models import Job

from .layout import dataset_dir
from .models import DatasetCopy

PACK = 'mkdir -p "$1" && tar -cf "$2" -C "$3" "$4"'
UNPACK = 'mkdir -p "$1" && rm -rf "$1/$3" && tar -xf "$2" -C "$1" && rm -f "$2"'


def transfer_sources(avatar, *, exclude: Node | None = None):
    """Complete copies of the avatar's dataset on nodes that can hand them over now."""
    copies = avatar.datasets.filter(
        complete=True, node__enabled=True, node__status__in=(Node.Status.ONLINE, Node.Status.DRAINING)
    ).select_related("node")
    if exclude is not None:
        copies = copies.exclude(node=exclude)
    return copies


def dataset_ensure(job: Job, conn: NodeConnection) -> None:
    """Before a step that needs the dataset on ``job.node``: nothing to do when the node holds a complete
    copy; otherwise copy it from a node that does, and record the new copy."""
    avatar, target = job.avatar, job.node
    if avatar.datasets.filter(node=target, complete=True).exists():
        return
    sources = [copy for copy in transfer_sources(avatar, exclude=target) if copy.node.reachable_here]
    if not sources:
        raise NodeError(
            f"Node {target.name} does not hold {avatar.name}'s dataset and no reachable online node has a "
            "complete copy: train again without choosing a node, so that preprocessing runs again."
        )
    source = sources[0]
    Job.objects.filter(pk=job.pk).update(stage=f"copying the dataset from {source.node.name}")
    job.stage = f"copying the dataset from {source.node.name}"
    events.job_status_publish(job, on_commit=False)
    dataset_copy(source=source, target=target, target_conn=conn)


def dataset_copy(*, source: DatasetCopy, target: Node, target_conn: NodeConnection) -> DatasetCopy:
    avatar = source.avatar
    folder = PurePosixPath(source.path)
    token = secrets.token_hex(4)
    packed = str(PurePosixPath(source.node.workdir) / "transfers" / f"{avatar.slug}-{token}.tar")
    target_data = dataset_dir(avatar, target.workdir)
    arrived = str(PurePosixPath(target.workdir) / "transfers" / f"{avatar.slug}-{token}.tar")
    source_conn = connection_for(source.node)
    try:
        packing = source_conn.run(
            [
                "sh",
                "-c",
                PACK,
                "sh",
                str(PurePosixPath(packed).parent),
                packed,
                str(folder.parent),
                folder.name,
            ],
            timeout=3600,
        )
        if packing.returncode != 0:
            raise NodeError(
                f"Could not pack the dataset on {source.node.name}: {packing.output.strip()[:300]}"
            )
        with tempfile.TemporaryDirectory(dir=_scratch()) as scratch:
            local = Path(scratch) / "dataset.tar"
            source_conn.get(packed, local)
            target_conn.make_dirs(str(PurePosixPath(arrived).parent))
            target_conn.put(local, arrived)
    finally:
        source_conn.run(["rm", "-f", packed], timeout=120)
    unpacking = target_conn.run(
        ["sh", "-c", UNPACK, "sh", str(target_data.parent), arrived, target_data.name], timeout=3600
    )
    if unpacking.returncode != 0:
        raise NodeError(f"Could not unpack the dataset on {target.name}: {unpacking.output.strip()[:300]}")
    copy, _ = DatasetCopy.objects.update_or_create(
        avatar=avatar, node=target,
        defaults={"path": str(target_data), "complete": True, "stages": source.stages},
    )  # fmt: skip
    return copy


def _scratch() -> Path:
    # Scratch space on this worker's disk for a dataset relayed between two nodes, never media that other
    # machines read: it stays on the local disk whatever the media store is (MEDIA_ROOT is big and local).
    folder = Path(settings.MEDIA_ROOT) / "transfers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
