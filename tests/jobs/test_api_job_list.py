"""The job list (GET /api/jobs/): the shape JobSerializer documents, built from plain rows in a constant
number of queries whatever the number of jobs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.services import api_token_rotate
from core.statements import Slot
from gpu_nodes.models import Gpu, Node
from jobs.api.serializers import JobSerializer
from jobs.models import Job
from jobs.selectors import JOB_LIST


def make_jobs(owner, count: int, *, node=None, gpus=()) -> list[Job]:
    now = timezone.now()
    jobs = []
    for i in range(count):
        gpu = gpus[(i // 2) % len(gpus)] if gpus and i % 2 == 0 else None
        jobs.append(
            Job(
                owner=owner, kind="demo_train", status="succeeded" if gpu else "queued",
                stage="done" if gpu else "", progress=0.25 * (i % 5), eta_seconds=12.5 if i % 3 else None,
                params={"seconds": 1, "iterations": i}, metrics={"psnr": 31.5} if gpu else {},
                result={"checkpoints": ["a.pth"]} if gpu else {}, error="boom" if i == 1 else "",
                node=node if gpu else None, gpu=gpu, attempts=1, max_attempts=2,
                timeout_seconds=600 if i % 4 == 0 else None, log_line_count=i,
                placed_at=now - timedelta(seconds=i) if gpu else None,
                started_at=now.replace(microsecond=0) if gpu else None,
                finished_at=now if gpu else None,
            )
        )  # fmt: skip
    created = Job.objects.bulk_create(jobs)
    created[-1].parent = created[0]
    created[-1].save(update_fields=["parent"])
    return created


@pytest.fixture
def slots(db):
    node = Node.objects.create(name="n1", kind=Node.Kind.LOCAL, workdir="/tmp/n1")
    gpus = [
        Gpu.objects.create(node=node, index=0, name="H100"),
        Gpu.objects.create(node=node, index=1, name="H100"),
    ]
    cpu_node = Node.objects.create(name="cpu", kind=Node.Kind.LOCAL, workdir="/tmp/cpu")
    cpu = Gpu.objects.create(node=cpu_node, index=Gpu.CPU_INDEX, name="CPU")
    return node, gpus, cpu


def get_list(client, key: str, path: str = "/api/jobs/"):
    response = client.get(path, HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_list_writes_what_job_serializer_writes(client, alice, slots):
    node, gpus, cpu = slots
    make_jobs(alice, 7, node=node, gpus=gpus)
    Job.objects.create(owner=alice, kind="demo_train", node=cpu.node, gpu=cpu, status="succeeded")
    key = api_token_rotate(user=alice)

    listed = get_list(client, key)["results"]

    expected = json.loads(json.dumps(JobSerializer(Job.objects.filter(owner=alice), many=True).data))
    assert listed == expected
    assert [list(row) for row in listed] == [list(JobSerializer.Meta.fields)] * len(listed)
    assert {row["gpu"] for row in listed} == {"GPU0", "GPU1", "CPU", None}
    assert any(row["parent"] for row in listed)


def test_the_list_takes_the_same_queries_for_2_jobs_or_a_full_page(client, alice, bob, slots):
    node, gpus, _ = slots
    key = api_token_rotate(user=alice)
    make_jobs(bob, 5, node=node, gpus=gpus)

    def queries() -> list[str]:
        get_list(client, key)  # the token's last use is written at most once a minute: not in the count
        with CaptureQueriesContext(connection) as captured:
            body = get_list(client, key)
        return body, [query["sql"] for query in captured.captured_queries]

    make_jobs(alice, 2, node=node, gpus=gpus)
    few_body, few = queries()
    make_jobs(alice, 80, node=node, gpus=gpus)
    many_body, many = queries()

    assert (few_body["count"], len(few_body["results"])) == (2, 2)
    assert (many_body["count"], len(many_body["results"])) == (82, 50)
    assert len(few) == len(many) == 2  # the token, the page with the list's count in it
    [page_query] = [sql for sql in many if 'FROM "jobs_job"' in sql]
    assert "COUNT(" in page_query and '"jobs_job"."id" IN (SELECT' in page_query  # the page's ids first
    # Owner, node and GPU names come joined into that one query.
    assert 'JOIN "accounts_user"' in page_query and 'JOIN "gpu_nodes_gpu"' in page_query
    assert all(row["owner"] == "alice" for row in many_body["results"])


def test_pages_past_the_end_and_empty_lists_end_as_before(client, alice, bob, slots):
    """A page with no rows has no row to carry the count: the count is asked of the jobs alone (no join),
    and the answers are DRF's (an empty first page, 404 past the end or for a page that is no number)."""
    node, gpus, _ = slots
    make_jobs(alice, 53, node=node, gpus=gpus)
    alice_key, bob_key = api_token_rotate(user=alice), api_token_rotate(user=bob)

    second = get_list(client, alice_key, "/api/jobs/?page=2")
    assert (second["count"], len(second["results"]), second["next"]) == (53, 3, None)
    assert second["previous"].endswith("/api/jobs/")
    first = get_list(client, alice_key)
    assert first["next"].endswith("/api/jobs/?page=2")
    assert {row["id"] for row in first["results"]}.isdisjoint(row["id"] for row in second["results"])

    get_list(client, bob_key)
    with CaptureQueriesContext(connection) as captured:
        empty = get_list(client, bob_key)
    assert empty == {"count": 0, "next": None, "previous": None, "results": []}
    [count_query] = [query["sql"] for query in captured.captured_queries if "COUNT(*)" in query["sql"]]
    assert 'FROM "jobs_job"' in count_query and "JOIN" not in count_query

    for page in ("3", "0", "-1", "two", "99999999999999999999"):
        response = client.get(f"/api/jobs/?page={page}", HTTP_AUTHORIZATION=f"Token {alice_key}")
        assert response.status_code == 404, page
        assert "Invalid page" in response.json()["detail"]


def test_filters_still_apply_to_the_rows(client, alice, slots):
    node, gpus, _ = slots
    make_jobs(alice, 6, node=node, gpus=gpus)
    key = api_token_rotate(user=alice)
    succeeded = get_list(client, key, "/api/jobs/?status=succeeded")
    assert succeeded["count"] == 3
    assert {row["status"] for row in succeeded["results"]} == {"succeeded"}
    on_node = get_list(client, key, "/api/jobs/?node=n1")
    assert on_node["count"] == 3
    assert {row["node"] for row in on_node["results"]} == {"n1"}


def test_one_compiled_list_serves_every_user_only_their_jobs(client, alice, bob, slots, django_user_model):
    """The list's SQL is compiled once per process and shape (jobs/selectors.py JOB_LIST), the user's id
    and the filters' values given at each request: taking turns on a warm statement, each sees their own
    jobs only, and staff everyone's."""
    node, gpus, _ = slots
    make_jobs(alice, 4, node=node, gpus=gpus)
    make_jobs(bob, 6, node=node, gpus=gpus)
    staff = django_user_model.objects.create_user("staff", password="staff-password-1", is_staff=True)
    keys = {user.username: api_token_rotate(user=user) for user in (alice, bob, staff)}
    for _ in range(2):
        for name, everything, succeeded in (
            ("alice", 4, 2),
            ("bob", 6, 3),
            ("staff", 10, 5),
            ("alice", 4, 2),
        ):
            listed = get_list(client, keys[name])
            assert listed["count"] == everything
            owners = {row["owner"] for row in listed["results"]}
            assert owners == ({"alice", "bob"} if name == "staff" else {name})
            filtered = get_list(client, keys[name], "/api/jobs/?status=succeeded&node=n1")
            assert filtered["count"] == succeeded
            assert {row["status"] for row in filtered["results"]} == {"succeeded"}


def test_the_database_joins_and_writes_the_kept_rows_only(alice, bob, slots):
    """Page first (selectors._job_list): of the person's 80 jobs, the page's 50 ids are picked from the jobs
    alone, and only those 50 rows are joined and have their times and JSON written as text (to_char), not
    every job the person has; the count still counts all 80."""
    node, gpus, _ = slots
    make_jobs(alice, 80, node=node, gpus=gpus)
    make_jobs(bob, 3, node=node, gpus=gpus)
    compiled = JOB_LIST.compiled({"everyone": False, "filters": ()})
    values = {"owner": alice.pk, "limit": 50, "offset": 0}
    params = [values[part.name] if isinstance(part, Slot) else part for part in compiled.params]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {compiled.sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def steps(step):
        yield step
        for child in step.get("Plans", []):
            yield from steps(child)

    every = list(steps(plan[0]["Plan"]))

    def rows(step) -> float:
        return step["Actual Rows"] * step["Actual Loops"]

    writing = [step for step in every if any("to_char" in column for column in step.get("Output", []))]
    joining = [step for step in every if "Join" in step["Node Type"] or step["Node Type"] == "Nested Loop"]
    assert writing and joining
    assert all(rows(step) <= 50 for step in writing + joining)
    assert any(rows(step) == 80 for step in every)  # the ids were picked among all of alice's jobs
    assert JOB_LIST.rows(shape={"everyone": False, "filters": ()}, values=values)[0]["total"] == 80


def test_the_page_rows_come_as_the_driver_gives_them(alice, slots):
    """No column of the list's statement has a converter (selectors.RowCount): Statement.table hands the
    driver's rows on as they are instead of rebuilding each one, and the count is an int all the same."""
    node, gpus, _ = slots
    make_jobs(alice, 3, node=node, gpus=gpus)
    for shape in ({"everyone": False, "filters": ()}, {"everyone": True, "filters": ("node", "status")}):
        assert JOB_LIST.compiled(shape).converters == ()
    names, rows = JOB_LIST.table(
        shape={"everyone": False, "filters": ()}, values={"owner": alice.pk, "limit": 50, "offset": 0}
    )
    totals = {row[names.index("total")] for row in rows}
    assert totals == {3} and type(next(iter(totals))) is int
