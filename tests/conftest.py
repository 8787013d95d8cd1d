"""Shared fixtures: real PostgreSQL (pytest-django's test database), real Redis (a database number of this
run's own, emptied before each test that uses it), real RQ workers and a real ASGI server as
subprocesses of the suite, and a local node whose GPUs are an ``nvidia-smi`` stand-in."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage
from django.conf import settings
from django.db import connection

from accounts.models import User
from gpu_nodes.models import Node
from gpu_nodes.services import node_probe

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def staff(db):
    return User.objects.create_user("staff", password="staff-password-1", is_staff=True)


@pytest.fixture
def alices_things(alice, make_node):
    """One of each of alice's objects, with what hangs off them, for the tests that poke at them as bob:
    node, avatar, checkpoint, voice, conversation (a question and a reply), a finished job, a video."""
    from django.utils import timezone

    from avatars.models import Avatar, Checkpoint
    from chat.models import Conversation, Message, Voice
    from jobs.models import Job
    from videos.models import Video

    node = make_node()
    avatar = Avatar.objects.create(
        owner=alice, name="Ada", slug=f"ada-{alice.pk}", engine=Avatar.Engine.DEMO,
        status=Avatar.Status.TRAINED, video="avatars/x/x.mp4", consent_given_at=timezone.now(),
        consent_given_by=alice, consent_statement="ok",
    )  # fmt: skip
    checkpoint = Checkpoint.objects.create(
        avatar=avatar, node=node, stage="fine", iteration=100, path="/x", size_bytes=1
    )
    voice = Voice.objects.create(
        owner=alice, name="Her voice", slug=f"her-voice-{alice.pk}", reference="voices/x/ref.wav",
        consent_given_at=timezone.now(), consent_given_by=alice, consent_statement="ok",
    )  # fmt: skip
    conversation = Conversation.objects.create(owner=alice, avatar=avatar, voice=voice, title="private")
    Message.objects.create(conversation=conversation, role="user", text="secret question")
    reply = Message.objects.create(conversation=conversation, role="assistant", text="private reply")
    job = Job.objects.create(
        owner=alice, kind="demo_train", params={"seconds": 1}, status="succeeded", stage="done"
    )
    video = Video.objects.create(
        owner=alice, avatar=avatar, checkpoint=checkpoint, source="text", text="secret words",
        folder="videos/x", audio="videos/x/audio.wav", audio_duration=1.0, batch_size=128,
        pose_mode="ping_pong",
    )  # fmt: skip
    return {"node": node, "avatar": avatar, "checkpoint": checkpoint, "voice": voice,
            "conversation": conversation, "reply": reply, "job": job, "video": video}  # fmt: skip


@pytest.fixture
def redis_db():
    """This run's Redis database (claimed for it alone: talkforge/settings/redis_claim.py), empty at the
    start of the test."""
    from core.queues import redis_connection

    client = redis_connection()
    client.flushdb()
    yield client
    client.flushdb()


def write_fake_nvidia_smi(folder: Path, gpus: list[tuple[str, int]]) -> Path:
    """An ``nvidia-smi`` that prints the documented CSV for ``gpus`` ((name, MiB) pairs)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"{i}, {name}, {mem}, 0, 0" for i, (name, mem) in enumerate(gpus))
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'CSV'\n{lines}\nCSV\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture
def make_node(db, tmp_path, monkeypatch):
    """A local node probed through a stand-in nvidia-smi (``gpus=0``: no nvidia-smi → one CPU slot)."""

    def make(name="local", gpus=0):
        bin_dir = tmp_path / f"bin-{name}"
        if gpus:
            write_fake_nvidia_smi(bin_dir, [("NVIDIA H100 80GB HBM3", 81559)] * gpus)
            monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        else:
            monkeypatch.setenv(
                "PATH",
                os.pathsep.join(
                    p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()
                ),
            )
        workdir = tmp_path / f"work-{name}"
        workdir.mkdir()
        node = Node.objects.create(name=name, kind=Node.Kind.LOCAL, workdir=str(workdir))
        node = node_probe(node=node)
        assert node.status == Node.Status.ONLINE, node.last_error
        return node

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra) -> dict[str, str]:
    """The environment for a worker or server that must see this test's database and Redis."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="talkforge.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYER_PREFIX,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


class Processes:
    """Subprocesses started by a test, stopped at its end (each in its own process group)."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], name: str, **env) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=subprocess_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = self.tmp_path / f"{name}.log"
        self.started.append(process)
        return process

    def worker(self, *nodes: str, name: str = "worker", **env) -> subprocess.Popen:
        args = ["manage.py", "worker"]
        for node in nodes:
            args += ["--node", node]
        return self.start(args, name, **env)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                with_suppress(os.killpg, process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with_suppress(os.killpg, process.pid, signal.SIGKILL)
                process.wait(5)


def with_suppress(func, *args):
    with contextlib.suppress(ProcessLookupError):
        func(*args)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def asgi_server(transactional_db, processes, redis_db):
    """Daphne serving the whole project (HTTP and websockets) on a free loopback port."""
    port = free_port()
    processes.start(
        ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "talkforge.asgi:application"],
        "daphne",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("daphne did not start; see daphne.log in the test's tmp_path")


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


@pytest.fixture(scope="session")
def ssh_server():
    """One OpenSSH server for the whole run (see tests/ssh_server.py). Its folder is outside pytest's
    root-only tmp tree: sshd reads authorized_keys as the logging-in user."""
    import shutil
    import tempfile

    from .ssh_server import start_server

    folder = Path(tempfile.mkdtemp(prefix="talkforge-sshd-"))
    server = start_server(folder)
    yield server
    server.stop()
    shutil.rmtree(server.run_folder, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _media_root_removed_at_the_end():
    """Test media live in a folder of this run's own under the temp folder; it goes at the end."""
    import shutil

    yield
    run_folder = Path(settings.MEDIA_ROOT).parent
    if run_folder.name.startswith("talkforge-test-"):
        shutil.rmtree(run_folder, ignore_errors=True)


def node_environment(folder: Path) -> Path:
    """A bare node's environment as on a cloud GPU machine: a venv of the system Python whose packages
    include numpy and OpenCV (our evaluation script needs them; engine environments have them). The SSH
    user cannot read this process's interpreter, so the venv is the system one's, and a .pth file lends
    it this suite's site-packages (same CPython 3.11 ABI). Returns its bin folder (what PATH gets)."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python3*/site-packages"))
    (site / "talkforge-tests.pth").write_text(f"{Path(np.__file__).parent.parent}\n")
    return folder / "bin"


@pytest.fixture
def make_ssh_node(db, ssh_server):
    """An SSH node on the loopback sshd, registered and confirmed like a staff user would, with a stand-in
    nvidia-smi first on the remote PATH (the node's environment folder)."""
    from gpu_nodes.services import node_confirm_host_key, node_register_ssh

    def make(name="remote", gpus=1, login="key", **overrides):
        folder = ssh_server.user_folder(name)
        bin_dir = node_environment(folder / "env")
        if gpus:
            write_fake_nvidia_smi(bin_dir, [("NVIDIA A100-SXM4-80GB", 81920)] * gpus)
        owner = ssh_server.home.stat()
        for path in [folder / "env", *(folder / "env").rglob("*")]:
            os.lchown(path, owner.st_uid, owner.st_gid)
        credentials = (
            {"private_key": ssh_server.private_key} if login == "key" else {"password": ssh_server.password}
        )
        fields = {
            "name": name, "host": ssh_server.host, "port": ssh_server.port, "username": ssh_server.user,
            "workdir": str(folder / "work"), "environment": str(bin_dir), **credentials, **overrides,
        }  # fmt: skip
        node = node_register_ssh(**fields)
        return node_confirm_host_key(node=node, fingerprint=ssh_server.host_fingerprint)

    return make


FACE = Path(skimage.__file__).parent / "data" / "astronaut.png"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Small test videos, made once: a good one and one for each problem."""
    folder = tmp_path_factory.mktemp("videos")
    face = ["-loop", "1", "-i", str(FACE)]
    voice = ["-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100"]
    moving = "scale=720:720,zoompan=z='1+0.02*sin(on/8)':d=1:s=720x720:fps=30"
    encode = ["-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
    made = {
        "good": [*face, *voice, "-vf", moving, *encode],
        "no_face": ["-f", "lavfi", "-i", "testsrc2=size=512x512:rate=30", *voice, *encode],
        "two_faces": [
            *face,
            *voice,
            "-filter_complex",
            "[0:v]scale=400:400,split[a][b];[a][b]hstack",
            *encode,
        ],
        # 256×256 passes the resolution rule, but the face is only ~47 px high.
        "tiny_face": [*face, *voice, "-vf", "scale=256:256", *encode],
        "silent": [*face, "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-vf", moving, *encode],
        "no_audio": [*face, "-vf", moving, "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
        "short": [
            *face,
            *voice,
            "-vf",
            moving,
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-shortest",
        ],
        "small": [*face, *voice, "-vf", "scale=128:128", *encode],
    }
    paths = {}
    for name, args in made.items():
        paths[name] = folder / f"{name}.mp4"
        ffmpeg(*args, str(paths[name]))
    paths["text"] = folder / "notes.mp4"
    paths["text"].write_text("this is not a video\n")
    return paths
