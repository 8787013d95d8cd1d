"""Deleting a person's data for good: besides its rows, its files under MEDIA_ROOT and its folders on nodes.

A deletion service collects what goes into one ``Erasure`` while the rows still exist, calls ``schedule``
in the transaction that deletes them (each node folder becomes a ``NodeCleanup`` row, so a node that is
offline now is cleaned when it is back: gpu_nodes/cleanup.py), and the files go once that transaction has
committed (``carry_out`` runs on commit): a deletion that is rolled back removes nothing. Each erasure is
logged once, with who, what, how many files and bytes, and which nodes.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction

from gpu_nodes.cleanup import node_cleanup_schedule, node_cleanups_run, path_inside_workdir
from gpu_nodes.models import Node

logger = logging.getLogger("talkforge.erasure")


@dataclass
class Erasure:
    """What a deletion removes besides rows. ``what`` and ``by`` name it in the log and on the nodes'
    cleanup rows ("avatar anna-3f9a1c", "alice")."""

    what: str
    by: str
    media: set[str] = field(default_factory=set)  # relative to MEDIA_ROOT
    node_paths: dict[int, set[str]] = field(default_factory=dict)
    nodes: dict[int, Node] = field(default_factory=dict)

    def add_media(self, relative: str) -> None:
        """A file or folder under MEDIA_ROOT; blank ones (a field never filled) are ignored."""
        if relative:
            self.media.add(relative)

    def add_node_path(self, node: Node, path: str | PurePosixPath) -> None:
        """A folder or file on ``node``. One outside its workdir (recorded before the workdir moved, say)
        is left alone, with a warning: nothing outside a workdir is ever removed."""
        checked = path_inside_workdir(node, str(path))
        if checked is None:
            logger.warning("%s: not removing %s on node %s: outside its workdir", self.what, path, node.name)
            return
        self.nodes[node.pk] = node
        self.node_paths.setdefault(node.pk, set()).add(checked)

    def schedule(self) -> None:
        """Record the node folders as pending cleanups. Call it inside the deleting transaction."""
        for node_id, paths in self.node_paths.items():
            ordered = sorted(paths)
            # A folder inside another one that goes anyway needs no row of its own.
            kept = [
                p for p in ordered if not any(PurePosixPath(o) in PurePosixPath(p).parents for o in ordered)
            ]
            node_cleanup_schedule(node=self.nodes[node_id], paths=kept, reason=f"{self.what} (by {self.by})")

    def on_commit(self) -> None:
        """Remove the files once the deleting transaction has committed."""
        transaction.on_commit(self.carry_out)

    def carry_out(self) -> None:
        """Remove the media files now, and the node folders on every node that can be reached now; log it.
        Never raises: the rows are gone already, and what could not be removed stays recorded."""
        files, size = 0, 0
        for relative in sorted(self.media):
            path = _media_path(relative)
            if path is None:
                logger.warning("%s: not removing %r: outside MEDIA_ROOT", self.what, relative)
                continue
            counted = _count(path)
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            except OSError as error:
                logger.warning("%s: could not remove %s: %s", self.what, path, error)
                continue
            files, size = files + counted[0], size + counted[1]
        node_notes = []
        for node_id in sorted(self.nodes):
            node = Node.objects.filter(pk=node_id).first()
            if node is None:
                continue
            try:
                report = node_cleanups_run(node=node)
            except Exception as error:  # the rows stay: the node's next probe tries again
                logger.warning("%s: removing its folders on node %s failed: %s", self.what, node.name, error)
                node_notes.append(f"{node.name} pending")
                continue
            if report.pending:
                node_notes.append(f"{node.name} pending ({len(report.pending)} folder(s))")
            else:
                node_notes.append(
                    f"{node.name} removed {len(report.removed)} folder(s), {report.bytes} bytes"
                )
        logger.info(
            "deleted %s by %s: %d media file(s), %d bytes; nodes: %s",
            self.what, self.by, files, size, "; ".join(node_notes) or "none",
        )  # fmt: skip


def _media_path(relative: str) -> Path | None:
    """The file or folder ``relative`` names, when it lies inside MEDIA_ROOT at least one folder down
    (``avatars/<slug>``, never ``avatars`` or MEDIA_ROOT itself)."""
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / relative).resolve()
    if root not in path.parents or len(path.relative_to(root).parts) < 2:
        return None
    return path


def _count(path: Path) -> tuple[int, int]:
    """Files and bytes under ``path``."""
    if path.is_file():
        return 1, path.stat().st_size
    files = size = 0
    for item in path.rglob("*") if path.is_dir() else ():
        if item.is_file() and not item.is_symlink():
            files, size = files + 1, size + item.stat().st_size
    return files, size
