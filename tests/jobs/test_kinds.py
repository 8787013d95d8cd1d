"""One job contract: only public kinds can be submitted as raw jobs; every kind's ``clean`` resolves the ids
it carries through the submitting owner's selectors; the plan re-checks at run time; any fault in a plan
fails the job at once and frees its slot. (Before: bob re-ran alice's chat reply and video through
``POST /api/jobs/``, and an avatar step with her avatar crashed outside the runner's handler, holding the
node's only slot.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from avatars.demo_kind import DEMO_TRAIN
from avatars.models import Avatar
from avatars.pipeline import PREPROCESS, RENDER_VALIDATION, TRAIN
from chat.models import Message
from chat.services import CHAT_REPLY
from core.errors import ServiceError
from jobs.kinds import KINDS, kind_spec, public_kinds
from jobs.models import Job
from jobs.runner import run_job
from jobs.services import job_submit
from videos.models import Video
from videos.services import GENERATE_VIDEO

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api():
    def client_for(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return client_for


def make_avatar(owner, name="Ada") -> Avatar:
    return Avatar.objects.create(
        owner=owner, name=name, slug=f"{name.lower()}-{owner.pk}", engine=Avatar.Engine.DEMO,
        status=Avatar.Status.TRAINED, video="avatars/x/x.mp4", consent_given_at=timezone.now(),
        consent_given_by=owner, consent_statement="ok",
    )  # fmt: skip


@pytest.fixture
def alices(alices_things):
    return alices_things


def raw_params(kind: str, objects: dict) -> dict:
    """The params a stranger would forge for ``kind`` with alice's ids."""
    if kind == CHAT_REPLY:
        return {"message": objects["reply"].pk, "checkpoint": objects["checkpoint"].pk}
    if kind == GENERATE_VIDEO:
        return {"video": objects["video"].pk}
    if kind == DEMO_TRAIN:
        return {"seconds": 1, "iterations": 10, "coarse_iterations": 10}
    return {"avatar": objects["avatar"].pk, "iteration": 100}


def test_only_the_demo_training_is_public():
    assert public_kinds() == [DEMO_TRAIN]
    assert {CHAT_REPLY, GENERATE_VIDEO, PREPROCESS, TRAIN} <= set(KINDS)


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {DEMO_TRAIN}))
def test_a_non_public_kind_is_refused_by_the_jobs_api_even_with_your_own_ids(api, alice, bob, alices, kind):
    jobs_before = Job.objects.count()
    for user in (bob, alice):
        response = api(user).post(
            "/api/jobs/", {"kind": kind, "params": raw_params(kind, alices)}, format="json"
        )
        assert response.status_code == 400, response.content
        assert kind in str(response.json())
    assert Job.objects.count() == jobs_before
    alices["reply"].refresh_from_db()
    assert alices["reply"].text == "private reply"


def test_the_jobs_page_submits_only_the_demo(client, alice):
    client.force_login(alice)
    response = client.post("/jobs/new/", {"seconds": "1", "iterations": "10", "coarse_iterations": "10"})
    assert response.status_code == 302
    assert list(Job.objects.values_list("kind", flat=True)) == [DEMO_TRAIN]


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {DEMO_TRAIN}))
def test_every_kind_cleans_ids_through_the_owners_selectors(alice, bob, alices, kind):
    params = raw_params(kind, alices)
    with pytest.raises(ServiceError) as refused:
        kind_spec(kind).clean(dict(params), owner=bob)
    assert "your" in str(refused.value)
    assert kind_spec(kind).clean(dict(params), owner=alice)[
        "avatar" if "avatar" in params else next(iter(params))
    ]


@pytest.mark.parametrize(
    "params",
    [{"avatar": True}, {"avatar": "1"}, {"avatar": 1.0}, {"avatar": -1}, {"avatar": 2**70}, {}],
)
def test_an_avatar_step_with_a_malformed_id_is_refused(alice, params):
    with pytest.raises(ServiceError, match="avatar"):
        kind_spec(TRAIN).clean(params, owner=alice)


@pytest.mark.parametrize("kind", [PREPROCESS, TRAIN, RENDER_VALIDATION])
def test_a_forged_step_on_someone_elses_avatar_fails_at_once_and_frees_the_slot(
    bob, alices, kind, monkeypatch, django_capture_on_commit_callbacks, redis_db
):
    """The plan re-checks ownership: a row that slipped past ``clean`` (written by hand, or the avatar
    changed hands) fails with a message and the node's only slot is free again at once."""
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)
    with django_capture_on_commit_callbacks(execute=True):
        job = Job.objects.create(
            owner=bob, kind=kind, params={"avatar": alices["avatar"].pk, "iteration": 100},
            avatar=alices["avatar"], stage="waiting",
        )  # fmt: skip
        from jobs.services import jobs_dispatch

        jobs_dispatch()
    job.refresh_from_db()
    assert job.gpu_id is not None
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "not its owner" in job.error
    assert not Job.objects.filter(gpu=job.gpu, status__in=Job.ACTIVE_STATUSES).exists()


def test_a_plan_that_raises_anything_fails_the_job_with_its_message(
    alice, make_node, monkeypatch, django_capture_on_commit_callbacks, redis_db
):
    make_node()
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)

    def broken_plan(job):
        raise AttributeError("'NoneType' object has no attribute 'slug'")

    monkeypatch.setitem(KINDS, DEMO_TRAIN, replace(kind_spec(DEMO_TRAIN), plan=broken_plan))
    with django_capture_on_commit_callbacks(execute=True):
        job = job_submit(owner=alice, kind=DEMO_TRAIN, params={"seconds": 1})
    job.refresh_from_db()
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "AttributeError" in job.error and "slug" in job.error
    assert job.finished_at is not None


def test_a_reply_job_re_checks_its_message_owner_at_run_time(bob, alices):
    """Even if a forged chat_reply row existed, the work refuses a message outside its owner's
    conversations (and never reads the conversation's prompt or key)."""
    from chat.job_kind import run_reply

    job = Job(owner=bob, kind=CHAT_REPLY, params={"message": alices["reply"].pk})
    with pytest.raises(Message.DoesNotExist):
        run_reply(job, context=None)


def test_a_generation_plan_re_checks_its_video_owner(bob, alices):
    job = Job(owner=bob, kind=GENERATE_VIDEO, params={"video": alices["video"].pk}, node=alices["node"])
    with pytest.raises(Video.DoesNotExist):
        kind_spec(GENERATE_VIDEO).plan(job)
