"""Each test run claims a Redis database no other run holds (talkforge/settings/redis_claim.py), so two
runs on one machine never empty each other's keys."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from talkforge.settings.redis_claim import KEY, TTL_SECONDS, claim


@pytest.fixture
def claims():
    held = []
    yield held
    for one in held:
        one.release()


def test_two_claims_get_different_databases_and_neither_is_this_runs(claims):
    claims += [claim(), claim()]
    numbers = {one.number for one in claims}
    assert len(numbers) == 2 and numbers <= set(range(1, 16))
    ours = int(settings.REDIS_URL.rsplit("/", 1)[1])
    if claims[0].client.exists(KEY.format(ours)):  # this run claimed its own (no REDIS_URL was given)
        assert ours not in numbers
    assert all(one.url.endswith(f"/{one.number}") for one in claims)


def test_a_released_database_is_free_again_and_only_its_holder_refreshes_or_frees_it(claims):
    first = claim()
    client = first.client
    assert 0 < client.ttl(KEY.format(first.number)) <= TTL_SECONDS and first.refresh()
    client.set(KEY.format(first.number), "another run", ex=TTL_SECONDS)  # as if it expired and was taken
    assert not first.refresh()
    first.release()
    assert client.get(KEY.format(first.number)) == b"another run"  # not ours: left alone
    client.delete(KEY.format(first.number))
    again = claim()
    claims.append(again)
    assert again.number == first.number and client.get(KEY.format(again.number)) == again.token.encode()
    again.release()
    assert client.get(KEY.format(again.number)) is None


def test_a_claim_held_by_another_process_is_not_taken(claims):
    code = (
        "import sys, time\n"
        "from talkforge.settings.redis_claim import claim\n"
        "held = claim().keep()\n"
        "print(held.number, flush=True)\n"
        "sys.stdin.read()\n"  # hold it until the test closes stdin
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=settings.BASE_DIR,
    )  # fmt: skip
    try:
        theirs = int(other.stdout.readline())
        claims.append(claim())
        assert claims[-1].number != theirs
    finally:
        other.stdin.close()
        other.wait(10)
    assert claims[0].client.get(KEY.format(theirs)) is None  # released at its exit
