"""/healthz, /readyz and /metrics: what each checks and shows, who may scrape, and that a dead dependency
makes readiness fail quickly and by name. Real PostgreSQL and Redis; a closed port stands in for a dead
Redis."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rq import SimpleWorker

from core.queues import queue_named
from jobs.heartbeat import HOUSEKEEPING_HEARTBEAT_KEY, housekeeping_beat
from jobs.models import Job
from talkforge.observability import checks
from tests.conftest import free_port

TOKEN = "metrics-token-for-the-tests-0123456789"


def closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connection refused


@pytest.fixture
def alive(redis_db):
    """Housekeeping has just beaten."""
    housekeeping_beat(redis_db)
    return redis_db


# --- /healthz ------------------------------------------------------------------------------------------


def test_healthz_answers_without_touching_any_dependency(client):
    # No database fixture (pytest-django would fail any query) and a dead Redis: still alive.
    with override_settings(REDIS_URL=closed_redis_url()):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@override_settings(ALLOWED_HOSTS=["portal.example.com"], SECURE_SSL_REDIRECT=True)
def test_probes_by_address_over_plain_http_are_answered(client):
    # Load balancers probe the pod's address over HTTP: no DisallowedHost, no redirect to https.
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/accounts/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


# --- /readyz -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ok_when_every_dependency_answers(client, alive):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == {"database", "redis", "media", "workers", "housekeeping"}
    for result in body["checks"].values():
        assert result["ok"] is True
        assert 0 <= result["seconds"] < 2


@pytest.mark.django_db(transaction=True)
def test_readyz_names_a_dead_redis_quickly_and_tells_nothing_about_it(client, alive):
    url = closed_redis_url()
    started = time.monotonic()
    with override_settings(REDIS_URL=url):
        response = client.get("/readyz")
    assert time.monotonic() - started < 2
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "failing"
    assert "redis" in body["failing"] and "database" not in body["failing"]
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    # Only names, ok, seconds and a short reason: no address, port or exception text.
    text = response.content.decode()
    assert url.rsplit(":", 1)[1].split("/")[0] not in text
    assert "127.0.0.1" not in text and "Error " not in text


@pytest.mark.django_db(transaction=True)
def test_readyz_fails_workers_until_each_enabled_nodes_queue_has_a_worker(client, alive, make_node):
    node = make_node("gpu-a")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["workers"]
    assert response.json()["checks"]["workers"]["reason"] == "a node's queue has no worker"

    worker = SimpleWorker([queue_named(node.queue_name)], connection=alive)
    worker.register_birth()
    try:
        assert client.get("/readyz").status_code == 200
        # A disabled node needs no worker.
        node.enabled = False
        node.save()
        worker.register_death()
        assert client.get("/readyz").status_code == 200
    finally:
        worker.register_death()


@pytest.mark.django_db(transaction=True)
def test_readyz_fails_housekeeping_without_a_recent_heartbeat(client, redis_db, settings):
    assert client.get("/readyz").json()["checks"]["housekeeping"] == {
        "ok": False, "seconds": pytest.approx(0, abs=1), "reason": "no heartbeat"
    }  # fmt: skip
    redis_db.set(HOUSEKEEPING_HEARTBEAT_KEY, str(time.time() - settings.HOUSEKEEPING_STALE_AFTER - 5))
    assert client.get("/readyz").json()["checks"]["housekeeping"]["reason"] == "heartbeat is stale"

    from django.core.management import call_command

    call_command("housekeeping", "--once")  # a real round beats
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_readyz_gives_a_hanging_check_its_timeout_and_does_not_pile_up(client, alive, monkeypatch, settings):
    settings.READINESS_TIMEOUT = 0.3
    release = threading.Event()
    calls = []

    def hanging_media():
        calls.append(1)
        release.wait(10)

    monkeypatch.setitem(checks.CHECKS, "media", hanging_media)
    try:
        started = time.monotonic()
        first = client.get("/readyz")
        assert time.monotonic() - started < 1.5
        assert first.status_code == 503
        assert first.json()["failing"] == ["media"]
        assert first.json()["checks"]["media"]["reason"] == "timeout"
        # Still stuck: the next probe fails it at once instead of starting another thread.
        second = client.get("/readyz")
        assert second.json()["checks"]["media"]["reason"].startswith("timeout (still stuck")
        assert len(calls) == 1
    finally:
        release.set()


@pytest.mark.django_db(transaction=True)
def test_readyz_can_leave_the_gpu_side_out(client, alive, make_node):
    make_node("gpu-a")  # no worker
    assert client.get("/readyz").status_code == 503
    response = client.get("/readyz?skip=workers,housekeeping")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "redis", "media"}
    assert client.get("/readyz?skip=nonsense").status_code == 400


def test_media_check_writes_reads_and_removes_its_file(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    checks.check_media()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# --- /metrics: who may scrape --------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_do_not_exist_unless_configured(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_metrics_need_the_bearer_token(client, settings, redis_db):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 401
    allowed = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert allowed.status_code == 200
    assert allowed["Content-Type"].startswith("text/plain; version=")


@pytest.mark.django_db
def test_metrics_from_an_allowed_network(client, settings, redis_db):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.5").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.2.3.4").status_code == 200
    # X-Forwarded-For counts only through TRUSTED_PROXY_COUNT proxies.
    assert (
        client.get("/metrics", REMOTE_ADDR="192.168.1.5", HTTP_X_FORWARDED_FOR="10.2.3.4").status_code == 403
    )
    settings.TRUSTED_PROXY_COUNT = 1
    assert (
        client.get("/metrics", REMOTE_ADDR="192.168.1.5", HTTP_X_FORWARDED_FOR="10.2.3.4").status_code == 200
    )


# --- /metrics: what it shows ---------------------------------------------------------------------------


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples, name, **labels) -> float:
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []


def finished_job(owner, *, kind="demo_train", status="succeeded", seconds: float):
    end = timezone.now()
    return Job.objects.create(
        owner=owner, kind=kind, status=status, started_at=end - timedelta(seconds=seconds), finished_at=end
    )


def test_metrics_reflect_jobs_queues_gpus_and_chat(
    client, metrics_on, alices_things, alice, make_node, redis_db
):
    from chat.models import Chunk

    # Jobs: alices_things holds one succeeded demo job without times (counted, but it has no duration).
    finished_job(alice, seconds=10)
    finished_job(alice, seconds=100.0)
    finished_job(alice, kind="train", status="failed", seconds=4000)
    Job.objects.create(owner=alice, kind="train")
    Job.objects.create(owner=alice, kind="train")
    # Queues: two waiting in the GPU node's queue, no worker; one live worker on the other node's.
    gpu_node = make_node("gpu-a", gpus=2)
    queue = queue_named(gpu_node.queue_name)
    queue.enqueue("os.getcwd")
    queue.enqueue("os.getcwd")
    worker = SimpleWorker([queue_named(alices_things["node"].queue_name)], connection=redis_db)
    worker.register_birth()
    # GPUs: the probe found two 80 GB cards; one is half used.
    gpu_node.gpus.filter(index=1).update(memory_used_mb=40000, utilization_pct=75)
    # Chat: a reply with its stage timings, and two of its sentences.
    reply = alices_things["reply"]
    reply.timings = {"llm_first_token": 0.4, "first_sentence": 0.9, "whole_reply": 6.5}
    reply.save()
    Chunk.objects.create(message=reply, index=0, text="a", timings={"tts": 0.3, "ready": 1.0, "render": 1.2})
    Chunk.objects.create(message=reply, index=1, text="b", timings={"tts": 0.6, "ready": 2.0})

    try:
        samples = scrape(client)
    finally:
        worker.register_death()

    for source in ("jobs", "chat", "gpus", "queues"):
        assert value(samples, "talkforge_scrape_source_up", source=source) == 1
    assert value(samples, "talkforge_jobs", kind="demo_train", state="succeeded") == 3
    assert value(samples, "talkforge_jobs", kind="train", state="failed") == 1
    assert value(samples, "talkforge_jobs", kind="train", state="queued") == 2
    assert value(samples, "talkforge_jobs", kind="chat_reply", state="running") == 0

    duration = "talkforge_job_duration_seconds"
    assert value(samples, f"{duration}_count", kind="demo_train", state="succeeded") == 2
    assert value(samples, f"{duration}_sum", kind="demo_train", state="succeeded") == pytest.approx(
        110, abs=0.1
    )
    assert value(samples, f"{duration}_bucket", kind="demo_train", state="succeeded", le="5.0") == 0
    assert value(samples, f"{duration}_bucket", kind="demo_train", state="succeeded", le="15.0") == 1
    assert value(samples, f"{duration}_bucket", kind="demo_train", state="succeeded", le="120.0") == 2
    assert value(samples, f"{duration}_bucket", kind="demo_train", state="succeeded", le="+Inf") == 2
    assert value(samples, f"{duration}_bucket", kind="train", state="failed", le="3600.0") == 0
    assert value(samples, f"{duration}_bucket", kind="train", state="failed", le="7200.0") == 1

    assert value(samples, "talkforge_queue_length", queue="node-gpu-a") == 2
    assert value(samples, "talkforge_queue_workers", queue="node-gpu-a") == 0
    assert value(samples, "talkforge_queue_workers", queue=alices_things["node"].queue_name) == 1

    assert value(samples, "talkforge_node_online", node="gpu-a") == 1
    gpu1 = {"node": "gpu-a", "gpu": "1", "model": "NVIDIA H100 80GB HBM3"}
    assert value(samples, "talkforge_gpu_memory_total_bytes", **gpu1) == 81559 * 1024**2
    assert value(samples, "talkforge_gpu_memory_used_bytes", **gpu1) == 40000 * 1024**2
    assert value(samples, "talkforge_gpu_utilization_ratio", **gpu1) == 0.75
    assert value(samples, "talkforge_gpu_utilization_ratio", node="gpu-a", gpu="0") == 0
    assert time.time() - value(samples, "talkforge_gpu_probe_timestamp_seconds", **gpu1) < 600
    # The CPU slot of a node without GPUs is no GPU.
    assert not [s for s in samples["talkforge_gpu_memory_total_bytes"] if s.labels["node"] == "local"]

    stage = "talkforge_chat_stage_seconds"
    assert value(samples, f"{stage}_count", stage="llm_first_token") == 1
    assert value(samples, f"{stage}_bucket", stage="llm_first_token", le="0.25") == 0
    assert value(samples, f"{stage}_bucket", stage="llm_first_token", le="0.5") == 1
    assert value(samples, f"{stage}_sum", stage="whole_reply") == pytest.approx(6.5)
    assert value(samples, f"{stage}_count", stage="asr") == 0
    sentence = "talkforge_chat_sentence_seconds"
    assert value(samples, f"{sentence}_count", step="tts") == 2
    assert value(samples, f"{sentence}_sum", step="tts") == pytest.approx(0.9)
    assert value(samples, f"{sentence}_count", step="render") == 1


def test_metrics_survive_a_dead_redis(client, metrics_on, alice, make_node):
    make_node()
    finished_job(alice, seconds=3)
    with override_settings(REDIS_URL=closed_redis_url()):
        samples = scrape(client)
    assert value(samples, "talkforge_scrape_source_up", source="queues") == 0
    assert value(samples, "talkforge_scrape_source_up", source="jobs") == 1
    assert value(samples, "talkforge_jobs", kind="demo_train", state="succeeded") == 1


def test_http_requests_are_counted_by_view_method_and_status(client, metrics_on, alice, redis_db):
    def count(samples, **labels):
        found = [
            s.value
            for s in samples.get("talkforge_http_requests_total", [])
            if all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return found[0] if found else 0

    before = scrape(client)
    client.get("/healthz")
    client.get("/healthz")
    client.get("/accounts/login/")
    client.get("/no/such/page/")
    client.generic("BREW", "/healthz")
    after = scrape(client)

    def delta(**labels):
        return count(after, **labels) - count(before, **labels)

    assert delta(view="healthz", method="GET", status="200") == 2
    assert delta(view="login", method="GET", status="200") == 1
    assert delta(view="not_found", status="404") == 1
    assert delta(view="healthz", method="other") == 1
    latency = [
        s for s in after["talkforge_http_request_duration_seconds_count"] if s.labels["view"] == "login"
    ]
    assert latency and latency[0].value >= 1
    # Paths never become labels (ids would make endless series).
    assert "/no/such/page/" not in json.dumps([s.labels for s in after["talkforge_http_requests_total"]])


# --- request ids ---------------------------------------------------------------------------------------


def test_every_response_carries_a_request_id(client):
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="lb-abc.123")["X-Request-ID"] == "lb-abc.123"
    # Something that could forge a log line is replaced.
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID='x" level=ERROR')["X-Request-ID"]
    assert len(replaced) == 32 and '"' not in replaced


# --- under daphne (ASGI) ---------------------------------------------------------------------------------


@pytest.fixture
def daphne(transactional_db, processes, redis_db):
    from tests.conftest import wait_for

    port = free_port()
    processes.start(
        ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "talkforge.asgi:application"],
        "daphne",
        METRICS_TOKEN=TOKEN,
        ALLOWED_HOSTS="portal.example.com",
        SECURE_SSL_REDIRECT="true",
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(up, timeout=30, message="daphne")
    return base


def test_endpoints_under_daphne(daphne, redis_db):
    housekeeping_beat(redis_db)
    with urllib.request.urlopen(f"{daphne}/readyz", timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"
        assert response.headers["X-Request-ID"]
    request = urllib.request.Request(f"{daphne}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    assert 'talkforge_http_requests_total{method="GET",status="200",view="readyz"} 1.0' in text
