"""RQ entry points of the nodes app."""

from django.db import close_old_connections

from .models import Node


def node_probe_task(node_id: int) -> str:
    """Probe a local node from a worker on its own machine (queued when another machine asked)."""
    from .services import node_probe

    close_old_connections()
    node = Node.objects.filter(pk=node_id).first()
    if node is None or not node.reachable_here:
        return "skipped"
    return node_probe(node=node).status
