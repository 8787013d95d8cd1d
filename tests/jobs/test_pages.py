"""A job's page and its admin say what it works on (a link to the avatar, video or conversation), when it
started and finished, how long it took, and its progress as a percentage."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from avatars.models import Avatar
from chat.models import Conversation, Message
from jobs.models import Job
from videos.models import Video

pytestmark = pytest.mark.django_db


@pytest.fixture
def avatar(alice):
    return Avatar.objects.create(
        owner=alice, name="Ada", slug="ada", engine="demo", status="trained", video="avatars/ada/v.mp4",
        consent_given_at=timezone.now(), consent_given_by=alice, consent_statement="mine",
    )  # fmt: skip


def ended_job(owner, kind, *, params, avatar=None, minutes=3, seconds=5) -> Job:
    start = timezone.now() - timedelta(hours=1)
    return Job.objects.create(
        owner=owner, kind=kind, params=params, avatar=avatar, status="succeeded", progress=1.0,
        started_at=start, finished_at=start + timedelta(minutes=minutes, seconds=seconds),
    )  # fmt: skip


def test_each_kind_of_job_links_to_what_it_works_on(client, alice, avatar):
    video = Video.objects.create(
        owner=alice, avatar=avatar, folder="videos/1", audio="videos/1/a.wav", audio_duration=2.0
    )
    conversation = Conversation.objects.create(owner=alice, avatar=avatar, title="Hello")
    reply = Message.objects.create(conversation=conversation, role="assistant")
    cases = [
        (ended_job(alice, "train", params={"avatar": avatar.pk}, avatar=avatar), "Avatar Ada",
         reverse("avatar-detail", args=[avatar.pk])),
        (ended_job(alice, "generate_video", params={"video": video.pk}, avatar=avatar), f"Video #{video.pk}",
         reverse("video-detail", args=[video.pk])),
        (ended_job(alice, "chat_reply", params={"message": reply.pk}, avatar=avatar), "Conversation",
         reverse("chat-conversation", args=[conversation.pk])),
    ]  # fmt: skip
    client.force_login(alice)
    for job, label, url in cases:
        page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
        assert f'<a href="{url}" id="subject">{label}' in page, job.kind
        took = re.search(r'<dt>Took</dt><dd id="duration"[^>]*>([^<]*)</dd>', page)
        assert took and took[1] == "3 min 5 s" and "Finished" in page


def test_a_job_whose_subject_is_gone_shows_no_link_and_a_running_one_counts_up(client, alice, avatar):
    video = Video.objects.create(
        owner=alice, avatar=avatar, folder="videos/1", audio="videos/1/a.wav", audio_duration=2.0
    )
    gone = ended_job(alice, "generate_video", params={"video": video.pk})
    video.delete()
    running = Job.objects.create(
        owner=alice, kind="demo_train", params={"seconds": 1}, status="running",
        started_at=timezone.now() - timedelta(seconds=42),
    )  # fmt: skip
    client.force_login(alice)
    assert 'id="subject"' not in client.get(reverse("job-detail", args=[gone.pk])).content.decode()
    page = client.get(reverse("job-detail", args=[running.pk])).content.decode()
    assert "Running for" in page and "Finished" not in page


def test_the_admin_shows_percent_duration_and_what_it_works_on(admin_client, alice, avatar):
    job = ended_job(alice, "evaluate", params={"avatar": avatar.pk}, avatar=avatar, minutes=75)
    listing = admin_client.get(reverse("admin:jobs_job_changelist")).content.decode()
    assert "100 %" in listing and "1 h 15 min" in listing
    page = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    assert f'<a href="{reverse("avatar-detail", args=[avatar.pk])}">Avatar Ada</a>' in page


def test_pages_and_admin_name_a_kind_by_its_registered_label(client, admin_client, alice, avatar):
    job = ended_job(alice, "train", params={"avatar": avatar.pk}, avatar=avatar)
    client.force_login(alice)
    assert f"#{job.pk} Training</a>" in client.get(reverse("job-list")).content.decode()
    page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert f"Job #{job.pk} · Training</h1>" in page
    listing = admin_client.get(reverse("admin:jobs_job_changelist")).content.decode()
    assert '<td class="field-kind_name">Training</td>' in listing


def test_a_kind_no_app_registers_shows_its_raw_name_and_is_left_waiting(
    client, admin_client, alice, make_node, django_capture_on_commit_callbacks
):
    # A row left by an app since removed: its kind is in no registry.
    make_node()
    ended = ended_job(alice, "gone_app_kind", params={})
    waiting = Job.objects.create(owner=alice, kind="gone_app_kind", params={})
    client.force_login(alice)
    assert f"#{ended.pk} gone_app_kind</a>" in client.get(reverse("job-list")).content.decode()
    page = client.get(reverse("job-detail", args=[ended.pk]))
    assert page.status_code == 200 and f"Job #{ended.pk} · gone_app_kind</h1>" in page.content.decode()
    assert admin_client.get(reverse("admin:jobs_job_change", args=[ended.pk])).status_code == 200
    assert "gone_app_kind" in admin_client.get(reverse("admin:jobs_job_changelist")).content.decode()

    from jobs.services import jobs_dispatch

    with django_capture_on_commit_callbacks(execute=False):
        assert jobs_dispatch() == []  # the free slot stays free: nothing knows how to run it
    waiting.refresh_from_db()
    assert waiting.status == "queued" and waiting.gpu is None
