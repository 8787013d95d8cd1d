"""Settings from the environment: a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from talkforge.settings.env import (
    database_from_environment,
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)

ROOT = Path(__file__).resolve().parent.parent.parent
VARIABLE = "TALKFORGE_TEST_SETTING"


@pytest.fixture
def setting(monkeypatch):
    def set_value(value: str | None):
        if value is None:
            monkeypatch.delenv(VARIABLE, raising=False)
        else:
            monkeypatch.setenv(VARIABLE, value)

    return set_value


# --- env_bool / env_int / env_float / env_list ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_env_bool_reads_the_usual_spellings(setting, raw, expected):
    setting(raw)
    assert env_bool(VARIABLE, not expected) is expected


@pytest.mark.parametrize("raw", [None, ""])
def test_env_bool_unset_or_empty_gives_the_default(setting, raw):
    setting(raw)
    assert env_bool(VARIABLE, True) is True
    assert env_bool(VARIABLE, False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "enabled"])
def test_env_bool_rejects_anything_else_naming_the_variable(setting, raw):
    setting(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VARIABLE}='{raw}' is not a boolean"):
        env_bool(VARIABLE, False)


def test_env_int_reads_integers_and_defaults(setting):
    setting("42")
    assert env_int(VARIABLE, 7) == 42
    setting(None)
    assert env_int(VARIABLE, 7) == 7
    setting("")
    assert env_int(VARIABLE, 7) == 7


@pytest.mark.parametrize("raw", ["1.5", "ten", "4k", "0x10"])
def test_env_int_rejects_non_integers_naming_the_variable(setting, raw):
    setting(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VARIABLE}='{raw}' is not an integer"):
        env_int(VARIABLE, 1)


def test_env_int_enforces_its_minimum(setting):
    setting("79")
    with pytest.raises(ImproperlyConfigured, match=f"{VARIABLE}=79 is below its minimum of 80"):
        env_int(VARIABLE, 4000, minimum=80)
    setting("80")
    assert env_int(VARIABLE, 4000, minimum=80) == 80


def test_env_float_reads_numbers_and_defaults(setting):
    setting("0.25")
    assert env_float(VARIABLE, 1.0) == 0.25
    setting("3")
    assert env_float(VARIABLE, 1.0) == 3.0
    setting(None)
    assert env_float(VARIABLE, 1.5) == 1.5


@pytest.mark.parametrize("raw", ["fast", "1,5", "2s"])
def test_env_float_rejects_non_numbers_naming_the_variable(setting, raw):
    setting(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VARIABLE}='{raw}' is not a number"):
        env_float(VARIABLE, 1.0)


def test_env_float_enforces_its_minimum(setting):
    setting("0.05")
    with pytest.raises(ImproperlyConfigured, match=f"{VARIABLE}=0.05 is below its minimum of 0.1"):
        env_float(VARIABLE, 2.0, minimum=0.1)


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_env_float_rejects_values_that_are_not_finite(setting, raw):
    setting(raw)
    with pytest.raises(ImproperlyConfigured, match=VARIABLE):
        env_float(VARIABLE, 1.0, minimum=0.1)


def test_env_list_splits_on_commas_and_drops_blanks(setting):
    setting(" talkforge.example , localhost,,127.0.0.1 ")
    assert env_list(VARIABLE, ["x"]) == ["talkforge.example", "localhost", "127.0.0.1"]
    setting(None)
    assert env_list(VARIABLE, ["x"]) == ["x"]


def test_env_str_returns_the_raw_value(setting):
    setting(" kept as is ")
    assert env_str(VARIABLE, "d") == " kept as is "
    setting(None)
    assert env_str(VARIABLE, "d") == "d"


# --- database_from_url ---------------------------------------------------------------------------------


def test_database_from_postgres_url():
    config = database_from_url("postgres://talk:p%40ss%2Fw@db.internal:6543/talk%20forge?sslmode=require")
    assert config == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "talk forge",
        "USER": "talk",
        "PASSWORD": "p@ss/w",
        "HOST": "db.internal",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
    }


def test_database_from_postgresql_url_without_credentials_or_port():
    config = database_from_url("postgresql://localhost/talkforge")
    assert (config["ENGINE"], config["NAME"], config["HOST"]) == (
        "django.db.backends.postgresql",
        "talkforge",
        "localhost",
    )
    assert (config["USER"], config["PASSWORD"], config["PORT"], config["OPTIONS"]) == ("", "", "", {})


def test_database_from_postgres_url_without_a_database_name_is_refused():
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        database_from_url("postgres://user@localhost:5432/")


def test_database_from_sqlite_url_names_the_file(tmp_path):
    # sqlite:/// + an absolute path, as the default setting builds it: SQLite opens that very file.
    config = database_from_url(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    sqlite3.connect(config["NAME"]).close()
    assert (tmp_path / "db.sqlite3").is_file()


def test_database_from_sqlite_url_follows_the_usual_slash_convention():
    assert (
        database_from_url("sqlite:////var/lib/talkforge/db.sqlite3")["NAME"]
        == "/var/lib/talkforge/db.sqlite3"
    )
    assert database_from_url("sqlite:///var/talkforge.sqlite3")["NAME"] == "var/talkforge.sqlite3"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_database_from_sqlite_url_without_a_file_is_refused(url):
    with pytest.raises(ImproperlyConfigured, match="names no SQLite file"):
        database_from_url(url)


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/talkforge", "redis://localhost:6379/0", "talkforge.db"]
)
def test_database_from_url_with_an_unsupported_scheme_names_it(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL scheme .* is not supported"):
        database_from_url(url)


# --- database_from_environment: the connection pool ----------------------------------------------------

POSTGRES = "postgres://talk@db.internal:5432/talkforge"
POOL_VARIABLES = (
    "DATABASE_POOL", "DATABASE_POOL_MIN_SIZE", "DATABASE_POOL_MAX_SIZE", "DATABASE_POOL_TIMEOUT",
    "DATABASE_CONN_MAX_AGE", "DISABLE_SERVER_SIDE_CURSORS", "DATABASE_PREPARED_STATEMENTS",
)  # fmt: skip


@pytest.fixture
def database_env(monkeypatch):
    for name in POOL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", POSTGRES)
    return monkeypatch


def test_postgres_gets_a_bounded_pool_by_default(database_env):
    config = database_from_environment("sqlite:////unused.db")
    assert config["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 10, "timeout": 10.0}
    # Django refuses persistent connections with a pool; the pool takes each back after the request.
    assert config["CONN_MAX_AGE"] == 0
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is False
    assert config["OPTIONS"]["prepare_threshold"] == 5  # the hot statements run prepared (core/statements.py)


def test_pool_sizes_and_timeout_come_from_the_environment(database_env):
    database_env.setenv("DATABASE_POOL_MIN_SIZE", "0")
    database_env.setenv("DATABASE_POOL_MAX_SIZE", "4")
    database_env.setenv("DATABASE_POOL_TIMEOUT", "2.5")
    assert database_from_environment("")["OPTIONS"]["pool"] == {"min_size": 0, "max_size": 4, "timeout": 2.5}


def test_pool_off_for_pgbouncer(database_env):
    database_env.setenv("DATABASE_POOL", "false")
    database_env.setenv("DISABLE_SERVER_SIDE_CURSORS", "true")
    config = database_from_environment("")
    assert "pool" not in config["OPTIONS"]
    assert (config["CONN_MAX_AGE"], config["DISABLE_SERVER_SIDE_CURSORS"]) == (0, True)
    database_env.setenv("DATABASE_CONN_MAX_AGE", "30")
    assert database_from_environment("")["CONN_MAX_AGE"] == 30
    database_env.setenv("DATABASE_PREPARED_STATEMENTS", "false")  # a PgBouncer before 1.21
    assert database_from_environment("")["OPTIONS"]["prepare_threshold"] is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_POOL": "sometimes"}, "DATABASE_POOL='sometimes' is not a boolean: use true or false."),
        (
            {"DATABASE_PREPARED_STATEMENTS": "maybe"},
            "DATABASE_PREPARED_STATEMENTS='maybe' is not a boolean: use true or false.",
        ),
        ({"DATABASE_POOL_MAX_SIZE": "ten"}, "DATABASE_POOL_MAX_SIZE='ten' is not an integer."),
        ({"DATABASE_POOL_MAX_SIZE": "0"}, "DATABASE_POOL_MAX_SIZE=0 is below its minimum of 1."),
        ({"DATABASE_POOL_TIMEOUT": "2s"}, "DATABASE_POOL_TIMEOUT='2s' is not a number."),
        (
            {"DATABASE_POOL_MIN_SIZE": "8", "DATABASE_POOL_MAX_SIZE": "4"},
            "DATABASE_POOL_MAX_SIZE=4 is below DATABASE_POOL_MIN_SIZE=8: "
            "raise the maximum or lower the minimum.",
        ),
    ],
)
def test_a_bad_pool_setting_names_the_variable_and_what_to_do(database_env, env, message):
    for name, value in env.items():
        database_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as refused:
        database_from_environment("")
    assert str(refused.value) == message


def test_sqlite_has_no_pool(database_env, tmp_path):
    database_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert "pool" not in database_from_environment("")["OPTIONS"]


# --- at start-up ---------------------------------------------------------------------------------------


def manage_check(settings_module: str, **env) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "JOB_", "DATABASE_", "DEBUG", "SECRET_KEY"))
    }
    environment.update(DJANGO_SETTINGS_MODULE=settings_module, **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_bad_setting_stops_start_up_naming_the_variable():
    result = manage_check("talkforge.settings.test", JOB_KILL_GRACE="soon")
    assert result.returncode != 0
    assert "JOB_KILL_GRACE='soon' is not a number." in result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    result = manage_check("talkforge.settings.production", DATABASE_URL="postgres://postgres@127.0.0.1/x")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_refuses_sqlite():
    result = manage_check(
        "talkforge.settings.production",
        SECRET_KEY="x" * 50,
        DATABASE_URL="sqlite:////tmp/talkforge-test.sqlite3",
    )
    assert result.returncode != 0
    assert "Production needs PostgreSQL" in result.stderr


def test_a_bad_pool_setting_stops_production_start_up_naming_it():
    result = manage_check(
        "talkforge.settings.production",
        SECRET_KEY="k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2,
        DATABASE_URL="postgres://postgres@127.0.0.1/x",
        DATABASE_POOL_TIMEOUT="soon",
    )
    assert result.returncode != 0
    assert "DATABASE_POOL_TIMEOUT='soon' is not a number." in result.stderr


def test_production_settings_pool_their_connections():
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "SECRET_KEY"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="talkforge.settings.production",
        SECRET_KEY="k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2,
        DATABASE_URL="postgres://postgres@127.0.0.1/x",
        DATABASE_POOL_MAX_SIZE="6",
    )
    probe = (
        "import django; django.setup(); from django.conf import settings as s; d = s.DATABASES['default']; "
    )
    probe += "print(d['OPTIONS']['pool'], d['CONN_MAX_AGE'])"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'min_size': 2, 'max_size': 6, 'timeout': 10.0} 0"
