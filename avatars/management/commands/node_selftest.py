"""``manage.py node_selftest NODE --engine gaussiantalker|synctalk``: can this node run this engine?"""

from django.core.management.base import BaseCommand, CommandError

from avatars.engines.registry import ENGINES
from avatars.engines.selftest import selftest_run
from core.errors import ServiceError
from gpu_nodes.models import Node


class Command(BaseCommand):
    help = (
        "Self-test an engine on a node: runtime, GPU from inside it, compiled extensions, weight files, "
        "ffmpeg, free disk. Prints each check with its fix; exits 1 when any fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("node", help="the node's name")
        parser.add_argument(
            "--engine",
            action="append",
            choices=[name for name, engine in ENGINES.items() if not engine.stand_in],
            help="the engine to test (repeat for several; default: every engine the node lists)",
        )

    def handle(self, *args, node, engine, **options):
        found = Node.objects.filter(name=node).first()
        if found is None:
            raise CommandError(f"No node named {node!r}: see manage.py shell or the admin's node list.")
        names = engine or list(found.engines.values_list("engine", flat=True))
        if not names:
            raise CommandError(f"Node {node} lists no engines: add one in the admin or the API first.")
        failed = False
        for name in names:
            try:
                install = selftest_run(node=found, engine_name=name)
            except ServiceError as error:
                raise CommandError(str(error)) from None
            self.stdout.write(f"{found.name} · {name}")
            for item in install.selftest["checks"]:
                mark = "PASS" if item["ok"] else "FAIL"
                self.stdout.write(f"  {mark} {item['name']}: {item['detail']}")
                if not item["ok"]:
                    self.stdout.write(f"       fix: {item['fix']}")
            failed = failed or not install.selftest_passed
        if failed:
            raise CommandError("Some checks failed: fix them as each says, then run the self-test again.")
