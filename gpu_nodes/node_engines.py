"""Which engines a node can run, and where each lives there: its image (docker) or its repository folder
and environment (bare). Rows are NodeEngine; the engines themselves are in avatars/engines/registry.py."""

from __future__ import annotations

from django.db.models import Q

from .engine_catalog import ENGINES
from .models import Node, NodeEngine


def node_engine(node: Node, engine_name: str | None) -> NodeEngine | None:
    """The node's install of ``engine_name``, or None (no such row, or no engine named)."""
    if not engine_name:
        return None
    return NodeEngine.objects.filter(node=node, engine=engine_name).select_related("node").first()


def node_engine_image(node: Node, engine_name: str | None) -> str:
    """The image ``engine_name`` runs in on a docker node: its own, else the node's ``docker_image`` (the
    image of the CPU demo and of our own scripts)."""
    install = node_engine(node, engine_name)
    return (install.image if install is not None else "") or node.docker_image


def node_engine_dir(node: Node, engine_name: str) -> str:
    """The engine's repository folder on a bare node (``<workdir>/engines/<name>`` unless set)."""
    install = node_engine(node, engine_name)
    return install.repo_dir if install is not None else f"{node.workdir.rstrip('/')}/engines/{engine_name}"


def runs_engine_q(engine, prefix: str = "") -> Q:
    """A filter on nodes (``prefix`` "node__" from their GPUs) that can run ``engine``: a real engine needs
    its row on the node, with an image on a docker node; a stand-in (the demo) runs everywhere."""
    if engine is None or engine.stand_in:
        return Q()
    has_image = Q(**{f"{prefix}engines__image__gt": ""})
    is_bare = Q(**{f"{prefix}runtime": Node.Runtime.BARE})
    return Q(**{f"{prefix}engines__engine": engine.name}) & (has_image | is_bare)


def can_run(install: NodeEngine) -> bool:
    """Whether this row makes its node able to run the engine (the same rule as ``runs_engine_q``)."""
    return install.node.runtime == Node.Runtime.BARE or bool(install.image)


def engines_of(node: Node) -> list[str]:
    """The names of the engines ``node`` can run, stand-ins (the demo) included, in the registry's order."""
    installed = {row.engine for row in node.engines.all() if can_run(row)}
    return [name for name, engine in ENGINES.items() if name in installed or engine.stand_in]
