"""Bad numbers and bodies are 400s with a message, never 500s, and create nothing: overflow (``1e400``),
NaN and infinities, negatives, JSON nested thousands deep, bodies over the size limit. One validator per
parameter (core/params.py) serves the API, the page forms and the services."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from avatars.models import Avatar
from core.errors import ServiceError
from core.params import DEMO_SECONDS, TRAIN_ITERATIONS, Number
from jobs.models import Job


def post_raw(client, path: str, body: str):
    return client.post(path, body, content_type="application/json")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.mark.parametrize(
    "body",
    [
        '{"kind": "demo_train", "params": {"iterations": 1e400}}',
        '{"kind": "demo_train", "params": {"seconds": 1e400}}',
        '{"kind": "demo_train", "params": {"seconds": NaN}}',
        '{"kind": "demo_train", "params": {"seconds": -Infinity}}',
        '{"kind": "demo_train", "params": {"iterations": ' + "9" * 5000 + "}}",
        '{"kind": "demo_train", "timeout_seconds": 1e400}',
        '{"kind": "demo_train", "params": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"kind": "demo_train", "params": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
        "[" * 100_000,
    ],
    ids=["overflow", "float-overflow", "nan", "infinity", "huge-int", "timeout", "deep-list", "deep-dict",
         "unclosed"],
)  # fmt: skip
def test_a_bad_number_or_a_deep_body_is_a_400(alice_client, body):
    response = post_raw(alice_client, "/api/jobs/", body)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"]
    assert not Job.objects.exists()


def test_a_body_over_the_limit_is_413(alice_client, settings):
    settings.API_MAX_JSON_BYTES = 4096
    body = json.dumps({"kind": "demo_train", "params": {"pad": "x" * 5000}})
    response = post_raw(alice_client, "/api/jobs/", body)
    assert response.status_code == 413
    assert "4096" in response.json()["detail"]
    assert not Job.objects.exists()


def test_a_body_within_the_limits_still_works(alice_client):
    body = json.dumps({"kind": "demo_train", "params": {"seconds": 1.5, "iterations": 10}})
    response = post_raw(alice_client, "/api/jobs/", body)
    assert response.status_code == 201, response.content
    assert response.json()["params"]["seconds"] == 1.5


@pytest.fixture
def ready_avatar(alice):
    return Avatar.objects.create(
        owner=alice, name="Ada", slug=f"ada-{alice.pk}", engine=Avatar.Engine.DEMO,
        status=Avatar.Status.READY_TO_TRAIN, video="avatars/x/x.mp4", consent_given_at=timezone.now(),
        consent_given_by=alice, consent_statement="ok",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("seconds", "abc"), ("seconds", "nan"), ("seconds", "inf"), ("seconds", "-50"), ("seconds", "1e400"),
     ("iterations", "-5"), ("iterations", "12.5"), ("iterations", "1e400"), ("iterations", "x" * 500)],
)  # fmt: skip
def test_the_train_form_refuses_bad_numbers_with_a_message(alice_client, ready_avatar, field, value):
    response = alice_client.post(f"/avatars/{ready_avatar.pk}/train/", {field: value}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert f"{field} must be" in text
    assert not Job.objects.exists()
    ready_avatar.refresh_from_db()
    assert ready_avatar.status == Avatar.Status.READY_TO_TRAIN


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), (12.0, 12), ("12", 12), (" 12 ", 12), ("+12", 12), ("12.0", 12)],
)
def test_a_whole_number_takes_its_usual_spellings(value, expected):
    assert TRAIN_ITERATIONS.clean(value) == expected
    assert isinstance(TRAIN_ITERATIONS.clean(value), int)


@pytest.mark.parametrize(
    "value", [True, False, [], {}, "12.5", 12.5, float("nan"), float("inf"), -1, 10**400, "1e400", "x"]
)
def test_a_whole_number_refuses_everything_else(value):
    with pytest.raises(ServiceError, match="iterations must be a whole number from 10 to 500000"):
        TRAIN_ITERATIONS.clean(value)


def test_a_number_names_its_range_and_unit_and_takes_its_default():
    assert DEMO_SECONDS.clean(None) == 20.0
    assert DEMO_SECONDS.clean("") == 20.0
    with pytest.raises(ServiceError, match=r"seconds must be a number from 0 to 86400 s; got '-50'"):
        DEMO_SECONDS.clean("-50")
    with pytest.raises(ServiceError, match="required"):
        Number("n", 1, 2).clean(None)


def test_the_form_and_serializer_fields_carry_the_same_bounds():
    form_field = TRAIN_ITERATIONS.form_field()
    serializer_field = TRAIN_ITERATIONS.serializer_field()
    assert (form_field.min_value, form_field.max_value) == (10, 500_000)
    assert (serializer_field.min_value, serializer_field.max_value) == (10, 500_000)


def test_a_number_too_long_to_print_is_refused_without_printing_it():
    with pytest.raises(ServiceError, match="too large to show"):
        TRAIN_ITERATIONS.clean(10**5000)
