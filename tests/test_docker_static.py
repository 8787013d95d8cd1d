"""Static checks of the Docker stack (docker/): there is no Docker engine on the dev machines, so these
read the files the way Compose and BuildKit would and hold them to what the code really provides: the
manage.py commands, the ASGI application, the environment variables the settings read, the scripts."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
APP_DIR = "/app"  # the Dockerfile's WORKDIR, where the repository is copied

# Variables the stack may set that no Talkforge code reads: they belong to the images it runs.
FOREIGN_VARIABLES = {"NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_VISIBLE_DEVICES"}


# --- reading the files ---------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def env_example() -> dict[str, str]:
    values = {}
    for number, line in enumerate((DOCKER / ".env.example").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f".env.example line {number} is not NAME=value: {line!r}"
        name, value = line.split("=", 1)
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f".env.example line {number}: bad name {name!r}"
        values[name] = value
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def instruction(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)  # shell form would put a shell between Docker's signals and the process
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), arguments
    return value


def app_services() -> dict[str, dict]:
    """The services built from our Dockerfile (the others are stock images)."""
    return {name: spec for name, spec in compose()["services"].items() if "build" in spec}


def repo_path(container_path: str) -> Path | None:
    """The repository file a container path points at, when it is one of ours."""
    if container_path.startswith(APP_DIR + "/"):
        return ROOT / container_path.removeprefix(APP_DIR + "/")
    if "/" in container_path and not container_path.startswith("/"):
        return ROOT / container_path
    return None


def service_command(spec: dict) -> list[str]:
    command = spec.get("command")
    if command is None:
        return exec_form(instruction("CMD")[-1])
    return command if isinstance(command, list) else shlex.split(command)


def manage_commands_in(argv: list[str]) -> list[str]:
    """The manage.py subcommands an argv runs, following our own scripts one level down."""
    found = [argv[i + 1] for i, part in enumerate(argv[:-1]) if part.endswith("manage.py")]
    script = repo_path(argv[0]) if argv else None
    if script is not None and script.suffix == ".sh":
        found += re.findall(r"manage\.py\s+([a-z_]+)", script.read_text())
    return found


def settings_variables() -> set[str]:
    """Names the settings read from the environment: ``env_*("NAME"`` and ``os.environ`` lookups."""
    names = set()
    for path in (ROOT / "talkforge" / "settings").glob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"\benv_[a-z]+\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
        names |= set(re.findall(r"os\.environ(?:\.get|\.setdefault)?[\[(]\s*\"([A-Z][A-Z0-9_]*)\"", text))
    return names


def script_variables() -> set[str]:
    names = set()
    for path in DOCKER.glob("*.sh"):
        names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", path.read_text()))
    return names


def interpolated(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


def substitute(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)[^}]*\}", lambda m: env[m.group(1)], value)


# --- compose -------------------------------------------------------------------------------------------


def test_compose_has_the_stack_services():
    services = compose()["services"]
    assert {"postgres", "redis", "web", "worker"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["postgres"]["volumes"])
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck; others wait on it"
    declared_volumes = set(compose()["volumes"])
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source!r}"


def test_app_services_wait_for_healthy_database_and_redis():
    for name, spec in app_services().items():
        depends = spec.get("depends_on", {})
        for needed in ("postgres", "redis"):
            assert depends.get(needed, {}).get("condition") == "service_healthy", (name, needed)
    # Workers start after the web service has applied the migrations.
    assert app_services()["worker"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_app_services_build_our_dockerfile_and_share_the_data_volume():
    for name, spec in app_services().items():
        build = spec["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"{name} builds from {context}, not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert spec["env_file"] in (".env", "./.env", ["./.env"], [".env"])
        assert "data:/data" in spec["volumes"], f"{name} does not see the shared media and node files"


def test_every_manage_command_the_services_run_exists():
    commands = get_commands()
    seen = {}
    for name, spec in app_services().items():
        for command in manage_commands_in(service_command(spec)):
            assert command in commands, f"service {name} runs manage.py {command}, which does not exist"
            seen.setdefault(name, set()).add(command)
    # A local node's housekeeping must run beside its workers: it probes the GPUs and signals the job
    # process groups of this one container.
    assert {"register_local_node", "worker", "housekeeping"} <= seen.get("worker", set())
    assert "worker" not in seen.get("web", set()) and "housekeeping" not in seen.get("web", set())


def test_scripts_the_services_run_exist_and_are_executable():
    for name, spec in app_services().items():
        for argv in (service_command(spec), exec_form(instruction("ENTRYPOINT")[-1])):
            script = repo_path(argv[0])
            if script is None:
                continue
            assert script.is_file(), f"{name} runs {argv[0]}, which is not in the repository"
            assert_executable(script)


def web_script_command() -> list[str]:
    """The gunicorn command line docker/web.sh execs, its shell defaults filled in."""
    text = (DOCKER / "web.sh").read_text()
    line = text[text.index("exec ") :].replace("\\\n", " ")
    line = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", line.splitlines()[0])
    return shlex.split(line)[1:]


def test_web_serves_the_asgi_application_the_settings_name():
    assert service_command(compose()["services"]["web"]) == ["/app/docker/web.sh"]
    command = web_script_command()
    assert command[:3] == ["python", "-m", "gunicorn"]
    assert_asgi_application(command[3])
    bind = command[command.index("--bind") + 1]
    assert bind.startswith("0.0.0.0:")
    assert f"{bind.rsplit(':', 1)[1]}:" in " ".join(compose()["services"]["web"]["ports"])
    # The worker class is ours and can be imported (uvicorn without its proxy-header rewriting).
    module, _, name = command[command.index("--worker-class") + 1].rpartition(".")
    worker = getattr(importlib.import_module(module), name)
    assert worker.CONFIG_KWARGS["proxy_headers"] is False


def test_env_example_defines_what_compose_interpolates():
    text = (DOCKER / "compose.yaml").read_text()
    missing = interpolated(text) - set(env_example())
    assert not missing, f"compose.yaml uses ${{{', '.join(sorted(missing))}}}, absent from .env.example"


def test_every_variable_the_stack_sets_is_read_by_talkforge():
    readers = settings_variables() | script_variables()
    compose_text = (DOCKER / "compose.yaml").read_text()
    names = set(env_example())
    for spec in app_services().values():
        names |= set(spec.get("environment", {}))
    for name in sorted(names):
        if name in FOREIGN_VARIABLES:
            continue
        if name.startswith("POSTGRES_"):
            assert name in interpolated(compose_text), f"{name} is set but compose.yaml never uses it"
            continue
        assert name in readers, (
            f"{name} is set in docker/ but neither talkforge/settings nor docker/*.sh reads it"
        )


def test_settings_read_the_variables_the_stack_relies_on():
    # Guards the scan above: if the settings stop reading these, the stack silently loses them.
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"} <= settings_variables()


def test_env_example_configures_production_settings_for_the_compose_services():
    """Production settings load from the example as it stands, and point at the compose services."""
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "talkforge.settings.production"}
    # With the placeholder replaced, as the example's first line asks (production refuses the placeholder).
    env |= env_example() | {"SECRET_KEY": "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2}
    probe = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DATABASES['default'], s.REDIS_URL, s.DEBUG, s.SECRET_KEY]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    database, redis_url, debug, secret_key = json.loads(result.stdout.strip().splitlines()[-1])
    services = compose()["services"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["HOST"] in services and database["HOST"] == "postgres"
    postgres_env = {
        key: substitute(str(value), env_example())
        for key, value in services["postgres"]["environment"].items()
    }
    assert database["NAME"] == postgres_env["POSTGRES_DB"]
    assert database["USER"] == postgres_env["POSTGRES_USER"]
    assert database["PASSWORD"] == postgres_env["POSTGRES_PASSWORD"], (
        "DATABASE_URL and POSTGRES_PASSWORD differ"
    )
    assert redis_url.split("://", 1)[1].split(":")[0] == "redis" and "redis" in services
    assert debug is False
    assert secret_key == env["SECRET_KEY"]
    assert "change-me" in env_example()["SECRET_KEY"], "the example must carry a placeholder, not a secret"


# --- Dockerfile ----------------------------------------------------------------------------------------


def test_dockerfile_base_user_and_workdir():
    assert instruction("FROM") == ["python:3.11-slim-bookworm"]
    assert instruction("WORKDIR")[-1] == APP_DIR
    users = instruction("USER")
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
    apt = " ".join(run for run in instruction("RUN") if "apt-get install" in run)
    assert "ffmpeg" in apt and "openssh-client" in apt


def test_dockerfile_installs_the_project_and_collects_static_files_with_a_dummy_key():
    runs = instruction("RUN")
    assert any(re.search(r"pip install [\"']?\.", run) for run in runs), "the project is not pip-installed"
    collect = [run for run in runs if "collectstatic" in run]
    assert collect and "SECRET_KEY=" in collect[0] and "--noinput" in collect[0]
    env = " ".join(instruction("ENV"))
    assert "DJANGO_SETTINGS_MODULE=talkforge.settings.production" in env
    # The settings module the image runs with exists.
    assert importlib.util.find_spec("talkforge.settings.production") is not None


def test_dockerfile_entrypoint_and_command():
    entrypoint = exec_form(instruction("ENTRYPOINT")[-1])
    script = repo_path(entrypoint[0])
    assert script is not None and script.is_file(), f"ENTRYPOINT {entrypoint[0]} is not in the repository"
    assert_executable(script)
    assert exec_form(instruction("CMD")[-1]) == ["/app/docker/web.sh"]


def test_dockerfile_copies_only_what_exists():
    for arguments in instruction("COPY"):
        parts = [part for part in arguments.split() if not part.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the build context"


def test_build_context_leaves_out_local_state_and_secrets():
    ignored = {
        line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines() if line.strip()
    }
    for needed in (".git", ".venv", "var", "docker/.env"):
        assert needed in ignored, f"{needed} would be sent into the image"


# --- the entrypoint, run for real ----------------------------------------------------------------------


def run_entrypoint(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DOCKER / "entrypoint.sh"), "sh", "-c", "echo ran:$0", "command"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_entrypoint_refuses_the_placeholder_secret():
    result = run_entrypoint(SECRET_KEY=env_example()["SECRET_KEY"])
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "ran:" not in result.stdout
    assert run_entrypoint().returncode != 0


def test_entrypoint_runs_the_command_without_migrating_by_default():
    result = run_entrypoint(SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran:command"


@pytest.mark.parametrize("script", sorted(p.name for p in DOCKER.glob("*.sh")))
def test_shell_scripts_parse(script):
    path = DOCKER / script
    shell = "bash" if path.read_text().startswith("#!/usr/bin/env bash") else "sh"
    result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- helpers -------------------------------------------------------------------------------------------


def assert_executable(path: Path) -> None:
    assert os.access(path, os.X_OK), f"{path.relative_to(ROOT)} is not executable"
    listed = subprocess.run(
        ["git", "ls-files", "--stage", "--", str(path.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode == 0 and listed.stdout:
        # What a clone (and so the image) gets is the mode git recorded, not this checkout's.
        assert listed.stdout.split()[0] == "100755", f"git records {path.relative_to(ROOT)} as not executable"


def assert_asgi_application(target: str) -> None:
    from django.conf import settings

    module_name, _, attribute = target.partition(":")
    assert attribute, f"{target!r} is not module:attribute"
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute)), f"{target} is not an ASGI callable"
    assert f"{module_name}.{attribute}" == settings.ASGI_APPLICATION
