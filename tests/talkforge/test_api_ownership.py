"""Ownership across the whole REST API, generated from its own OpenAPI schema: every path and method, with
another user's ids, answers 404 (never 403, which would confirm the object exists) and changes nothing;
lists never show another user's objects; ids inside request bodies are resolved through the caller's own
objects too. A new endpoint lands in these tests by itself: an unclassified path fails the first test."""

from __future__ import annotations

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from avatars.models import Avatar
from chat.models import Conversation, Message, Voice
from jobs.models import Job
from videos.models import Video

# Path prefix → the owned object its {id} names.
OWNED = {
    "avatars": "avatar",
    "conversations": "conversation",
    "jobs": "job",
    "videos": "video",
    "voices": "voice",
}
# Cluster resources: every signed-in person reads them (to choose a node); only staff change them.
SHARED = {"nodes", "gpus"}
PUBLIC = {"token"}  # takes credentials, no object
SELF = {"me"}  # always the caller's own account
METHODS = ("get", "post", "put", "patch", "delete")


def schema_operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(path, method) for path, ops in schema["paths"].items() for method in METHODS if method in ops]


OPERATIONS = schema_operations()


def resource(path: str) -> str:
    return path.split("/")[2]


def test_every_path_of_the_schema_is_classified():
    assert OPERATIONS, "the schema lists no operations"
    unknown = {path for path, _ in OPERATIONS if resource(path) not in {*OWNED, *SHARED, *PUBLIC, *SELF}}
    assert not unknown, f"classify these paths for the ownership tests: {sorted(unknown)}"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def alices(alices_things):
    return alices_things


def bobs_avatar(bob) -> Avatar:
    return Avatar.objects.create(
        owner=bob, name="Bo", slug=f"bo-{bob.pk}", engine=Avatar.Engine.DEMO, status=Avatar.Status.TRAINED,
        video="avatars/y/y.mp4", consent_given_at=timezone.now(), consent_given_by=bob,
        consent_statement="ok",
    )  # fmt: skip


def snapshot(objects: dict) -> dict:
    """What must not change when a stranger pokes at alice's objects."""
    avatar, job, conversation = objects["avatar"], objects["job"], objects["conversation"]
    avatar.refresh_from_db()
    job.refresh_from_db()
    conversation.refresh_from_db()
    return {
        "avatar": (avatar.status, avatar.name),
        "job": (job.status, job.cancel_requested_at),
        "conversation": (conversation.title, conversation.system_prompt, conversation.messages.count()),
        "counts": [model.objects.count() for model in (Avatar, Voice, Conversation, Video, Job, Message)],
    }


OWNED_OPERATIONS = [
    (path, method) for path, method in OPERATIONS if resource(path) in OWNED and "{id}" in path
]


@pytest.mark.parametrize(("path", "method"), OWNED_OPERATIONS, ids=[f"{m} {p}" for p, m in OWNED_OPERATIONS])
def test_another_users_object_is_404_on_every_operation(bob, alices, path, method):
    before = snapshot(alices)
    target = alices[OWNED[resource(path)]]
    url = path.replace("{id}", str(target.pk))
    response = getattr(client_for(bob), method)(url, {}, format="json")
    assert response.status_code == 404, (url, response.status_code, response.content[:200])
    for secret in (b"secret", b"private", b"Ada", b"Her voice"):
        assert secret not in response.content
    assert snapshot(alices) == before


def test_a_missing_object_looks_the_same_as_someone_elses(bob, alices):
    client = client_for(bob)
    for prefix, name in OWNED.items():
        foreign = client.get(f"/api/{prefix}/{alices[name].pk}/")
        missing = client.get(f"/api/{prefix}/999999/")
        assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())


LISTS = [
    path for path, method in OPERATIONS if method == "get" and resource(path) in OWNED and "{" not in path
]


@pytest.mark.parametrize("path", LISTS)
def test_lists_show_only_your_own(bob, alices, path):
    response = client_for(bob).get(path)
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/videos/", lambda a: {"avatar": a["avatar"].pk, "text": "hello"}),
        ("/api/conversations/", lambda a: {"avatar": a["avatar"].pk}),
        ("/api/conversations/", lambda a: {"avatar": "own", "voice": a["voice"].pk}),
    ],
    ids=["video-with-her-avatar", "conversation-with-her-avatar", "conversation-with-her-voice"],
)
def test_ids_in_a_body_resolve_only_to_your_own_objects(bob, alices, path, body):
    own = bobs_avatar(bob)
    data = body(alices)
    if data.get("avatar") == "own":
        data["avatar"] = own.pk
    before = snapshot(alices)
    response = client_for(bob).post(path, data, format="json")
    assert response.status_code in (400, 404), response.content[:300]
    assert snapshot(alices) == before
    assert not Video.objects.filter(owner=bob).exists()
    assert not Conversation.objects.filter(owner=bob).exists()


def test_evaluating_someone_elses_checkpoint_through_your_avatar_is_refused(bob, alices):
    own = bobs_avatar(bob)
    response = client_for(bob).post(
        f"/api/avatars/{own.pk}/evaluate/", {"checkpoint": alices["checkpoint"].pk}, format="json"
    )
    assert response.status_code in (400, 404)
    assert not Job.objects.filter(owner=bob).exists()


SHARED_WRITES = [(p, m) for p, m in OPERATIONS if resource(p) in SHARED and m != "get"]


@pytest.mark.parametrize(("path", "method"), SHARED_WRITES, ids=[f"{m} {p}" for p, m in SHARED_WRITES])
def test_only_staff_change_nodes(bob, alices, path, method):
    url = path.replace("{id}", str(alices["node"].pk))
    response = getattr(client_for(bob), method)(url, {}, format="json")
    assert response.status_code == 403, (url, response.status_code)
    alices["node"].refresh_from_db()
    assert alices["node"].enabled
