"""Backup and restore (``manage.py backup`` / ``restore``): dump a deployment with an avatar and its video,
restore it into a fresh PostgreSQL database and an empty media folder, and the portal, started on the
restored copy, lists the same avatar and serves the same bytes to its owner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from avatars.models import Avatar
from tests.conftest import subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent.parent

# Run in a process of its own on the restored copy: what the portal shows alice there.
PORTAL = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
client = Client(SERVER_NAME="localhost")
client.force_login(get_user_model().objects.get(username="alice"))
page = client.get("/avatars/")
media = client.get(f"/avatars/{AVATAR}/media/video/")
print(json.dumps({"status": page.status_code, "page": page.content.decode(),
                  "media_status": media.status_code, "media": b"".join(media.streaming_content).hex()}))
"""


@pytest.fixture
def fresh_database():
    name = f"restore_{os.getpid()}"
    db = connection.settings_dict
    admin = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "dbname": "postgres"}
    if db["USER"]:
        admin["user"] = db["USER"]
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=subprocess_env(**env), cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_backup_restored_into_a_fresh_database_shows_the_same_avatar_and_video(
    alice, tmp_path, fresh_database
):
    video = "avatars/ada/video.mp4"
    (Path(settings.MEDIA_ROOT) / video).parent.mkdir(parents=True, exist_ok=True)
    (Path(settings.MEDIA_ROOT) / video).write_bytes(b"\x00\x00\x00\x18ftypmp42 ada's face")
    avatar = Avatar.objects.create(
        owner=alice, name="Ada Lovelace", slug="ada", engine="demo", status=Avatar.Status.TRAINED,
        video=video, consent_given_at=timezone.now(), consent_given_by=alice, consent_statement="mine",
    )  # fmt: skip

    folder = tmp_path / "backup"
    call_command("backup", str(folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["vendor"] == "postgresql" and manifest["media_files"] >= 1
    assert (folder / "media" / video).read_bytes().endswith(b"ada's face")

    media = tmp_path / "restored-media"
    restored = manage("restore", str(folder), DATABASE_URL=fresh_database, MEDIA_ROOT=str(media))
    assert restored.returncode == 0, restored.stderr
    assert (media / video).read_bytes().endswith(b"ada's face")

    again = manage("restore", str(folder), DATABASE_URL=fresh_database, MEDIA_ROOT=str(media))
    assert again.returncode == 1 and "already holds a deployment" in again.stderr, "nothing is overwritten"

    portal = subprocess.run(
        [sys.executable, "-c", PORTAL.replace("AVATAR", str(avatar.pk))], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
        env=subprocess_env(DATABASE_URL=fresh_database, MEDIA_ROOT=str(media)),
    )  # fmt: skip
    assert portal.returncode == 0, portal.stderr
    shown = json.loads(portal.stdout.strip().splitlines()[-1])
    assert shown["status"] == 200 and "Ada Lovelace" in shown["page"]
    assert shown["media_status"] == 200 and bytes.fromhex(shown["media"]).endswith(b"ada's face")


def test_backup_refuses_a_folder_that_is_not_empty_and_restore_one_that_is_not_a_backup(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x").write_text("x")
    with pytest.raises(Exception, match="is not empty"):
        call_command("backup", str(tmp_path / "old"))
    with pytest.raises(Exception, match="holds no manifest.json"):
        call_command("restore", str(tmp_path / "old"))
