"""Register (or update) this machine as a local node and probe it: ``manage.py register_local_node``."""

import socket
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import ServiceError
from gpu_nodes.models import Node
from gpu_nodes.services import node_probe


class Command(BaseCommand):
    help = "Register this machine as a local node (bare runtime) and probe its GPUs."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="local")
        parser.add_argument(
            "--workdir", required=True, help="absolute folder for datasets, models and job files"
        )

    def handle(self, *args, name, workdir, **options):
        path = Path(workdir)
        if not path.is_absolute():
            raise CommandError(f"--workdir {workdir!r} must be an absolute path.")
        path.mkdir(parents=True, exist_ok=True)
        try:
            node, created = Node.objects.update_or_create(
                name=name,
                defaults={
                    "kind": Node.Kind.LOCAL,
                    "workdir": str(path),
                    "runtime": Node.Runtime.BARE,
                    # Bound to this machine: only processes here probe it and stop its jobs' processes.
                    "host": socket.gethostname(),
                },
            )
            node.full_clean()
        except (ServiceError, Exception) as error:
            raise CommandError(str(error)) from error
        node = node_probe(node=node)
        slots = ", ".join(gpu.label for gpu in node.gpus.filter(present=True))
        self.stdout.write(
            f"{'registered' if created else 'updated'} node {node.name}: {node.status}, slots {slots}"
        )
