"""A person hears when a training or a video they started ends: a notice in their open pages and, when
NOTIFY_BY_EMAIL is on and they have an address, an e-mail."""

from __future__ import annotations

import pytest
from django.core import mail
from django.utils import timezone

from avatars.models import Avatar
from avatars.pipeline import after_evaluate, after_train
from gpu_nodes.models import Node
from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def mailing(settings, alice):
    settings.NOTIFY_BY_EMAIL = True
    settings.NOTIFY_SITE_URL = "https://talkforge.example.com"
    alice.email = "alice@example.com"
    alice.save()
    return alice


@pytest.fixture
def training(alice):
    node = Node.objects.create(name="n", workdir="/w")
    avatar = Avatar.objects.create(
        owner=alice, name="Ada", slug="ada", engine="demo", status=Avatar.Status.TRAINING, video="a/v.mp4",
        consent_given_at=timezone.now(), consent_given_by=alice, consent_statement="mine",
    )  # fmt: skip
    return avatar, node


def test_the_end_of_a_trainings_chain_is_told_by_mail_with_its_figure(
    mailing, training, django_capture_on_commit_callbacks
):
    avatar, node = training
    params = {"avatar": avatar.pk, "iteration": 500}
    render = Job.objects.create(
        owner=mailing, kind="render_validation", avatar=avatar, node=node, status="succeeded", params=params
    )
    evaluate = Job.objects.create(
        owner=mailing, kind="evaluate", avatar=avatar, node=node, parent=render, status="succeeded",
        params={"avatar": avatar.pk, "iteration": 500}, result={"evaluation": {"psnr": 31.234, "frames": 3}},
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        after_evaluate(evaluate)
    assert [m.subject for m in mail.outbox] == ["Talkforge: Ada is trained"]
    assert "PSNR 31.23 dB" in mail.outbox[0].body
    assert f"https://talkforge.example.com/avatars/{avatar.pk}/" in mail.outbox[0].body
    assert mail.outbox[0].to == ["alice@example.com"]


def test_a_failed_step_is_told_a_cancel_is_not_and_nothing_is_mailed_when_off(
    mailing, training, settings, django_capture_on_commit_callbacks
):
    avatar, node = training
    failed = Job.objects.create(owner=mailing, kind="train", avatar=avatar, node=node, status="failed",
                                error="CUDA out of memory", params={"avatar": avatar.pk})  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        after_train(failed)
    assert [m.subject for m in mail.outbox] == ["Talkforge: Training Ada failed"]
    assert "CUDA out of memory" in mail.outbox[0].body

    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINING)
    canceled = Job.objects.create(owner=mailing, kind="train", avatar=avatar, node=node, status="canceled",
                                  params={"avatar": avatar.pk})  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        after_train(canceled)
    assert len(mail.outbox) == 1, "the person canceled it themselves"

    settings.NOTIFY_BY_EMAIL = False
    Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.TRAINING)
    with django_capture_on_commit_callbacks(execute=True):
        after_train(failed)
    assert len(mail.outbox) == 1
