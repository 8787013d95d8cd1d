"""Removing deleted data from nodes, for good, even from nodes that are offline when it is deleted.

A deletion records each folder to remove as a ``NodeCleanup`` row in its own transaction
(``node_cleanup_schedule``), so the intent survives a crash or an offline node. ``node_cleanups_run``
then removes them with ``rm -rf`` over the node's connection: right after the deletion when the node is
online and reachable from this process, otherwise when the probe finds it online again (housekeeping
probes every node; a local node of another machine is probed, and cleaned, by its own worker).

Every path is checked before it reaches ``rm -rf``: absolute, no ``..``, and at least two levels below
the node's workdir (``data/<slug>``, ``jobs/<id>``), so a bad row can never take the workdir, one of its
shared folders (``data/``, ``output/``, ``engines/``) or anything outside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from django.db import transaction
from django.utils import timezone

from .connect import connection_for
from .connections import NodeError
from .models import Node, NodeCleanup

logger = logging.getLogger(__name__)


def path_inside_workdir(node: Node, path: str) -> str | None:
    """``path`` as it may be removed on ``node``, or None when it is not strictly inside the workdir at
    least two levels down (``<workdir>/data/<slug>``, never ``<workdir>/data``)."""
    workdir = PurePosixPath(node.workdir)
    candidate = PurePosixPath(path)
    if not workdir.is_absolute() or not candidate.is_absolute() or ".." in candidate.parts:
        return None
    if ".." in workdir.parts or workdir not in candidate.parents:
        return None
    if len(candidate.relative_to(workdir).parts) < 2:
        return None
    return str(candidate)


@dataclass
class CleanupReport:
    """What one run on one node did: paths removed, bytes they held (as ``du`` counted them), paths left
    pending (node unreachable, or ``rm`` failed) with the reason."""

    node: str
    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    pending: list[str] = field(default_factory=list)
    error: str = ""


@transaction.atomic
def node_cleanup_schedule(*, node: Node, paths: list[str], reason: str) -> list[NodeCleanup]:
    """Record that ``paths`` must be removed from ``node``. A path outside the node's workdir is refused
    (a ValueError: it is a bug in the caller, never something a user typed)."""
    rows = []
    for path in paths:
        checked = path_inside_workdir(node, path)
        if checked is None:
            raise ValueError(f"{path!r} is not inside the workdir {node.workdir!r} of node {node.name}")
        row, _ = NodeCleanup.objects.update_or_create(
            node=node, path=checked, defaults={"reason": reason[:200]}
        )
        rows.append(row)
    return rows


def node_can_clean_now(node: Node) -> bool:
    """Worth trying now from this process: enabled, online (or draining) and reachable from here."""
    return node.enabled and node.status in (Node.Status.ONLINE, Node.Status.DRAINING) and node.reachable_here


def _measure(conn, paths: list[str]) -> int:
    """Bytes under ``paths`` (for the log); 0 when ``du`` cannot tell."""
    try:
        result = conn.run(["du", "-s", "-b", "--", *paths], timeout=120)
    except NodeError:
        return 0
    total = 0
    for line in result.output.splitlines():
        size = line.split("\t", 1)[0]
        total += int(size) if size.isdigit() else 0
    return total


def node_cleanups_run(*, node: Node) -> CleanupReport:
    """Remove what is pending on ``node`` (when it can be reached from here). Rows go once their path is
    gone; a failure stays recorded (attempts, last error) and is logged as a warning."""
    report = CleanupReport(node=node.name)
    rows = list(NodeCleanup.objects.filter(node=node))
    if not rows:
        return report
    if not node_can_clean_now(node):
        report.pending = [row.path for row in rows]
        return report
    doomed = {row.pk: path_inside_workdir(node, row.path) for row in rows}
    unsafe = [row for row in rows if doomed[row.pk] is None]
    for row in unsafe:  # recorded before the workdir changed, say: never removed, kept for a person to see
        _failed(row, f"not inside the workdir {node.workdir} of the node: not removed")
        report.pending.append(row.path)
    rows = [row for row in rows if doomed[row.pk] is not None]
    if not rows:
        return report
    try:
        conn = connection_for(node)
        try:
            report.bytes = _measure(conn, [row.path for row in rows])
            result = conn.run(["rm", "-rf", "--", *(row.path for row in rows)], timeout=600)
            failures = {}
            if result.returncode != 0:
                # One of them failed: find which, so that the others are not tried again for ever.
                for row in rows:
                    single = conn.run(["rm", "-rf", "--", row.path], timeout=600)
                    if single.returncode != 0:
                        failures[row.pk] = single.output.strip()[:500] or f"rm exited {single.returncode}"
        finally:
            conn.close()
    except NodeError as error:
        for row in rows:
            _failed(row, str(error))
        report.pending += [row.path for row in rows]
        report.error = str(error)
        logger.warning("could not remove %d deleted folder(s) on node %s: %s", len(rows), node.name, error)
        return report
    for row in rows:
        if row.pk in failures:
            _failed(row, failures[row.pk])
            report.pending.append(row.path)
            logger.warning("could not remove %s on node %s: %s", row.path, node.name, failures[row.pk])
        else:
            NodeCleanup.objects.filter(pk=row.pk).delete()
            report.removed.append(row.path)
    if report.removed:
        logger.info(
            "removed %d deleted folder(s) (%d bytes) on node %s: %s",
            len(report.removed), report.bytes, node.name, ", ".join(report.removed),
        )  # fmt: skip
    return report


def _failed(row: NodeCleanup, error: str) -> None:
    NodeCleanup.objects.filter(pk=row.pk).update(
        attempts=row.attempts + 1, last_tried_at=timezone.now(), last_error=error[:2000]
    )
