"""Deleting a person's data for good: besides its rows, its media files (core/media.py) and its folders on
nodes.

A deletion service collects what goes into one ``Erasure`` while the rows still exist, calls ``schedule``
in the transaction that deletes them (each node folder becomes a ``NodeCleanup`` row, so a node that is
offline now is cleaned when it is back: gpu_nodes/cleanup.py), and the files go once that transaction has
committed (``carry_out`` runs on commit): a deletion that is rolled back removes nothing. Each erasure is
logged once, with who, what, how many files and bytes, and which nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from django.db import transaction

from core import media

from .cleanup import node_cleanup_schedule, node_cleanups_run, path_inside_workdir
from .models import Node

logger = logging.getLogger("talkforge.erasure")


@dataclass
class Erasure:
    """What a deletion removes besides rows. ``what`` and ``by`` name it in the log and on the nodes'
    cleanup rows ("avatar anna-3f9a1c", "alice")."""

    what: str
    by: str
    media: set[str] = field(default_factory=set)  # relative to the media store
    node_paths: dict[int, set[str]] = field(default_factory=dict)
    nodes: dict[int, Node] = field(default_factory=dict)

    def add_media(self, relative: str) -> None:
        """A media file or folder; blank ones (a field never filled) are ignored."""
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
            try:
                counted = media.delete(relative)
            except ValueError:
                logger.warning("%s: not removing %r: outside the media store", self.what, relative)
                continue
            except Exception as error:  # a disk or store error: logged, the rest still goes
                logger.warning("%s: could not remove %s: %s", self.what, relative, error)
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
