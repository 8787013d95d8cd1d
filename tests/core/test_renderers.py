"""core/renderers.py writes what DRF's JSONRenderer writes and puts the database's JSON in as it is."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from core.renderers import JSONRenderer, RawJSON

SAMPLES = [
    {"id": 7, "name": "Ada", "ok": True, "none": None, "ratio": 0.1, "one": 1.0, "big": 12345.678},
    {"when": datetime(2026, 12, 6, 9, 30, 1, 250000, tzinfo=UTC), "plain": datetime(2026, 1, 1, tzinfo=UTC)},
    {"elsewhere": datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))},
    {"price": Decimal("1.50"), "uuid": uuid.UUID(int=5), "lazy": gettext_lazy("Not found.")},
    {"text": "naïve “quotes” \u2028 line \u2029 para </script>", "nested": [{"a": [1, 2, {"b": None}]}]},
    {3: "int keys become strings"},
    [1, "two", 3.0, [], {}],
]


@pytest.mark.parametrize("data", SAMPLES)
def test_the_same_bytes_as_drf(data):
    assert JSONRenderer().render(data) == DRFJSONRenderer().render(data)


def test_numbers_in_exponent_form_are_the_same_numbers():
    """orjson writes 1.5e-7 where json writes 1.5e-07: the same number to every JSON reader."""
    data = {"small": 1.5e-7, "big": 1e16, "tiny": 5e-324}
    ours, drfs = JSONRenderer().render(data), DRFJSONRenderer().render(data)
    assert json.loads(ours) == json.loads(drfs) == data
    # Where DRF's strict JSON raises (a 500), NaN and infinities are written as null.
    assert JSONRenderer().render({"nan": float("nan"), "inf": float("-inf")}) == b'{"nan":null,"inf":null}'


def test_raw_json_goes_in_as_it_is():
    data = {"params": RawJSON('{"seconds": 1, "note": "x"}'), "result": RawJSON("[]"), "id": 1}
    assert JSONRenderer().render(data) == b'{"params":{"seconds": 1, "note": "x"},"result":[],"id":1}'


def test_what_orjson_refuses_or_an_indent_goes_through_drf():
    huge = {"n": 2**70, "raw": RawJSON('{"a": 1}')}
    assert json.loads(JSONRenderer().render(huge)) == {"n": 2**70, "raw": {"a": 1}}
    indented = JSONRenderer().render({"raw": RawJSON("[1]")}, "application/json; indent=2")
    assert indented == b'{\n  "raw": [\n    1\n  ]\n}'
    assert JSONRenderer().render(None) == b""


def test_the_browsable_api_still_renders_the_job_list(client, alice):
    from jobs.models import Job

    Job.objects.create(owner=alice, kind="demo_train", params={"seconds": 1})
    client.force_login(alice)
    response = client.get("/api/jobs/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert "&quot;seconds&quot;: 1" in response.content.decode()  # the page shows the JSON, escaped
