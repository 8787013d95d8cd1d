"""Run an RQ worker for nodes' queues: ``manage.py worker [--node NAME ...]``.

A SimpleWorker runs jobs in its own process instead of forking a child per job: the engine already runs
as a separate process tree, so there is nothing to isolate, a job starts sooner, and what a worker loads
once (the Whisper model, for chat) stays loaded. Run one worker per GPU slot of the node.
"""

from django.core.management.base import BaseCommand, CommandError
from rq import SimpleWorker

from core.queues import queue_named, redis_connection
from gpu_nodes.models import Node


class Command(BaseCommand):
    help = "Run jobs for the given nodes (default: every enabled local node)."

    def add_arguments(self, parser):
        parser.add_argument("--node", action="append", default=[], help="node name (repeatable)")
        parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
        parser.add_argument("--name", default=None, help="worker name (default: RQ's)")

    def handle(self, *args, node, burst, name, **options):
        if node:
            nodes = list(Node.objects.filter(name__in=node))
            missing = set(node) - {n.name for n in nodes}
            if missing:
                raise CommandError(
                    f"No node named {', '.join(sorted(missing))}: register it in the admin first."
                )
        else:
            nodes = list(Node.objects.filter(enabled=True, kind=Node.Kind.LOCAL))
        if not nodes:
            raise CommandError(
                "No enabled local node: register one (manage.py register_local_node) or use --node."
            )
        queues = [queue_named(n.queue_name) for n in nodes]
        self.stdout.write(f"worker for {', '.join(q.name for q in queues)}")
        worker = SimpleWorker(queues, connection=redis_connection(), name=name)
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
