"""The REST API: its schema and docs (served locally), nodes and GPUs, job lists, submission errors that
name the parameter, and the log endpoint."""

from __future__ import annotations

import os
import re

import pytest
from django.urls import reverse

from avatars.demo_kind import DEMO_TRAIN
from gpu_nodes.models import Gpu, Node
from jobs.models import Job, JobLogChunk
from jobs.services import job_submit
from tests.conftest import write_fake_nvidia_smi

DEMO = {"seconds": 1, "iterations": 10, "coarse_iterations": 10}


@pytest.fixture
def api(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def submit(owner, **params) -> Job:
    return job_submit(owner=owner, kind=DEMO_TRAIN, params={**DEMO, **params})


# --- schema and docs -----------------------------------------------------------------------------------


def test_schema_is_an_openapi_document_listing_jobs_nodes_and_tokens(api, alice):
    response = api(alice).get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Talkforge API"
    paths = set(schema["paths"])
    assert {
        "/api/jobs/",
        "/api/jobs/{id}/",
        "/api/jobs/{id}/cancel/",
        "/api/jobs/{id}/log/",
        "/api/nodes/",
        "/api/nodes/{id}/probe/",
        "/api/gpus/",
        "/api/token/",
    } <= paths
    assert "post" in schema["paths"]["/api/jobs/"]
    log_parameters = {p["name"] for p in schema["paths"]["/api/jobs/{id}/log/"]["get"]["parameters"]}
    assert {"after", "limit"} <= log_parameters


def test_schema_declares_the_token_header_scheme(api, alice):
    schema = api(alice).get("/api/schema/?format=json").json()
    schemes = schema.get("components", {}).get("securitySchemes", {})
    assert any(
        scheme.get("type") == "apiKey"
        and scheme.get("in") == "header"
        and scheme.get("name") == "Authorization"
        for scheme in schemes.values()
    ), schemes


def asset_urls(html: str) -> list[str]:
    """What the page loads: scripts, images and <link>ed files (not the targets of its <a> links)."""
    return re.findall(r'<(?:script|img|link)\b[^>]*?(?:src|href)="([^"]+)"', html)


def fetch_ok(client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, url
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body, url
    return body


def test_api_docs_page_serves_every_script_and_stylesheet_locally(api, alice):
    client = api(alice)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html), "an asset comes from another site"
    urls = asset_urls(html)
    scripts = [url for url in urls if url.endswith(".js")]
    styles = [url for url in urls if url.endswith(".css")]
    assert scripts and styles
    for url in urls:
        assert url.startswith("/static/"), url
        fetch_ok(client, url)
    assert 'url: "/api/schema/"' in html


@pytest.mark.parametrize("page", ["dashboard", "job-list", "node-list", "profile"])
def test_portal_pages_serve_their_assets_locally(api, alice, page):
    client = api(alice)
    html = client.get(reverse(page)).content.decode()
    assert "http://" not in html and "https://" not in html
    static = [url for url in asset_urls(html) if url.startswith("/static/")]
    assert "/static/css/site.css" in static
    for url in static:
        fetch_ok(client, url)


# --- nodes and GPUs ------------------------------------------------------------------------------------


def test_nodes_api_is_for_staff_only(api, client, alice, staff, make_node):
    node = make_node(gpus=1)
    assert client.get("/api/nodes/").status_code == 401
    assert api(alice).get("/api/nodes/").status_code == 403
    assert client.get(f"/api/nodes/{node.pk}/").status_code == 403
    assert client.post(f"/api/nodes/{node.pk}/probe/").status_code == 403
    assert client.post("/api/nodes/", {"name": "mine", "workdir": "/tmp"}).status_code == 403
    assert not Node.objects.filter(name="mine").exists()

    response = api(staff).get("/api/nodes/")
    assert response.status_code == 200
    [listed] = response.json()["results"]
    assert (listed["name"], listed["status"]) == ("local", "online")
    assert [gpu["label"] for gpu in listed["gpus"]] == ["GPU0"]


def test_staff_creates_a_node_through_the_api_and_it_is_probed(api, staff, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    write_fake_nvidia_smi(bin_dir, [("NVIDIA H100 80GB HBM3", 81559), ("NVIDIA H100 80GB HBM3", 81559)])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    workdir = tmp_path / "work"
    workdir.mkdir()
    response = api(staff).post(
        "/api/nodes/",
        {"name": "gpu-box", "kind": "local", "runtime": "bare", "workdir": str(workdir)},
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    node = Node.objects.get(name="gpu-box")
    assert node.status == Node.Status.ONLINE
    assert [gpu.label for gpu in node.gpus.order_by("index")] == ["GPU0", "GPU1"]
    assert [gpu["label"] for gpu in response.json()["gpus"]] == ["GPU0", "GPU1"]


def test_node_create_response_shows_the_probed_status(api, staff, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    write_fake_nvidia_smi(bin_dir, [("NVIDIA H100 80GB HBM3", 81559)])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    response = api(staff).post(
        "/api/nodes/",
        {"name": "gpu-box", "kind": "local", "runtime": "bare", "workdir": str(tmp_path)},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["status"] == "online"
    assert response.json()["last_seen_at"] is not None


def test_node_with_a_bad_name_is_refused_with_the_field_named(api, staff, tmp_path):
    response = api(staff).post(
        "/api/nodes/",
        {"name": "Bad Name/..", "kind": "local", "workdir": str(tmp_path)},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "lower-case letters" in response.json()["name"][0]
    assert not Node.objects.exists()


def test_staff_probe_drain_and_disable_through_the_api(api, staff, make_node):
    node = make_node(gpus=1)
    client = api(staff)
    Node.objects.filter(pk=node.pk).update(status=Node.Status.OFFLINE)
    assert client.post(f"/api/nodes/{node.pk}/probe/").json()["status"] == "online"
    assert client.post(f"/api/nodes/{node.pk}/drain/").json()["status"] == "draining"
    assert client.post(f"/api/nodes/{node.pk}/disable/").json()["enabled"] is False
    node.refresh_from_db()
    assert (node.status, node.enabled) == (Node.Status.DRAINING, False)


def test_gpus_api_shows_present_slots_to_signed_in_users_only(api, client, alice, make_node, tmp_path):
    node = make_node(gpus=2)
    Gpu.objects.filter(node=node, index=1).update(present=False)
    assert client.get("/api/gpus/").status_code == 401
    response = api(alice).get("/api/gpus/")
    assert response.status_code == 200
    [gpu] = response.json()["results"]
    assert (gpu["node"], gpu["label"], gpu["name"], gpu["memory_total_mb"]) == (
        "local",
        "GPU0",
        "NVIDIA H100 80GB HBM3",
        81559,
    )
    # Users learn a slot's load, not how to reach its node.
    assert set(gpu) == {
        "id",
        "node",
        "index",
        "label",
        "name",
        "memory_total_mb",
        "memory_used_mb",
        "utilization_pct",
        "updated_at",
    }


# --- job list ------------------------------------------------------------------------------------------


def test_job_list_filters_by_status_and_kind(api, alice):
    waiting, done, broken = submit(alice), submit(alice), submit(alice)
    Job.objects.filter(pk=done.pk).update(status=Job.Status.SUCCEEDED)
    Job.objects.filter(pk=broken.pk).update(status=Job.Status.FAILED)
    client = api(alice)

    def ids(query):
        response = client.get(f"/api/jobs/{query}")
        assert response.status_code == 200
        return [job["id"] for job in response.json()["results"]]

    assert ids("") == [broken.pk, done.pk, waiting.pk]  # newest first
    assert ids("?status=succeeded") == [done.pk]
    assert ids("?status=queued") == [waiting.pk]
    assert ids("?kind=demo_train") == [broken.pk, done.pk, waiting.pk]
    assert ids("?kind=render") == []
    assert ids("?status=failed&kind=demo_train") == [broken.pk]


def test_job_list_is_paginated(api, alice):
    jobs = [submit(alice) for _ in range(53)]
    client = api(alice)
    first = client.get("/api/jobs/").json()
    assert first["count"] == 53
    assert len(first["results"]) == 50
    assert first["previous"] is None
    assert first["next"].endswith("/api/jobs/?page=2")
    second = client.get("/api/jobs/?page=2").json()
    assert [job["id"] for job in second["results"]] == [job.pk for job in jobs[:3]][::-1]
    assert second["next"] is None
    assert client.get("/api/jobs/?page=3").status_code == 404


# --- submit --------------------------------------------------------------------------------------------


def post_job(client, body):
    return client.post("/api/jobs/", body, content_type="application/json")


def test_submit_creates_a_waiting_job_with_its_cleaned_params(api, alice):
    response = post_job(api(alice), {"kind": "demo_train", "params": {"iterations": 30, "seconds": "2.5"}})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["owner"], body["status"]) == ("demo_train", "alice", "queued")
    assert body["params"] == {"seconds": 2.5, "iterations": 30, "coarse_iterations": 500, "save_every": 500}
    assert Job.objects.get(pk=body["id"]).owner == alice


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"iterations": 5}, ["iterations", "10", "100000", "5"]),
        ({"iterations": "many"}, ["iterations", "whole number"]),
        ({"iterations": True}, ["iterations", "whole number"]),
        ({"coarse_iterations": 10**9}, ["coarse_iterations", "100000"]),
        ({"seconds": -1}, ["seconds", "0", "86400"]),
        ({"seconds": "soon"}, ["seconds", "number"]),
        ({"save_every": 0}, ["save_every"]),
        ({"learning_rate": 0.1}, ["learning_rate", "Unknown parameter"]),
    ],
)
def test_submit_with_a_bad_parameter_is_400_naming_it(api, alice, params, words):
    response = post_job(api(alice), {"kind": "demo_train", "params": params})
    assert response.status_code == 400
    message = response.json()["detail"]
    for word in words:
        assert word in message, message
    assert not Job.objects.exists()  # nothing half-created


def test_submit_of_an_unknown_kind_is_400(api, alice):
    response = post_job(api(alice), {"kind": "train_sora", "params": {}})
    assert response.status_code == 400
    assert "train_sora" in response.json()["kind"][0]
    assert not Job.objects.exists()


def test_submit_to_an_unknown_or_disabled_node_is_400(api, alice, make_node):
    client = api(alice)
    response = post_job(client, {"kind": "demo_train", "node": "nowhere"})
    assert response.status_code == 400
    assert "nowhere" in response.json()["node"][0]
    node = make_node()
    Node.objects.filter(pk=node.pk).update(enabled=False)
    response = post_job(client, {"kind": "demo_train", "node": "local"})
    assert response.status_code == 400
    assert "disabled" in response.json()["detail"]
    assert not Job.objects.exists()


def test_submit_with_params_that_are_not_an_object_is_400(api, alice):
    response = post_job(api(alice), {"kind": "demo_train", "params": [1, 2]})
    assert response.status_code == 400
    assert "params" in response.json()


def test_job_fields_cannot_be_set_through_submit(api, alice):
    response = post_job(
        api(alice), {"kind": "demo_train", "status": "succeeded", "progress": 1, "owner": "bob"}
    )
    assert response.status_code == 201
    job = Job.objects.get()
    assert (job.status, job.progress, job.owner) == (Job.Status.QUEUED, 0.0, alice)


# --- log -----------------------------------------------------------------------------------------------


@pytest.fixture
def logged_job(alice):
    job = submit(alice)
    lines = [f"line {n}" for n in range(1, 11)]
    lines[4] = ""  # an empty line is a line too
    for first, count in ((1, 3), (4, 2), (6, 5)):
        JobLogChunk.objects.create(
            job=job, first_line=first, line_count=count, text="\n".join(lines[first - 1 : first - 1 + count])
        )
    Job.objects.filter(pk=job.pk).update(log_line_count=10)
    return job, lines


@pytest.mark.parametrize(
    ("query", "first", "span"),
    [
        ("", 1, (0, 10)),
        ("?after=2&limit=3", 3, (2, 5)),  # crosses a chunk boundary
        ("?after=3&limit=2", 4, (3, 5)),  # exactly one chunk
        ("?after=4", 5, (4, 10)),
        ("?after=9&limit=5", 10, (9, 10)),
        ("?after=10", 11, (10, 10)),
        ("?after=50", 51, (10, 10)),
    ],
)
def test_log_endpoint_pages_through_lines(api, alice, logged_job, query, first, span):
    job, lines = logged_job
    response = api(alice).get(f"/api/jobs/{job.pk}/log/{query}")
    assert response.status_code == 200
    assert response.json() == {"first": first, "lines": lines[span[0] : span[1]], "total": 10}


@pytest.mark.parametrize(
    ("query", "field"),
    [("?after=two", "after"), ("?limit=0", "limit"), ("?after=-3", "after"), ("?limit=10001", "limit"),
     ("?after=1&after=2", "after")],
)  # fmt: skip
def test_log_endpoint_rejects_bad_or_repeated_numbers_naming_them(api, alice, logged_job, query, field):
    job, _ = logged_job
    response = api(alice).get(f"/api/jobs/{job.pk}/log/{query}")
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize(
    "query", ["?status=nope", "?avatar=abc", "?avatar=0", "?status=queued&status=failed", "?node=a&node=b"]
)
def test_job_list_filters_are_one_valid_value_each(api, alice, query):
    response = api(alice).get(f"/api/jobs/{query}")
    assert response.status_code == 400, response.content


def test_log_as_text_is_the_whole_log(api, alice, logged_job):
    job, lines = logged_job
    client = api(alice)
    response = client.get(f"/api/jobs/{job.pk}/log/?format=txt")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "\n".join(lines)
    # The job page's download link is that very URL.
    page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert f'href="/api/jobs/{job.pk}/log/?format=txt"' in page


def test_log_of_a_job_without_output_is_empty(api, alice):
    job = submit(alice)
    client = api(alice)
    assert client.get(f"/api/jobs/{job.pk}/log/").json() == {"first": 1, "lines": [], "total": 0}
    assert client.get(f"/api/jobs/{job.pk}/log/?format=txt").content == b""


def test_every_operation_has_a_summary_of_its_own_and_the_docs_link_home(api, alice):
    import yaml

    client = api(alice)
    schema = yaml.safe_load(client.get("/api/schema/").content)
    summaries = [(path, method, op.get("summary", "")) for path, ops in schema["paths"].items()
                 for method, op in ops.items()]  # fmt: skip
    assert len(summaries) >= 50
    missing = [(path, method) for path, method, summary in summaries if not summary]
    assert missing == []
    texts = [summary for _, _, summary in summaries]
    assert len(set(texts)) == len(texts), "two operations share a summary"
    assert schema["paths"]["/api/nodes/{id}/probe/"]["post"]["summary"].startswith("Probe a node")
    assert "videos, voices, conversations" in schema["info"]["description"]
    page = client.get("/api/docs/").content.decode()
    assert '<a href="/"><strong>← Talkforge</strong></a>' in page
