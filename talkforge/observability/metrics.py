"""Prometheus metrics for ``/metrics``.

Two kinds, for two reasons:

- HTTP requests are counted and timed where they happen, by the middleware of each web process
  (prometheus_client's in-process registry; with several web processes behind one address, set
  ``PROMETHEUS_MULTIPROC_DIR`` to a folder they share and any of them answers for all).
- Everything about jobs, queues, GPUs and chat is computed from PostgreSQL and Redis at scrape time, a few
  aggregated queries per scrape. Jobs run in RQ workers on the GPU nodes — other processes on other
  machines — so an in-process histogram observed when a job finishes would live in a worker no scraper
  reaches, and prometheus_client's multiprocess mode only spans one machine's shared folder. The Job and
  Message rows already hold the figures (started_at/finished_at, the stage timings), so the database is
  the one place that sees every worker. The job-duration and chat histograms are cumulative over every
  row kept (they only drop when rows are deleted, which Prometheus reads as a counter reset).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
HTTP_REQUESTS = Counter(
    "talkforge_http_requests",
    "HTTP requests answered, by view, method and status.",
    ["view", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "talkforge_http_request_duration_seconds",
    "Time to answer an HTTP request (to its first byte for streamed responses), by view and method.",
    ["view", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
CHAT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)


def http_request_observe(*, view: str, method: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(view, method, str(status)).inc()
    HTTP_LATENCY.labels(view, method).observe(seconds)


def _histogram(name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=labels)


def _cumulative(row: dict, buckets: tuple, prefix: str, count: int) -> list[tuple[str, float]]:
    """``le_<i>`` counts of one aggregated row as Prometheus buckets (already cumulative: each is ≤ edge)."""
    edges = [(floatToGoString(edge), row[f"{prefix}{i}"] or 0) for i, edge in enumerate(buckets)]
    return [*edges, ("+Inf", count)]


def jobs_metrics():
    from jobs.kinds import KINDS
    from jobs.models import Job

    counts = {
        (row["kind"], row["status"]): row["n"]
        for row in Job.objects.values("kind", "status").annotate(n=Count("id")).order_by()
    }
    jobs = GaugeMetricFamily("talkforge_jobs", "Jobs by kind and state, now.", labels=["kind", "state"])
    for kind in sorted(set(KINDS) | {kind for kind, _ in counts}):
        for status in Job.Status.values:
            jobs.add_metric([kind, status], counts.get((kind, status), 0))
    yield jobs

    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    buckets = {
        f"le_{i}": Count("id", filter=Q(duration__lte=timedelta(seconds=edge)))
        for i, edge in enumerate(JOB_DURATION_BUCKETS)
    }
    rows = (
        Job.objects.filter(
            status__in=Job.TERMINAL_STATUSES, started_at__isnull=False, finished_at__isnull=False
        )
        .alias(duration=duration)
        .values("kind", "status")
        .annotate(n=Count("id"), total=Sum("duration"), **buckets)
        .order_by()
    )
    family = _histogram(
        "talkforge_job_duration_seconds",
        "Finished jobs' running time (last attempt's start to the end), by kind and final state.",
        ["kind", "state"],
    )
    for row in rows:
        total = row["total"].total_seconds() if row["total"] else 0.0
        family.add_metric(
            [row["kind"], row["status"]], _cumulative(row, JOB_DURATION_BUCKETS, "le_", row["n"]), total
        )
    yield family


def _timing_histogram(model, keys: tuple[str, ...], name: str, documentation: str, label: str):
    """One aggregate over ``model.timings`` (a JSON object of seconds) for each key: count, sum, buckets."""
    aliases = {f"t_{key}": Cast(KT(f"timings__{key}"), FloatField()) for key in keys}
    aggregates = {}
    for key in keys:
        has = Q(**{f"t_{key}__isnull": False})
        aggregates[f"{key}_n"] = Count("id", filter=has)
        aggregates[f"{key}_sum"] = Sum(f"t_{key}", filter=has)
        for i, edge in enumerate(CHAT_BUCKETS):
            aggregates[f"{key}_le_{i}"] = Count("id", filter=Q(**{f"t_{key}__lte": edge}))
    row = model.objects.annotate(**aliases).aggregate(**aggregates)
    family = _histogram(name, documentation, [label])
    for key in keys:
        family.add_metric(
            [key], _cumulative(row, CHAT_BUCKETS, f"{key}_le_", row[f"{key}_n"]), row[f"{key}_sum"] or 0.0
        )
    return family


def chat_metrics():
    from chat.models import Chunk, Message

    yield _timing_histogram(
        Message,
        Message.TIMING_KEYS,
        "talkforge_chat_stage_seconds",
        "Chat turns: seconds from the start of the turn until each stage (asr, llm_first_token, "
        "first_sentence, tts_first_audio, first_video_chunk, whole_reply).",
        "stage",
    )
    yield _timing_histogram(
        Chunk,
        ("tts", "render"),
        "talkforge_chat_sentence_seconds",
        "Chat reply sentences: seconds to synthesise each one's speech (tts) and render its video (render).",
        "step",
    )


def gpu_and_node_metrics():
    from gpu_nodes.models import Gpu, Node

    online = GaugeMetricFamily(
        "talkforge_node_online", "1 when the node's last probe found it online.", labels=["node"]
    )
    for name, status in Node.objects.values_list("name", "status"):
        online.add_metric([name], 1.0 if status == Node.Status.ONLINE else 0.0)
    yield online
    labels = ["node", "gpu", "model"]
    total = GaugeMetricFamily(
        "talkforge_gpu_memory_total_bytes", "GPU memory, at the last probe.", labels=labels
    )
    used = GaugeMetricFamily(
        "talkforge_gpu_memory_used_bytes", "GPU memory in use, at the last probe.", labels=labels
    )
    utilisation = GaugeMetricFamily(
        "talkforge_gpu_utilization_ratio", "GPU utilisation (0–1), at the last probe.", labels=labels
    )
    probed = GaugeMetricFamily(
        "talkforge_gpu_probe_timestamp_seconds",
        "When the GPU's row was last written (Unix time).",
        labels=labels,
    )
    gpus = Gpu.objects.filter(present=True, index__gte=0).values_list(
        "node__name", "index", "name", "memory_total_mb", "memory_used_mb", "utilization_pct", "updated_at"
    )
    for node, index, model, total_mb, used_mb, pct, updated_at in gpus:
        values = [node, str(index), model]
        total.add_metric(values, total_mb * 1024**2)
        used.add_metric(values, used_mb * 1024**2)
        utilisation.add_metric(values, pct / 100)
        probed.add_metric(values, updated_at.timestamp())
    yield from (total, used, utilisation, probed)


def queue_metrics():
    from rq import Queue

    from gpu_nodes.models import Node

    from .checks import health_redis, queue_workers

    names = [Node(name=name).queue_name for name in Node.objects.values_list("name", flat=True)]
    client = health_redis()
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(Queue.redis_queue_namespace_prefix + name)
        lengths = pipe.execute()
        workers = queue_workers(client, names)
    finally:
        client.close()
    length = GaugeMetricFamily(
        "talkforge_queue_length", "Jobs waiting in each node's RQ queue.", labels=["queue"]
    )
    live = GaugeMetricFamily(
        "talkforge_queue_workers", "Live RQ workers registered for each node's queue.", labels=["queue"]
    )
    for name, value in zip(names, lengths, strict=True):
        length.add_metric([name], value)
        live.add_metric([name], workers[name])
    yield from (length, live)


class ScrapeCollector:
    """Figures computed at scrape time; a source that fails is reported down and skipped, never a 500."""

    SOURCES = {
        "jobs": jobs_metrics,
        "chat": chat_metrics,
        "gpus": gpu_and_node_metrics,
        "queues": queue_metrics,
    }

    def collect(self):
        up = GaugeMetricFamily(
            "talkforge_scrape_source_up", "1 when this scrape could read the source.", labels=["source"]
        )
        for source, metrics in self.SOURCES.items():
            try:
                families = list(metrics())
            except Exception:
                logger.warning("metrics: could not read %s", source, exc_info=True)
                up.add_metric([source], 0.0)
                continue
            up.add_metric([source], 1.0)
            yield from families
        yield up


_scrape_registry = CollectorRegistry(auto_describe=False)
_scrape_registry.register(ScrapeCollector())


def metrics_text() -> bytes:
    """The exposition: this process's (or all web processes') HTTP figures, then the scrape-time ones."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_scrape_registry)
