"""A worker that dies (SIGKILL, as a crash or the OOM killer would) at a chosen point of the runner, for
the tests of what survives a lost worker. ``python tests/dying_worker.py settle --node NAME``."""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "talkforge.settings.test")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from jobs import runner  # noqa: E402


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


POINTS = {"settle": (runner.Attempt, "_settle")}

if __name__ == "__main__":
    owner, name = POINTS[sys.argv[1]]
    setattr(owner, name, die)
    call_command("worker", *sys.argv[2:])
