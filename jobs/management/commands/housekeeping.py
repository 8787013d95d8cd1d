"""Periodic upkeep: reconcile jobs, place waiting ones, probe nodes. ``manage.py housekeeping [--once]``."""

import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from core.queues import redis_connection
from gpu_nodes.services import nodes_probe_all
from jobs.heartbeat import housekeeping_beat
from jobs.reconcile import jobs_reconcile, upkeep_run

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Reconcile jobs and probe nodes, every few seconds (or once)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, once, **options):
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        last_probe = 0.0
        while True:
            close_old_connections()
            _beat()
            try:
                if time.monotonic() - last_probe >= settings.NODE_PROBE_INTERVAL:
                    nodes_probe_all()
                    last_probe = time.monotonic()
                jobs_reconcile()
                upkeep_run()
            except Exception:
                logger.exception("housekeeping round failed; trying again next round")
            _beat()  # a long round (probing many nodes) beats at its end as well
            if once or stop.wait(settings.HOUSEKEEPING_INTERVAL):
                return


def _beat() -> None:
    """Tell /readyz this process is alive; a Redis hiccup must not stop the round."""
    try:
        housekeeping_beat(redis_connection())
    except Exception:
        logger.warning("could not write the housekeeping heartbeat to Redis", exc_info=True)
