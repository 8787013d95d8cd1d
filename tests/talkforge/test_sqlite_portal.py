"""``make run``'s portal runs on SQLite (talkforge.settings.dev), the rest of the suite on PostgreSQL: the
reads written for PostgreSQL (the job list's times written by the database, the statements compiled once
per process) must answer the same on SQLite. Run in a process of its own with the dev settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from django.conf import settings

from tests.conftest import ROOT

SCRIPT = r"""
import json

import django

django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)

from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.services import api_token_rotate
from gpu_nodes.models import Gpu, Node
from jobs.api.serializers import JobSerializer
from jobs.models import Job

alice = User.objects.create_user("alice", password="alice-password-1")
bob = User.objects.create_user("bob", password="bob-password-1")
node = Node.objects.create(name="n1", kind="local", workdir="/tmp/n1")
gpu = Gpu.objects.create(node=node, index=0, name="H100")
now = timezone.now().replace(microsecond=250000)
Job.objects.create(
    owner=alice, kind="demo_train", status="succeeded", progress=1.0, params={"seconds": 1},
    metrics={"psnr": 31.5}, result={"checkpoints": ["a.pth"]}, node=node, gpu=gpu,
    started_at=now.replace(microsecond=0), finished_at=now,
)
Job.objects.create(owner=alice, kind="demo_train", params={"iterations": 10})
Job.objects.create(owner=bob, kind="demo_train", params={})
key = api_token_rotate(user=alice)
bob_key = api_token_rotate(user=bob)
User.objects.filter(pk=bob.pk).update(is_active=False)

client = Client(HTTP_HOST="127.0.0.1")
answers = {}
for path in ("/api/jobs/", "/api/jobs/?status=succeeded", "/api/jobs/?node=n1"):
    response = client.get(path, HTTP_AUTHORIZATION=f"Token {key}")
    answers[path] = [response.status_code, response.json()]
inactive = client.get("/api/jobs/", HTTP_AUTHORIZATION=f"Token {bob_key}")
print(json.dumps({
    "answers": answers,
    "expected": JobSerializer(Job.objects.filter(owner=alice), many=True).data,
    "inactive": inactive.status_code,
}))
"""


def test_the_job_list_and_api_tokens_work_on_sqlite(tmp_path):
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="talkforge.settings.dev",
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        TALKFORGE_VAR_DIR=str(tmp_path),
        REDIS_URL=settings.REDIS_URL,
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])

    expected = out["expected"]
    assert [row["id"] for row in expected] == sorted((row["id"] for row in expected), reverse=True)
    status, everything = out["answers"]["/api/jobs/"]
    assert status == 200
    assert everything["count"] == 2
    assert everything["results"] == expected  # times as DRF writes them: "…:37Z" and "…:37.250000Z"
    [finished] = [row for row in expected if row["status"] == "succeeded"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", finished["started_at"])
    assert finished["finished_at"].endswith(".250000Z")
    for path in ("/api/jobs/?status=succeeded", "/api/jobs/?node=n1"):
        status, answer = out["answers"][path]
        assert (status, answer["results"]) == (200, [finished]), path
    assert out["inactive"] == 401  # SQLite's 0 for is_active is still a no
