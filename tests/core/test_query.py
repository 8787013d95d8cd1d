"""Query parameters read through a serializer (core/query.py)."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from core.query import query_params
from jobs.api.serializers import JobFilterSerializer, JobLogQuerySerializer


def request(query: str = "") -> Request:
    return Request(APIRequestFactory().get(f"/api/jobs/{query}"))


def test_no_parameters_give_what_the_serializer_gives():
    # Nothing required, no defaults: {} without making a serializer, the same as making one would give.
    assert query_params(request(), JobFilterSerializer) == {}
    serializer = JobFilterSerializer(data={})
    assert serializer.is_valid() and serializer.validated_data == {}
    # Defaults still come when the serializer has some.
    assert query_params(request(), JobLogQuerySerializer) == {"after": 0, "limit": 10_000}


def test_parameters_are_checked_and_given_once():
    assert query_params(request("?status=queued&page=2"), JobFilterSerializer) == {"status": "queued"}
    with pytest.raises(ValidationError) as repeated:
        query_params(request("?status=queued&status=running"), JobFilterSerializer)
    assert repeated.value.detail == {"status": ["Give this parameter once."]}
    with pytest.raises(ValidationError) as bad:
        query_params(request("?avatar=0"), JobFilterSerializer)
    assert "avatar" in bad.value.detail
