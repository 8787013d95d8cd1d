"""Which connection reaches a node: the factory above both kinds (connections.py: the interface and this
machine; ssh.py: paramiko)."""

from __future__ import annotations

from .connections import LocalConnection, NodeConnection
from .models import Node
from .ssh import SSHConnection


def connection_for(node: Node) -> NodeConnection:
    """The connection to ``node``: this machine, or SSH (pooled transport per node per process)."""
    if node.kind == Node.Kind.LOCAL:
        return LocalConnection(node)
    return SSHConnection(node)
