"""Sign-up policy and per-person limits: queued and concurrent jobs, GPU hours per month (every job records
the GPU seconds it used), storage, the longest job. Refusals name the limit and what is left; the profile
page shows usage against limits; staff see it per person and override it in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts.models import InviteCode, Quota, User
from accounts.quotas import GB, limits_for, usage_for
from avatars.demo_kind import DEMO_TRAIN
from avatars.models import Avatar, Checkpoint
from avatars.services import avatar_create
from core.errors import ServiceError
from jobs.models import Job
from jobs.services import job_claim, job_finish, job_submit, jobs_dispatch

DEMO = {"seconds": 1, "iterations": 10, "coarse_iterations": 10}


def submit(owner, **options) -> Job:
    return job_submit(owner=owner, kind=DEMO_TRAIN, params=DEMO, **options)


# --- jobs -------------------------------------------------------------------------------------------


def test_a_submission_past_the_queued_limit_is_refused_saying_so(alice, settings, client):
    settings.QUOTA_QUEUED_JOBS = 2
    submit(alice)
    submit(alice)
    with pytest.raises(ServiceError, match=r"Queued jobs: you have 2 jobs waiting .* limit is 2 \(0 left\)"):
        submit(alice)
    client.force_login(alice)
    response = client.post(
        "/api/jobs/", {"kind": "demo_train", "params": DEMO}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "Queued jobs" in response.json()["detail"]
    assert Job.objects.filter(owner=alice).count() == 2


def test_a_personal_override_raises_the_queued_limit(alice, bob, settings):
    settings.QUOTA_QUEUED_JOBS = 1
    Quota.objects.create(user=alice, queued_jobs=3)
    for _ in range(3):
        submit(alice)
    submit(bob)
    with pytest.raises(ServiceError, match="Queued jobs"):
        submit(bob)
    assert limits_for(alice).queued_jobs == 3
    assert limits_for(bob).queued_jobs == 1


def test_placement_keeps_each_person_within_their_concurrent_limit(
    alice, bob, make_node, settings, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)
    settings.QUOTA_CONCURRENT_JOBS = 1
    make_node(gpus=3)
    with django_capture_on_commit_callbacks(execute=True):
        first, second = submit(alice), submit(alice)
        bobs = submit(bob)
    placed = set(Job.objects.filter(gpu__isnull=False).values_list("pk", flat=True))
    assert placed == {first.pk, bobs.pk}  # a GPU stays free rather than alice holding two
    assert usage_for(alice).running_jobs == 1 and usage_for(alice).queued_jobs == 1
    Quota.objects.create(user=alice, concurrent_jobs=2)
    jobs_dispatch()
    assert Job.objects.get(pk=second.pk).gpu_id is not None


def test_a_finished_job_records_the_gpu_seconds_it_held(
    alice, make_node, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)
    make_node(gpus=1)
    with django_capture_on_commit_callbacks(execute=True):
        job = submit(alice)
    job = job_claim(job_id=job.pk, worker_name="test")
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=90))
    job.refresh_from_db()
    assert job_finish(job=job, status=Job.Status.SUCCEEDED)
    job.refresh_from_db()
    assert 90 <= job.gpu_seconds < 120
    assert usage_for(alice).gpu_hours_this_month == pytest.approx(job.gpu_seconds / 3600)


def test_a_cpu_slot_uses_no_gpu_hours(alice, make_node, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("jobs.queue.enqueue", lambda job: None)
    make_node(gpus=0)
    with django_capture_on_commit_callbacks(execute=True):
        job = submit(alice)
    job = job_claim(job_id=job.pk, worker_name="test")
    job_finish(job=job, status=Job.Status.SUCCEEDED)
    job.refresh_from_db()
    assert job.gpu_seconds == 0.0


def test_gpu_hours_used_this_month_refuse_new_work_last_months_do_not(alice, settings):
    settings.QUOTA_GPU_HOURS_PER_MONTH = 5
    now = timezone.now()
    old = now - timedelta(days=40)
    Job.objects.create(
        owner=alice, kind="demo_train", status="succeeded", finished_at=old, gpu_seconds=360000
    )
    submit(alice)  # last month's hours do not count
    Job.objects.create(
        owner=alice, kind="demo_train", status="succeeded", finished_at=now, gpu_seconds=5 * 3600
    )
    with pytest.raises(ServiceError, match=r"GPU hours: you used 5.0 of your 5 h this month \(0 left\)"):
        submit(alice)


def test_the_longest_job_caps_every_time_limit(alice, settings):
    settings.QUOTA_MAX_JOB_HOURS = 2
    assert submit(alice).timeout_seconds == 7200  # none asked: the limit
    assert submit(alice, timeout_seconds=60).timeout_seconds == 60
    with pytest.raises(ServiceError, match=r"Longest job: a job may run at most 2 h on your account; 3 h"):
        submit(alice, timeout_seconds=3 * 3600)


# --- storage ----------------------------------------------------------------------------------------


def make_avatar(owner, name="Ada") -> Avatar:
    return Avatar.objects.create(
        owner=owner, name=name, slug=f"{name.lower()}-{owner.pk}", engine=Avatar.Engine.DEMO,
        status=Avatar.Status.TRAINED, video="avatars/x/x.mp4", consent_given_at=timezone.now(),
        consent_given_by=owner, consent_statement="ok",
    )  # fmt: skip


def test_storage_counts_files_checkpoints_and_datasets_and_refuses_uploads_past_it(
    alice, bob, settings, make_node
):
    settings.QUOTA_STORAGE_GB = 1
    node = make_node()
    avatar = make_avatar(alice)
    folder = settings.MEDIA_ROOT / avatar.folder
    folder.mkdir(parents=True)
    (folder / "video.mp4").write_bytes(b"x" * 1000)
    Checkpoint.objects.create(
        avatar=avatar, node=node, stage="fine", iteration=1, path="/x", size_bytes=GB // 2
    )
    avatar.datasets.create(node=node, path="/d", complete=True, size_bytes=GB // 4)
    assert usage_for(alice).storage_bytes == GB // 2 + GB // 4 + 1000
    assert usage_for(bob).storage_bytes == 0
    upload = SimpleUploadedFile("clip.mp4", b"0" * (GB // 4))
    with pytest.raises(ServiceError, match=r"Storage: you use 0.75 GB of your 1.00 GB \(0.25 GB left\)"):
        avatar_create(owner=alice, name="Second", video=upload, consent=True, engine=Avatar.Engine.DEMO)
    assert Avatar.objects.filter(owner=alice).count() == 1


# --- pages --------------------------------------------------------------------------------------------


def test_the_profile_page_shows_usage_against_limits(client, alice, settings):
    settings.QUOTA_QUEUED_JOBS = 4
    submit(alice)
    client.force_login(alice)
    page = client.get("/accounts/profile/").content.decode()
    assert "Usage and limits" in page
    assert "Jobs waiting</td><td>1" in page.replace("\n", "").replace("  ", "")
    assert "GPU hours this month" in page and "Storage" in page and "Longest job" in page


def test_staff_see_each_persons_usage_and_set_overrides_in_the_admin(client, alice, db):
    admin = User.objects.create_superuser("root", password="root-password-1")
    client.force_login(admin)
    page = client.get(f"/admin/accounts/user/{alice.pk}/change/").content.decode()
    assert "Usage against limits" in page and "Jobs waiting: 0 of" in page
    assert "quota-__prefix__-concurrent_jobs" in page  # the override form


# --- sign-up ------------------------------------------------------------------------------------------


def signup(client, **extra):
    data = {"username": "carol", "email": "c@example.com", "password1": "a-long-Passphrase-9",
            "password2": "a-long-Passphrase-9", **extra}  # fmt: skip
    return client.post("/accounts/signup/", data)


def test_open_signup_logs_the_person_in(client, settings, db):
    settings.SIGNUP_POLICY = "open"
    assert signup(client).status_code == 302
    assert User.objects.get(username="carol").is_active


def test_approval_signup_waits_for_staff(client, settings, db):
    settings.SIGNUP_POLICY = "approval"
    response = signup(client)
    assert response.status_code == 200
    assert "waits for the platform's staff" in response.content.decode()
    carol = User.objects.get(username="carol")
    assert not carol.is_active
    response = client.post("/accounts/login/", {"username": "carol", "password": "a-long-Passphrase-9"})
    assert response.status_code == 200  # the form again, not a redirect into the portal
    assert "_auth_user_id" not in client.session
    admin = User.objects.create_superuser("root", password="root-password-1")
    client.force_login(admin)
    client.post("/admin/accounts/user/", {"action": "approve", "_selected_action": [carol.pk]})
    carol.refresh_from_db()
    assert carol.is_active


def test_invite_signup_needs_a_valid_code_and_uses_it(client, settings, db):
    settings.SIGNUP_POLICY = "invite"
    response = signup(client)
    assert "invite code is not valid" in response.content.decode()
    assert signup(client, invite_code="guess").status_code == 200
    expired = InviteCode.objects.create(
        code="old", uses_left=5, expires_at=timezone.now() - timedelta(days=1)
    )
    assert signup(client, invite_code=expired.code).status_code == 200
    assert not User.objects.filter(username="carol").exists()
    code = InviteCode.objects.create(code="welcome-1", uses_left=1)
    assert signup(client, invite_code=code.code).status_code == 302
    code.refresh_from_db()
    assert code.uses_left == 0
    client.logout()
    response = signup(client, username="dave", invite_code=code.code)
    assert "invite code is not valid" in response.content.decode()


def test_closed_signup_creates_no_one(client, settings, db):
    settings.SIGNUP_POLICY = "closed"
    assert client.get("/accounts/signup/").status_code == 403
    assert signup(client).status_code == 403
    assert not User.objects.filter(username="carol").exists()


def test_a_voice_upload_past_the_storage_limit_is_refused(alice, settings):
    from chat.models import Voice
    from chat.services import voice_create

    settings.QUOTA_STORAGE_GB = 0
    recording = SimpleUploadedFile("me.wav", b"RIFF" + b"0" * 2000)
    with pytest.raises(ServiceError, match="Storage: you use 0.00 GB of your 0.00 GB"):
        voice_create(owner=alice, name="Me", recording=recording, consent=True)
    assert not Voice.objects.exists()


def test_every_app_that_keeps_a_persons_files_counts_them_and_a_new_counter_adds_up(
    alice, settings, monkeypatch
):
    from accounts.quotas import STORAGE_COUNTERS, register_storage_counter

    # Registered from the apps' ready(): accounts imports none of them.
    assert {"avatars", "chat", "videos", "jobs"} <= set(STORAGE_COUNTERS)
    before = usage_for(alice).storage_bytes
    monkeypatch.setattr("accounts.quotas.STORAGE_COUNTERS", dict(STORAGE_COUNTERS))
    register_storage_counter("elsewhere", lambda user: 1234 if user == alice else 0)
    assert usage_for(alice).storage_bytes == before + 1234
