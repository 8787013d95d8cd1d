"""A user sees only their own jobs: API, pages and websockets answer 404 (or refuse) for anyone else's.
Staff see everyone's."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.services import api_token_rotate
from avatars.demo_kind import DEMO_TRAIN
from jobs import events
from jobs.models import Job, JobLogChunk
from jobs.services import job_submit
from talkforge.asgi import application

DEMO = {"seconds": 1, "iterations": 10, "coarse_iterations": 10}


def submit(owner, **params) -> Job:
    return job_submit(owner=owner, kind=DEMO_TRAIN, params={**DEMO, **params})


@pytest.fixture
def alices_job(alice, django_capture_on_commit_callbacks):
    # Committing runs placement: with no node registered the job just waits in line.
    with django_capture_on_commit_callbacks(execute=True):
        job = submit(alice)
    job.refresh_from_db()
    assert (job.status, job.gpu_id) == (Job.Status.QUEUED, None)
    JobLogChunk.objects.create(
        job=job, first_line=1, line_count=2, text="Optimizing output/demo\nsecret face"
    )
    Job.objects.filter(pk=job.pk).update(log_line_count=2)
    return job


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


# --- REST API ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/jobs/{id}/"),
        ("get", "/api/jobs/{id}/log/"),
        ("get", "/api/jobs/{id}/log/?format=txt"),
        ("post", "/api/jobs/{id}/cancel/"),
    ],
)
def test_another_users_job_is_404_in_the_api(as_user, bob, alices_job, method, path):
    client = as_user(bob)
    response = getattr(client, method)(path.format(id=alices_job.pk))
    assert response.status_code == 404
    assert b"secret face" not in response.content
    alices_job.refresh_from_db()
    assert alices_job.status == Job.Status.QUEUED
    assert alices_job.cancel_requested_at is None


def test_another_users_job_is_404_with_an_api_token_too(client, bob, alices_job):
    key = api_token_rotate(user=bob)
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    assert client.get(f"/api/jobs/{alices_job.pk}/", **auth).status_code == 404
    assert client.post(f"/api/jobs/{alices_job.pk}/cancel/", **auth).status_code == 404
    alices_job.refresh_from_db()
    assert alices_job.status == Job.Status.QUEUED


def test_a_job_that_does_not_exist_looks_the_same_as_someone_elses(as_user, bob, alices_job):
    client = as_user(bob)
    missing = client.get(f"/api/jobs/{alices_job.pk + 1000}/")
    theirs = client.get(f"/api/jobs/{alices_job.pk}/")
    assert (missing.status_code, missing.json()) == (theirs.status_code, theirs.json())


def test_owner_reaches_detail_log_and_cancel(as_user, alice, alices_job, django_capture_on_commit_callbacks):
    client = as_user(alice)
    assert client.get(f"/api/jobs/{alices_job.pk}/").json()["owner"] == "alice"
    assert client.get(f"/api/jobs/{alices_job.pk}/log/").json()["lines"] == [
        "Optimizing output/demo",
        "secret face",
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/jobs/{alices_job.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == Job.Status.CANCELED


def test_api_list_shows_only_your_own_jobs(as_user, bob, alices_job):
    bobs_job = submit(bob)
    ids = [job["id"] for job in as_user(bob).get("/api/jobs/").json()["results"]]
    assert ids == [bobs_job.pk]


def test_api_list_filters_cannot_reach_other_users_jobs(as_user, bob, alices_job):
    client = as_user(bob)
    assert client.get("/api/jobs/?status=queued").json()["results"] == []
    assert client.get("/api/jobs/?kind=demo_train").json()["count"] == 0


def test_staff_see_everyones_jobs(as_user, staff, alices_job):
    client = as_user(staff)
    assert client.get(f"/api/jobs/{alices_job.pk}/").status_code == 200
    assert [job["id"] for job in client.get("/api/jobs/").json()["results"]] == [alices_job.pk]
    assert client.get(f"/api/jobs/{alices_job.pk}/log/").json()["lines"][1] == "secret face"
    page = client.get(reverse("job-detail", args=[alices_job.pk]))
    assert page.status_code == 200
    assert b"alice" in page.content
    assert alices_job in client.get(reverse("job-list")).context["page"].object_list


# --- pages ---------------------------------------------------------------------------------------------


def test_another_users_job_page_is_404(as_user, bob, alices_job):
    assert as_user(bob).get(reverse("job-detail", args=[alices_job.pk])).status_code == 404


def test_another_users_job_cannot_be_canceled_from_the_page(as_user, bob, alices_job):
    response = as_user(bob).post(reverse("job-cancel", args=[alices_job.pk]))
    assert response.status_code == 404
    alices_job.refresh_from_db()
    assert alices_job.status == Job.Status.QUEUED
    assert alices_job.cancel_requested_at is None


def test_job_list_page_and_dashboard_show_only_your_own_jobs(as_user, bob, alices_job):
    bobs_job = submit(bob)
    client = as_user(bob)
    listed = client.get(reverse("job-list")).context["page"].object_list
    assert list(listed) == [bobs_job]
    dashboard = client.get(reverse("dashboard"))
    assert list(dashboard.context["active"]) == [bobs_job]
    assert f"#{alices_job.pk} ".encode() not in dashboard.content


def test_owner_sees_and_cancels_the_job_from_its_page(as_user, alice, alices_job):
    client = as_user(alice)
    page = client.get(reverse("job-detail", args=[alices_job.pk]))
    assert page.status_code == 200
    assert f'data-job="{alices_job.pk}"'.encode() in page.content
    response = client.post(reverse("job-cancel", args=[alices_job.pk]))
    assert response.status_code == 302
    alices_job.refresh_from_db()
    assert alices_job.status == Job.Status.CANCELED


def test_pages_need_login(client, alices_job):
    for url in (reverse("job-list"), reverse("job-detail", args=[alices_job.pk])):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login"))
    # "/" for a visitor is the landing page: it says what Talkforge is, and shows nobody's things.
    landing = client.get(reverse("dashboard"))
    assert landing.status_code == 200 and f"#{alices_job.pk}" not in landing.content.decode()


# --- query counts --------------------------------------------------------------------------------------


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", ["/api/jobs/", "/jobs/"], ids=["api", "page"])
def test_job_list_queries_do_not_grow_with_the_number_of_jobs(
    as_user, alice, make_node, django_assert_max_num_queries, url
):
    node = make_node()
    client = as_user(alice)

    def add(count):
        for _ in range(count):
            job = submit(alice)
            # Finished jobs that ran on a node: node and slot must not cost a query per row.
            Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, node=node, gpu=node.gpus.get())

    add(2)
    few = count_queries(client, url)
    add(20)
    many = count_queries(client, url)
    assert many == few
    with django_assert_max_num_queries(5):
        client.get(url)


# --- websockets ----------------------------------------------------------------------------------------


def session_headers(client, user, origin: str = "http://localhost") -> list[tuple[bytes, bytes]]:
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    # As a browser on http://localhost sends them: the Host it asked, the Origin of the page.
    return [(b"cookie", cookie.encode()), (b"origin", origin.encode()), (b"host", b"localhost")]


def token_headers(user) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {api_token_rotate(user=user)}".encode())]


async def open_socket(path: str, headers) -> tuple[WebsocketCommunicator, bool, object]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, detail = await communicator.connect(timeout=5)
    return communicator, connected, detail


def ws_connect_result(path: str, headers) -> tuple[bool, object, dict | None]:
    """Connect, read the first message if accepted, disconnect."""

    async def run():
        communicator, connected, detail = await open_socket(path, headers)
        first = None
        if connected:
            first = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
        return connected, detail, first

    return async_to_sync(run)()


@pytest.fixture
def ws_job(alice):
    """Alice's waiting job with two stored log lines, committed (websocket tests are transactional)."""
    job = submit(alice)
    JobLogChunk.objects.create(
        job=job, first_line=1, line_count=2, text="Optimizing output/demo\nsecret face"
    )
    Job.objects.filter(pk=job.pk).update(log_line_count=2)
    return job


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("auth", ["session", "token"])
def test_job_socket_refuses_another_user(client, bob, ws_job, auth):
    headers = session_headers(client, bob) if auth == "session" else token_headers(bob)
    connected, code, first = ws_connect_result(f"/ws/jobs/{ws_job.pk}/", headers)
    assert connected is False
    assert code == 4404
    assert first is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("auth", ["session", "token"])
def test_job_socket_sends_the_owner_a_snapshot(client, alice, ws_job, auth):
    headers = session_headers(client, alice) if auth == "session" else token_headers(alice)
    connected, _, snapshot = ws_connect_result(f"/ws/jobs/{ws_job.pk}/", headers)
    assert connected is True
    assert snapshot["type"] == "snapshot"
    assert (snapshot["job"], snapshot["status"], snapshot["kind"]) == (ws_job.pk, "queued", "demo_train")
    assert (snapshot["log_first"], snapshot["log"]) == (1, ["Optimizing output/demo", "secret face"])
    assert snapshot["log_line_count"] == 2


@pytest.mark.django_db(transaction=True)
def test_job_socket_lets_staff_watch_any_job(client, staff, ws_job):
    connected, _, snapshot = ws_connect_result(f"/ws/jobs/{ws_job.pk}/", token_headers(staff))
    assert connected is True
    assert snapshot["job"] == ws_job.pk


@pytest.mark.django_db(transaction=True)
def test_job_socket_refuses_anonymous_and_bad_tokens(ws_job):
    for headers in ([], [(b"authorization", b"Token not-a-real-key")]):
        connected, code, _ = ws_connect_result(f"/ws/jobs/{ws_job.pk}/", headers)
        assert (connected, code) == (False, 4404)


@pytest.mark.django_db(transaction=True)
def test_job_socket_refuses_a_session_from_another_site(client, alice, ws_job):
    # A page on another site must not ride alice's session cookie.
    headers = session_headers(client, alice, origin="http://evil.example")
    connected, _, _ = ws_connect_result(f"/ws/jobs/{ws_job.pk}/", headers)
    assert connected is False


@pytest.mark.django_db(transaction=True)
def test_user_socket_refuses_anonymous(db):
    connected, code, _ = ws_connect_result("/ws/jobs/", [])
    assert (connected, code) == (False, 4401)


@pytest.mark.django_db(transaction=True)
def test_user_socket_carries_only_your_own_jobs_events(alice, bob, ws_job):
    alice_headers, bob_headers = token_headers(alice), token_headers(bob)

    async def run():
        alice_socket, alice_ok, _ = await open_socket("/ws/jobs/", alice_headers)
        bob_socket, bob_ok, _ = await open_socket("/ws/jobs/", bob_headers)
        assert alice_ok and bob_ok
        # What the runner and services publish about alice's job, through the real channel layer.
        events.job_status_publish(ws_job, on_commit=False)
        message = await alice_socket.receive_json_from(timeout=5)
        assert await bob_socket.receive_nothing(timeout=0.5)
        await alice_socket.disconnect()
        await bob_socket.disconnect()
        return message

    message = async_to_sync(run)()
    assert (message["type"], message["job"], message["status"]) == ("status", ws_job.pk, "queued")
