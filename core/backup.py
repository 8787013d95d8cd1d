"""Backup and restore of everything a deployment keeps: the database (``pg_dump`` custom format, or a copy
of an SQLite file) and every file in media storage (the local disk or the S3 bucket, through Django's
storage API, so both read the same). Redis holds only queues and live events: housekeeping re-enqueues
what it loses, so it is not backed up.

A backup is a folder: ``database.dump`` (PostgreSQL) or ``database.sqlite3``, ``media/`` (the files, at
their storage names) and ``manifest.json`` (what it holds, when it was made, the migrations it has).
Used by ``manage.py backup`` and ``manage.py restore``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder


class BackupError(Exception):
    """A backup or restore that cannot be done, with what to do about it."""


def _pg_args(settings: dict) -> tuple[list[str], dict[str, str]]:
    args = ["--host", settings["HOST"] or "127.0.0.1", "--port", str(settings["PORT"] or 5432)]
    if settings["USER"]:
        args += ["--username", settings["USER"]]
    env = dict(os.environ)
    if settings["PASSWORD"]:
        env["PGPASSWORD"] = settings["PASSWORD"]
    return args, env


def _run(argv: list[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BackupError(
            f"{argv[0]} is not installed: install the PostgreSQL client (postgresql-client)."
        ) from None
    if result.returncode != 0:
        raise BackupError(f"{argv[0]} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")


def storage_files(prefix: str = "") -> Iterator[str]:
    """Every file name in media storage under ``prefix``, depth first."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in sorted(files):
        yield f"{prefix}{name}"
    for folder in sorted(folders):
        yield from storage_files(f"{prefix}{folder}/")


def backup(target: Path) -> dict:
    """Write a backup of the database and the media into ``target`` (a new or empty folder)."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: give a new folder for each backup.")
    target.mkdir(parents=True, exist_ok=True)
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        database = "database.dump"
        args, env = _pg_args(settings)
        _run(["pg_dump", "--format=custom", "--no-owner", *args, "--file", str(target / database),
              settings["NAME"]], env)  # fmt: skip
    elif connection.vendor == "sqlite":
        database = "database.sqlite3"
        with sqlite3.connect(settings["NAME"]) as source, sqlite3.connect(target / database) as copy:
            source.backup(copy)  # consistent while the portal keeps writing
    else:
        raise BackupError(f"Backing up a {connection.vendor} database is not supported.")
    files = 0
    for name in storage_files():
        destination = target / "media" / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(name, "rb") as source, open(destination, "wb") as out:
            shutil.copyfileobj(source, out)
        files += 1
    manifest = {
        "made_at": datetime.now(UTC).isoformat(),
        "database": database,
        "vendor": connection.vendor,
        "media_files": files,
        "migrations": sorted(
            f"{app}.{name}" for app, name in MigrationRecorder(connection).applied_migrations()
        ),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _database_in_use() -> bool:
    return MigrationRecorder(connection).has_table() and bool(
        MigrationRecorder(connection).applied_migrations()
    )


def restore(source: Path, *, replace: bool = False) -> dict:
    """Restore a backup made by :func:`backup` into this deployment's database and media storage.

    Refuses a database that already holds a deployment unless ``replace`` (its data would be lost)."""
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise BackupError(f"{source} holds no manifest.json: give a folder written by manage.py backup.")
    manifest = json.loads(manifest_path.read_text())
    if manifest["vendor"] != connection.vendor:
        raise BackupError(
            f"The backup is of a {manifest['vendor']} database; this deployment uses {connection.vendor}."
        )
    if _database_in_use() and not replace:
        raise BackupError(
            "This database already holds a deployment: restoring would replace it. Restore into a new, empty "
            "database, or pass --replace if that is what you want."
        )
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        args, env = _pg_args(settings)
        connection.close()
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--exit-on-error", *args,
              "--dbname", settings["NAME"], str(source / manifest["database"])], env)  # fmt: skip
    else:
        connection.close()
        with (
            sqlite3.connect(source / manifest["database"]) as backup_db,
            sqlite3.connect(settings["NAME"]) as db,
        ):
            backup_db.backup(db)
    files = 0
    media = source / "media"
    for path in sorted(p for p in media.rglob("*") if p.is_file()) if media.is_dir() else []:
        name = path.relative_to(media).as_posix()
        if default_storage.exists(name):
            default_storage.delete(name)  # the backup's copy wins; save() would otherwise rename it
        with open(path, "rb") as handle:
            saved = default_storage.save(name, File(handle))
        if saved != name:
            raise BackupError(f"Media storage stored {name} as {saved}: check the storage's settings.")
        files += 1
    return {**manifest, "restored_media_files": files}
