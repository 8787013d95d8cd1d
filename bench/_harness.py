"""What the benchmarks share: an isolated world (a fresh PostgreSQL database, a Redis database of their
own, a temp folder), real subprocesses (workers, daphne) with the same environment, and a cleanup that
runs even when the benchmark fails or is interrupted.

Import this module before Django: ``Bench.__enter__`` sets the environment, then calls
``django.setup()`` and migrates the fresh database.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_HOST = "redis://127.0.0.1:6379"
# Every process a benchmark starts (and the engines those start) carries this variable, so cleanup can
# find engines that left their worker's process group without touching anything else.
RUN_TAG_VARIABLE = "TALKFORGE_BENCH_RUN"
OWNER_KEY = "talkforge-bench:owner"
# Chromium as tests/talkforge/test_browser.py launches it (same path, same flags).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_counters() -> list[int] | None:
    """The machine's CPU time so far, all cores together, in /proc/stat's columns (user nice system idle
    iowait irq softirq steal), or None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict:
    """Of the machine's CPU time between two ``cpu_counters``: the share busy (neither idle nor waiting for
    I/O) and the share stolen (taken by the hypervisor for other guests: a virtual machine's "slow spell",
    when the same work runs on less than the cores it has), in percent. Empty without /proc/stat."""
    if before is None or after is None:
        return {}
    spent = [end - start for start, end in zip(before, after, strict=True)]
    total = sum(spent) or 1
    idle, iowait, steal = spent[3], spent[4], spent[7]
    return {
        "busy_pct": round(100 * (total - idle - iowait - steal) / total, 1),
        "steal_pct": round(100 * steal / total, 1),
    }


def rq_floor_probe(key: str) -> None:
    """The RQ floor's job: note when it started running, first thing, then hand the time back."""
    started = time.time()
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(key, repr(started))


def _claim_redis_db() -> int:
    """An empty Redis database number (1–15) of our own; marked so a second benchmark picks another."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_HOST}/{number}")
        try:
            if client.dbsize() == 0 and client.set(OWNER_KEY, str(os.getpid()), nx=True):
                return number
        finally:
            client.close()
    raise RuntimeError("no empty Redis database (1-15) is free for the benchmark")


class Bench:
    """An isolated run: ``with Bench("name") as bench: ...``; everything is removed on the way out."""

    def __init__(self, name: str):
        self.name = name
        self.tag = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.db_name = f"talkforge_bench_{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"talkforge-bench-{name}-"))
        self.processes: list[subprocess.Popen] = []
        self.redis_db: int | None = None
        self.db_created = False
        self._old_handlers = {}
        # Other work on the machine (a test suite, a browser) shows up here: read the numbers with it.
        self.load_at_start = round(os.getloadavg()[0], 2)

    # --- setup ------------------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._setup()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    @staticmethod
    def _on_signal(signum, frame):
        raise SystemExit(128 + signum)

    def _setup(self) -> None:
        import psycopg

        self.redis_db = _claim_redis_db()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        os.environ.update(
            DJANGO_SETTINGS_MODULE="talkforge.settings.test",
            SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-only-secret-key-not-for-production-0123456789",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{self.db_name}",
            REDIS_URL=f"{REDIS_HOST}/{self.redis_db}",
            CHANNEL_LAYER_PREFIX=f"tfbench{os.getpid()}",
            TALKFORGE_VAR_DIR=str(self.tmp / "var"),
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(
                [str(ROOT), str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            **{RUN_TAG_VARIABLE: self.tag},
        )
        import django

        django.setup()
        from django.core.management import call_command

        started = time.monotonic()
        call_command("migrate", verbosity=0, interactive=False)
        log(
            f"database {self.db_name} migrated in {time.monotonic() - started:.1f} s; "
            f"Redis db {self.redis_db}; tmp {self.tmp}"
        )

    # --- subprocesses -----------------------------------------------------------------------------

    def start(self, args: list[str], name: str, *, service: bool = True) -> subprocess.Popen:
        """``python <args>`` from the repository root with this run's environment, in its own group.

        A ``service`` (worker, server) must keep running: ``check_alive`` fails once one has ended."""
        log_file = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = self.tmp / f"{name}.log"
        process.log_file = log_file
        process.service = service
        self.processes.append(process)
        return process

    def worker(self, node_name: str, name: str) -> subprocess.Popen:
        return self.start(["manage.py", "worker", "--node", node_name, "--name", name], name)

    def wait_workers(self, queue_name: str, count: int, timeout: float = 60) -> None:
        """Until ``count`` RQ workers listen on ``queue_name``."""
        from rq import Queue, Worker

        from core.queues import redis_connection

        queue = Queue(queue_name, connection=redis_connection())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Worker.count(queue=queue) >= count:
                return
            self.check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"{count} workers for {queue_name} did not start within {timeout:.0f} s")

    def daphne(self, name: str = "daphne") -> str:
        port = free_port()
        self.start(["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "talkforge.asgi:application"], name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return f"127.0.0.1:{port}"
            except OSError:
                self.check_alive()
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not start within 60 s")

    def check_alive(self) -> None:
        for process in self.processes:
            if process.service and process.poll() is not None:
                tail = process.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{process.args[1:]} exited with {process.returncode}:\n{tail}")

    @staticmethod
    def cpu_seconds(process: subprocess.Popen) -> tuple[float, float]:
        """CPU time (user + system) of a running process, and of the children it has waited for."""
        with open(f"/proc/{process.pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        utime, stime, cutime, cstime = (int(value) / tick for value in fields[11:15])
        return utime + stime, cutime + cstime

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # --- teardown ---------------------------------------------------------------------------------

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._stop_processes()
            self._kill_tagged()
        finally:
            try:
                self._drop_database()
            finally:
                self._free_redis()
                shutil.rmtree(self.tmp, ignore_errors=True)
                for sig, handler in self._old_handlers.items():
                    signal.signal(sig, handler)

    def _stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
            process.log_file.close()

    def _kill_tagged(self) -> None:
        """Engines run in sessions of their own: find ours by the run tag in their environment."""
        needle = f"{RUN_TAG_VARIABLE}={self.tag}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if needle in handle.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def _drop_database(self) -> None:
        if not self.db_created:
            return
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _free_redis(self) -> None:
        if self.redis_db is None:
            return
        import redis

        client = redis.Redis.from_url(f"{REDIS_HOST}/{self.redis_db}")
        try:
            client.flushdb()  # our own database number, claimed empty at the start
        finally:
            client.close()


def sshd_sessions(listener_pid: int) -> list[int]:
    """The per-connection sshd processes under the listener (``[priv]`` monitors and their session
    children). Found by parentage: sshd's setproctitle overwrites its environment, so a run tag in it
    cannot be found there."""
    sshd = os.path.realpath(shutil.which("sshd") or "/usr/sbin/sshd")
    children = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/exe") != sshd:
                continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                children[int(handle.read().rsplit(b")", 1)[1].split()[1])].append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], list(children[listener_pid])
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children[pid])
    return found


def report(**fields) -> None:
    """The benchmark's last line: one JSON object."""
    print(json.dumps(fields), flush=True)


# --- a loopback LLM ---------------------------------------------------------------------------------------


def tokens(text: str, size: int = 4) -> list[str]:
    """``text`` cut into the pieces the loopback LLM streams (``size`` characters each)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


class _StreamingLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions endpoint streaming its ``LoopbackLLM``'s ``reply`` at a hosted
    model's pace: the first token after ``ttft`` seconds, then one token every ``1 / tps`` seconds."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        llm = self.server.llm
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(llm.ttft)
        try:
            for piece in tokens(llm.reply):
                event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                time.sleep(1 / llm.tps)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


class LoopbackLLM:
    """The loopback LLM the chat benchmarks talk to: ``with LoopbackLLM(reply, ttft=0.3, tps=30) as llm:``
    serves on a free 127.0.0.1 port from a daemon thread (a thread per request) until the block ends.
    Every request gets the same ``reply``, streamed as ``_StreamingLLM`` does; ``url`` is the base URL
    the chat settings take (``CHAT_LLM_BASE_URL``)."""

    def __init__(self, reply: str, *, ttft: float, tps: float):
        self.reply, self.ttft, self.tps = reply, ttft, tps
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _StreamingLLM)
        self.server.daemon_threads = True
        self.server.llm = self  # what the handler reads reply, ttft and tps from

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/"

    def __enter__(self) -> LoopbackLLM:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Chromium -----------------------------------------------------------------------------------------


def chromium(playwright, *args: str):
    """Headless Chromium (``CHROMIUM_ARGS``) that plays media without a click first, plus ``args``."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required", *args]
    )


def chromium_with_microphone(playwright, wav_path):
    """``chromium`` whose pages get a fake microphone, allowed without asking, that plays ``wav_path``
    from the moment a page starts recording."""
    return chromium(
        playwright, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav_path}",
    )  # fmt: skip


def log_in(page, username: str = "bench", password: str = "bench-password-1") -> None:
    """Sign in on the login page (the session cookie then stays in the page's browser context)."""
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/")


def open_chat(page, conversation_pk: int) -> None:
    """The conversation's page, once its script is ready (static/js/chat.js sets
    ``window.TalkforgeChat``, whose ``live`` is the live player)."""
    page.goto(f"/chat/{conversation_pk}/")
    page.wait_for_function("window.TalkforgeChat && window.TalkforgeChat.live")


class LoopbackSSHD:
    """A real OpenSSH server on loopback for the SSH benchmarks: ``with LoopbackSSHD(bench) as sshd: ...``.

    Started as ``tests/ssh_server.py`` starts the suite's (its config, a throwaway host key, a user key,
    user ``tfssh``) on a free port, except that tfssh's password is left alone: a test run on this machine
    may be logging in with the one it set. Logins here use the key. Everything the benchmark leaves on
    the "remote" side lives in one folder of tfssh's home named after the run, so stopping also kills the
    processes that mention it (engines, shells) and removes it."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.server = None
        self.control_sockets: list[Path] = []
        # Outside ``bench.tmp`` (root-only): sshd reads authorized_keys as the logging-in user.
        self.folder = Path(tempfile.mkdtemp(prefix=f"talkforge-bench-sshd-{bench.name}-"))
        self.user_dir: Path | None = None

    def __enter__(self) -> LoopbackSSHD:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        import pwd

        from tests.ssh_server import SSHServer, ensure_user, keygen

        account = ensure_user()
        keygen(self.folder / "host_ed25519")
        keygen(self.folder / "user_ed25519")
        (self.folder / "authorized_keys").write_text((self.folder / "user_ed25519.pub").read_text())
        (self.folder / "authorized_keys").chmod(0o644)
        os.chmod(self.folder, 0o755)
        self.server = SSHServer(
            host="127.0.0.1", port=free_port(), user=account.pw_name, password="",
            private_key=(self.folder / "user_ed25519").read_text(), encrypted_key="", key_passphrase="",
            host_key_path=self.folder / "host_ed25519", folder=self.folder,
        )  # fmt: skip
        host_key_type, host_key = (self.folder / "host_ed25519.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.server.port} {host_key_type} {host_key}\n")
        self.user_dir = Path(account.pw_dir) / f"talkforge-bench-{self.bench.tag}"
        self.user_dir.mkdir()
        os.chown(self.user_dir, account.pw_uid, account.pw_gid)
        self.uid = pwd.getpwnam(account.pw_name).pw_uid
        self.server.start()
        log(f"sshd on 127.0.0.1:{self.server.port}; remote folder {self.user_dir}")

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def key_path(self) -> Path:
        return self.folder / "user_ed25519"

    def ssh_options(self) -> list[str]:
        """Options for OpenSSH's ssh and scp: no user config or agent, the pinned host key, the user key."""
        return [
            "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-i", str(self.key_path),
        ]  # fmt: skip

    def ssh_argv(self, *command: str, control: Path | None = None) -> list[str]:
        argv = ["ssh", *self.ssh_options(), "-p", str(self.server.port)]
        if control is not None:
            if control not in self.control_sockets:
                self.control_sockets.append(control)
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"]
        return [*argv, f"{self.server.user}@127.0.0.1", *command]

    def user_folder(self, name: str) -> Path:
        """A fresh folder owned by the SSH user inside this run's remote folder."""
        folder = self.user_dir / name
        folder.mkdir(parents=True)
        os.chown(folder, self.uid, -1)
        return folder

    def register_node(self, name: str, gpus: int = 1):
        """An SSH node on this server, registered and confirmed as a staff user would, with a stand-in
        nvidia-smi first on its environment PATH (as the suite's ``make_ssh_node`` does)."""
        from gpu_nodes.models import Node
        from gpu_nodes.services import node_confirm_host_key, node_register_ssh
        from tests.ssh_server import fingerprint

        folder = self.user_folder(name)
        bin_dir = folder / "env-bin"
        bin_dir.mkdir()
        lines = "\n".join(f"{i}, NVIDIA A100-SXM4-80GB, 81920, 0, 0" for i in range(gpus))
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\ncat <<'CSV'\n{lines}\nCSV\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
        os.chown(bin_dir, self.uid, -1)
        node = node_register_ssh(
            name=name, host="127.0.0.1", port=self.server.port, username=self.server.user,
            workdir=str(folder / "work"), environment=str(bin_dir), private_key=self.server.private_key,
        )  # fmt: skip
        node = node_confirm_host_key(node=node, fingerprint=fingerprint(self.folder / "host_ed25519.pub"))
        if node.status != Node.Status.ONLINE:
            raise RuntimeError(f"SSH node probe failed: {node.last_error}")
        return node

    def close(self) -> None:
        try:
            for control in self.control_sockets:
                if control.exists():
                    subprocess.run(
                        ["ssh", "-F", "/dev/null", "-o", f"ControlPath={control}", "-O", "exit", "x"],
                        capture_output=True, timeout=10, check=False,
                    )  # fmt: skip
            if self.server is not None:
                self.server.stop()  # no new connections
                self._kill_connections()  # a worker still running cannot start anything more
        finally:
            if self.user_dir is not None:
                # Engines, shells and their children, until none is left and the folder is gone.
                for _ in range(20):
                    killed = self._kill_mentioning(str(self.user_dir))
                    shutil.rmtree(self.user_dir, ignore_errors=True)
                    if not killed and not self.user_dir.exists():
                        break
                    log(f"killed {killed} process(es) under {self.user_dir}")
                    time.sleep(0.2)
            shutil.rmtree(self.folder, ignore_errors=True)

    def _kill_connections(self) -> None:
        """sshd's per-connection processes under this server's listener (found by parentage)."""
        if self.server is None or getattr(self.server, "process", None) is None:
            return
        for pid in sshd_sessions(self.server.process.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _kill_mentioning(needle: str) -> int:
        """SIGKILL each process whose command line or environment mentions ``needle`` (one pid at a time);
        how many there were."""
        encoded, killed = needle.encode(), 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    found = encoded in handle.read()
                if not found:
                    with open(f"/proc/{entry}/environ", "rb") as handle:
                        found = encoded in handle.read()
                if found:
                    os.kill(int(entry), signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                continue
        return killed
