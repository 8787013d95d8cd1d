"""SSH nodes through paramiko: the one module that talks to the SSH library.

- Host keys are pinned: ``host_key_fetch`` reads the key a server presents (shown to a staff user as a
  SHA256 fingerprint to confirm); every connection compares the presented key with the pinned one and
  refuses a different key with both fingerprints in the message. Nothing is accepted silently.
- One transport per node per process, with keepalive, reused by every command and job, and opened
  again when it broke. A jump host is another SSH node; its transport carries a direct-tcpip channel.
- Jobs start in a session of their own (``setsid``) with a pid file and the ``TALKFORGE_JOB`` marker,
  so cancel and timeouts kill the whole remote process tree, never an unrelated process.
- Files move over exec channels (``cat``), not SFTP: no per-request round trips, so throughput is close
  to OpenSSH's scp. They land under a temporary name, are verified by size and SHA-256, then renamed;
  an interrupted transfer resumes from the bytes already there.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import select
import shlex
import socket
import threading
import time
from pathlib import Path

import paramiko
from django.conf import settings

from . import secrets
from .connections import (
    MARKER_VARIABLE,
    CommandNotFound,
    CommandResult,
    ConnectionLost,
    NodeConnection,
    NodeError,
    RunningProcess,
    Unreachable,
)
from .models import Node

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CHUNK = 1 << 20
LARGE_FILE = 8 << 20  # from this size on, hash with openssl where the node has it
_FAST_SHA256 = (
    'if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$1"; else sha256sum "$1"; fi'
)
WINDOW_SIZE = 16 << 20
MAX_PACKET = 1 << 17  # OpenSSH accepts packets up to 256 KiB; bigger packets mean fewer Python round trips


def upload_partial_path(remote_path: str, sha256: str) -> str:
    """Where an upload of content ``sha256`` to ``remote_path`` grows until it is whole and renamed.

    Two workers may send the same file at once (the first jobs on a fresh node both upload the demo engine):
    each writes its own partial file, named after the content and the writer (host, process and thread),
    and the last rename wins with identical bytes. A retry by the same writer resumes its partial file."""
    directory, name = os.path.split(remote_path)
    writer = f"{socket.gethostname()}-{os.getpid()}-{threading.get_native_id()}"
    return f"{directory}/.{name}.{sha256[:12]}.{writer}.part"


class AuthenticationFailed(NodeError):
    pass


class HostKeyChanged(NodeError):
    pass


def key_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint (``ssh-keygen -l``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _open_socket(host: str, port: int, via: Node | None):
    timeout = settings.SSH_CONNECT_TIMEOUT
    if via is not None:
        try:
            return transport_for(via).open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as error:
            raise Unreachable(
                f"Jump host {via.name} could not reach {host}:{port} ({error}). Check the address and port "
                "as seen from the jump host."
            ) from None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        # Without it Nagle holds each new channel request until sshd's delayed ACK of the previous close
        # (~40 ms): back-to-back commands went from ~45 ms to ~4 ms with it (bench/ssh_dispatch.py).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as error:
        raise Unreachable(
            f"Cannot reach {host}:{port} ({error.strerror or error}). Check the address and port, that the "
            "machine is running, and that a firewall lets SSH through."
        ) from None


def _start_transport(host: str, port: int, via: Node | None) -> paramiko.Transport:
    sock = _open_socket(host, port, via)
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET)
    # paramiko ranks AES-GCM last; it moves bytes 1.4–2× faster than CTR + a separate HMAC here.
    options = transport.get_security_options()
    preferred = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    options.ciphers = (
        *[c for c in preferred if c in options.ciphers],
        *[c for c in options.ciphers if c not in preferred],
    )
    try:
        transport.start_client(timeout=settings.SSH_CONNECT_TIMEOUT)
    except (paramiko.SSHException, OSError, EOFError) as error:
        transport.close()
        raise Unreachable(
            f"{host}:{port} did not complete an SSH handshake ({error}). Is it an SSH server?"
        ) from None
    return transport


def host_key_fetch(*, host: str, port: int, via: Node | None = None) -> tuple[str, str, str]:
    """The host key ``host`` presents: (type, base64, SHA256 fingerprint). Nothing is trusted yet."""
    transport = _start_transport(host, port, via)
    try:
        key = transport.get_remote_server_key()
        return key.get_name(), key.get_base64(), key_fingerprint(key)
    finally:
        transport.close()


def load_private_key(text: str, passphrase: str = "") -> paramiko.PKey:
    """A private key in OpenSSH or PEM format (Ed25519, ECDSA or RSA)."""
    problems = []
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase or None)
        except paramiko.PasswordRequiredException:
            raise NodeError(
                "The private key is protected by a passphrase: enter its passphrase too."
            ) from None
        except (paramiko.SSHException, ValueError, IndexError) as error:
            problems.append(str(error))
    if any("password" in p.lower() or "decrypt" in p.lower() or "checkints" in p.lower() for p in problems):
        raise NodeError("The private key's passphrase is wrong.")
    raise NodeError("The private key is not an OpenSSH or PEM Ed25519, ECDSA or RSA private key.")


class _TransportPool:
    """One transport per node in this process. Each node has its own lock, so connecting to one node
    (which may first connect to its jump host) never waits on another node's slow handshake."""

    def __init__(self):
        self._lock = threading.Lock()
        self._node_locks: dict[int, threading.Lock] = {}
        self._transports: dict[int, tuple[paramiko.Transport, tuple]] = {}
        self._pid = os.getpid()

    def _node_lock(self, node: Node) -> threading.Lock:
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share its parent's sockets
                self._transports, self._node_locks, self._pid = {}, {}, os.getpid()
            return self._node_locks.setdefault(node.pk, threading.Lock())

    def get(self, node: Node) -> paramiko.Transport:
        identity = (node.host, node.port, node.username, node.host_key, node.password_encrypted,
                    node.private_key_encrypted, node.jump_id)  # fmt: skip
        with self._node_lock(node):
            cached = self._transports.get(node.pk)
            if cached and cached[0].is_active() and cached[1] == identity:
                return cached[0]
            if cached:
                cached[0].close()
            transport = _connect(node)
            self._transports[node.pk] = (transport, identity)
            return transport

    def drop(self, node: Node) -> None:
        with self._node_lock(node):
            cached = self._transports.pop(node.pk, None)
        if cached:
            cached[0].close()


pool = _TransportPool()


def transport_for(node: Node) -> paramiko.Transport:
    return pool.get(node)


def _connect(node: Node) -> paramiko.Transport:
    if not node.host_key_pinned:
        raise NodeError(
            f"The host key of node {node.name} has not been confirmed: a staff user must check its "
            "fingerprint and confirm it (admin → node → Confirm host key) before Talkforge connects."
        )
    transport = _start_transport(node.host, node.port, node.jump)
    try:
        key = transport.get_remote_server_key()
        if key.get_name() != node.host_key_type or key.get_base64() != node.host_key:
            raise HostKeyChanged(
                f"The host key of node {node.name} ({node.host}:{node.port}) changed: pinned "
                f"{node.host_key_fingerprint}, the server now presents {key_fingerprint(key)}. If the server "
                "was reinstalled, confirm the new key in the admin; otherwise someone may be intercepting "
                "the connection."
            )
        _authenticate(node, transport)
        transport.set_keepalive(settings.SSH_KEEPALIVE_INTERVAL)
        return transport
    except BaseException:
        transport.close()
        raise


def _authenticate(node: Node, transport: paramiko.Transport) -> None:
    try:
        if node.private_key_encrypted:
            key = load_private_key(
                secrets.decrypt(node.private_key_encrypted), secrets.decrypt(node.key_passphrase_encrypted)
            )
            transport.auth_publickey(node.username, key)
        elif node.password_encrypted:
            transport.auth_password(node.username, secrets.decrypt(node.password_encrypted))
        else:
            raise AuthenticationFailed(f"Node {node.name} has no password or private key: enter one.")
    except paramiko.AuthenticationException:
        raise AuthenticationFailed(
            f"Node {node.name} refused the login of user {node.username!r}: the password or key is wrong, "
            "or the user may not log in over SSH. Enter the credentials again."
        ) from None
    except secrets.SecretUnreadable as error:
        raise AuthenticationFailed(str(error)) from None
    except (paramiko.SSHException, OSError, EOFError) as error:
        raise ConnectionLost(
            f"The connection to node {node.name} broke while logging in ({error})."
        ) from None


# --- remote shell snippets ---------------------------------------------------------------------------

# Members of process group $g carrying marker $m (both set before this snippet runs). POSIX sh: dash's
# kill takes no "--", so a group is signalled as "kill -TERM -<pgid>".
_MEMBERS = r"""
members() {
  for d in /proc/[0-9]*; do
    { read -r line < "$d/stat"; } 2>/dev/null || continue
    rest=${line##*) }
    set -- $rest
    [ "$3" = "$g" ] && [ "$1" != Z ] || continue
    tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$m" && echo "${d#/proc/}"
  done
}
"""

_KILL = (
    _MEMBERS
    + r"""
[ -n "$(members)" ] || { echo gone; exit 0; }
kill -TERM "-$g" 2>/dev/null
i=0
while [ -n "$(members)" ] && [ "$i" -lt "$ticks" ]; do sleep 0.1; i=$((i+1)); done
if [ -n "$(members)" ]; then
  kill -KILL "-$g" 2>/dev/null
  i=0
  while [ -n "$(members)" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
fi
echo killed
"""
)

_STARTER = 'echo "$$" > "$0"; printf "TALKFORGE_PID %s\\n" "$$"; exec "$@"'


class SSHProcess(RunningProcess):
    """A job's process on an SSH node; its first output line (our starter's) carries its pid."""

    def __init__(self, channel: paramiko.Channel, node: Node):
        self._channel, self._node = channel, node
        self._buffer = b""
        header = self._read_header()
        self.pid = header

    def _read_header(self) -> int:
        deadline = time.monotonic() + settings.SSH_CONNECT_TIMEOUT + 20
        while b"\n" not in self._buffer:
            if time.monotonic() > deadline:
                raise NodeError(f"Node {self._node.name} did not start the job within the time allowed.")
            data = self._recv(1.0)
            if data == b"":
                status = self._channel.recv_exit_status()
                output = self._buffer.decode("utf-8", "replace").strip()
                if status == 127:
                    raise CommandNotFound(f"Command not found on node {self._node.name}: {output[:500]}")
                raise NodeError(
                    f"The job could not start on node {self._node.name} (exit {status}): {output[:500]}"
                )
            if data:
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        match = re.fullmatch(rb"TALKFORGE_PID (\d+)", line.strip())
        if not match:
            raise NodeError(f"Unexpected start-up output from node {self._node.name}: {line[:200]!r}")
        return int(match.group(1))

    def _recv(self, timeout: float) -> bytes | None:
        if self._channel.recv_ready():
            return self._channel.recv(65536)
        if self._channel.closed or self._channel.eof_received:
            data = self._channel.recv(65536) if self._channel.recv_ready() else b""
            return data
        ready, _, _ = select.select([self._channel], [], [], timeout)
        if not ready:
            if not self._channel.get_transport() or not self._channel.get_transport().is_active():
                raise ConnectionLost(f"The connection to node {self._node.name} was lost.")
            return None
        return self._channel.recv(65536)

    def read(self, timeout: float) -> bytes | None:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        return self._recv(timeout)

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._channel.exit_status_ready():
            transport = self._channel.get_transport()
            if transport is None or not transport.is_active():
                raise ConnectionLost(f"The connection to node {self._node.name} was lost.")
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        if self._channel.exit_status == -1:
            # Closed without an exit status (setsid -w turns even a signal death into one): sshd went
            # away, not the engine.
            raise ConnectionLost(f"The connection to node {self._node.name} was lost while the job ran.")
        return self._channel.recv_exit_status()

    def write(self, data: bytes) -> None:
        # The exec channel carries the process's stdin whether or not it was asked for (start(stdin=...)).
        try:
            self._channel.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise ConnectionLost(
                f"Could not write to the process on node {self._node.name} ({error})."
            ) from None

    def close_stdin(self) -> None:
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            self._channel.shutdown_write()


class SSHConnection(NodeConnection):
    def __init__(self, node: Node):
        self.node = node

    # -- commands --

    def _shell(self, argv, *, cwd=None, env=None) -> str:
        for key in env or {}:
            if not ENV_NAME.match(key):
                raise NodeError(f"Environment variable name {key!r} is not allowed.")
        parts = []
        if self.node.runtime == Node.Runtime.BARE and self.node.environment:
            parts.append(f'export PATH={shlex.quote(self.node.environment)}:"$PATH";')
        if cwd:
            parts.append(f"cd {shlex.quote(cwd)} &&")
        assignments = [f"{key}={value}" for key, value in (env or {}).items()]
        parts.append(
            shlex.join(["exec", "env", *assignments, *argv]) if assignments else shlex.join(["exec", *argv])
        )
        return " ".join(parts)

    def _channel(self) -> paramiko.Channel:
        try:
            return transport_for(self.node).open_session(timeout=settings.SSH_CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as error:
            pool.drop(self.node)
            # One retry on a fresh transport: the pooled one may have died since it was last used.
            try:
                return transport_for(self.node).open_session(timeout=settings.SSH_CONNECT_TIMEOUT)
            except (paramiko.SSHException, OSError, EOFError):
                raise ConnectionLost(
                    f"Could not open a channel to node {self.node.name} ({error})."
                ) from None

    def _exec(self, command: str, *, stdin: bytes | None = None, timeout: float = 60) -> CommandResult:
        channel = self._channel()
        try:
            channel.settimeout(timeout)
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
                channel.shutdown_write()
            chunks = []
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                chunks.append(data)
            status = channel.recv_exit_status()
            if status == -1 and not channel.exit_status_ready():
                # The server went away before telling the command's status (sshd stopped, session cut):
                # the connection is lost, whatever the command did.
                raise EOFError("the session ended without an exit status")
        except TimeoutError:
            raise NodeError(
                f"A command on node {self.node.name} did not finish within {timeout:.0f} s."
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as error:
            pool.drop(self.node)
            raise ConnectionLost(f"The connection to node {self.node.name} was lost ({error}).") from None
        finally:
            channel.close()
        return CommandResult(status, b"".join(chunks).decode("utf-8", "replace"))

    def run(self, argv, *, cwd=None, env=None, timeout=60):
        result = self._exec(self._shell(argv, cwd=cwd, env=env), timeout=timeout)
        if result.returncode == 127:
            raise CommandNotFound(
                f"{argv[0]!r} was not found on node {self.node.name}: {result.output.strip()[:300]}"
            )
        return result

    def start(self, argv, *, marker, cwd=None, env=None, stdin=False):
        pid_dir = f"{self.node.workdir.rstrip('/')}/.talkforge/pids"
        pid_file = f"{pid_dir}/{marker}.pid"
        full_env = {**(env or {}), MARKER_VARIABLE: marker, "PYTHONUNBUFFERED": "1"}
        inner = ["setsid", "-w", "sh", "-c", _STARTER, pid_file, *argv]
        folders = shlex.join(["mkdir", "-p", pid_dir, *([cwd] if cwd else [])])
        command = f"{folders} && {self._shell(inner, cwd=cwd, env=full_env)} 2>&1"
        channel = self._channel()
        channel.set_combine_stderr(True)
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as error:
            channel.close()
            raise ConnectionLost(f"Could not start the job on node {self.node.name} ({error}).") from None
        return SSHProcess(channel, self.node)

    def _group_script(self, body: str, pid: int, marker: str, **extra) -> str:
        assignments = " ".join(
            f"{k}={shlex.quote(str(v))}"
            for k, v in {"g": pid, "m": f"{MARKER_VARIABLE}={marker}", **extra}.items()
        )
        return f"{assignments}; {body}"

    def kill_tree(self, pid, *, marker, grace):
        script = self._group_script(_KILL, int(pid), marker, ticks=int(grace * 10))
        result = self._exec(shlex.join(["sh", "-c", script]), timeout=grace + 30)
        if result.returncode != 0:
            raise NodeError(
                f"Could not stop the job's processes on node {self.node.name}: {result.output[:300]}"
            )
        return "killed" in result.output

    def is_running(self, pid, *, marker):
        script = self._group_script(_MEMBERS + "\nmembers", int(pid), marker)
        return bool(self._exec(shlex.join(["sh", "-c", script]), timeout=30).output.strip())

    def exists(self, path):
        return self._exec(shlex.join(["test", "-e", path])).returncode == 0

    def make_dirs(self, path):
        result = self._exec(shlex.join(["mkdir", "-p", path]))
        if result.returncode != 0:
            raise NodeError(
                f"Could not create {path} on node {self.node.name}: {result.output.strip()[:300]}"
            )

    # -- files --

    def _remote_size(self, path: str) -> int | None:
        result = self._exec(shlex.join(["stat", "-c", "%s", path]))
        return (
            int(result.output.strip()) if result.returncode == 0 and result.output.strip().isdigit() else None
        )

    def _remote_sha256(self, path: str, size: int = 0) -> str:
        # Debian's sha256sum ignores the CPU's SHA extensions (0.7 s for 200 MB against openssl's 0.16 s);
        # openssl starts slower, so small files keep sha256sum.
        command = shlex.join(["sha256sum", path])
        if size >= LARGE_FILE:
            command = shlex.join(["sh", "-c", _FAST_SHA256, "sh", path])
        result = self._exec(command, timeout=3600)
        if result.returncode != 0:
            raise NodeError(f"Could not hash {path} on node {self.node.name}: {result.output.strip()[:300]}")
        return result.output.split()[0]

    def put(self, local_path, remote_path):
        local_path = Path(local_path)
        size = local_path.stat().st_size
        directory, name = os.path.split(remote_path)
        local_hash = _sha256_file(local_path)
        partial = upload_partial_path(remote_path, local_hash)
        if self._same_file_there(remote_path, size, local_hash):
            return  # already there, byte for byte (the demo engine's scripts, a dataset's video)
        self.make_dirs(directory)
        if self.free_bytes(directory) < size - (self._remote_size(partial) or 0):
            raise NodeError(
                f"Node {self.node.name} has not enough free space in {directory} for {local_path.name} "
                f"({size / 1e6:.0f} MB): free some space on the node or choose another node."
            )
        for _ in range(2):  # a corrupted partial file is thrown away once, then the copy starts over
            offset = self._remote_size(partial) or 0
            if offset > size:
                offset = 0
            self._upload_from(local_path, partial, offset)
            if self._remote_sha256(partial, size) == local_hash:
                result = self._exec(shlex.join(["mv", "-f", partial, remote_path]))
                if result.returncode != 0 and not self._same_file_there(remote_path, size, local_hash):
                    raise NodeError(f"Could not move {partial} into place: {result.output.strip()[:300]}")
                return
            self._exec(shlex.join(["rm", "-f", partial]))
        raise NodeError(
            f"{local_path.name} arrived damaged on node {self.node.name} twice (SHA-256 differs)."
        )

    def _same_file_there(self, remote_path: str, size: int, sha256: str) -> bool:
        """One round trip: hash the remote file only if its size already matches."""
        hasher = _FAST_SHA256 if size >= LARGE_FILE else 'sha256sum "$1"'
        script = f'[ "$(stat -c %s "$1" 2>/dev/null)" = "$2" ] && {{ {hasher}; }}'
        result = self._exec(shlex.join(["sh", "-c", script, "sh", remote_path, str(size)]), timeout=3600)
        return result.returncode == 0 and result.output.split()[:1] == [sha256]

    @contextlib.contextmanager
    def _transfer(self, what: str):
        """A channel for one file transfer; a broken connection becomes ConnectionLost (it resumes later)."""
        channel = self._channel()
        try:
            yield channel
        except (paramiko.SSHException, OSError, EOFError) as error:
            pool.drop(self.node)
            raise ConnectionLost(
                f"The {what} on node {self.node.name} broke ({error}); it resumes on retry."
            ) from None
        finally:
            channel.close()

    def _upload_from(self, local_path: Path, partial: str, offset: int) -> None:
        redirect = ">>" if offset else ">"
        with self._transfer(f"upload of {local_path.name}") as channel:
            channel.set_combine_stderr(True)
            channel.exec_command(f"cat {redirect} {shlex.quote(partial)}")
            with open(local_path, "rb") as source:
                source.seek(offset)
                while chunk := source.read(CHUNK):
                    channel.sendall(chunk)
            channel.shutdown_write()
            output = b"".join(iter(lambda: channel.recv(65536), b"")).decode("utf-8", "replace").strip()
            status = channel.recv_exit_status()
        if status != 0:
            raise NodeError(
                f"Writing {partial} on node {self.node.name} failed (exit {status}): {output[:300]}"
            )

    def get(self, remote_path, local_path):
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = local_path.with_name(f".{local_path.name}.part")
        size = self._remote_size(remote_path)
        if size is None:
            raise NodeError(f"{remote_path} does not exist on node {self.node.name}.")
        remote_hash = self._remote_sha256(remote_path, size)
        for _ in range(2):
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > size:
                offset = 0
            self._download_from(remote_path, partial, offset)
            if partial.stat().st_size == size and _sha256_file(partial) == remote_hash:
                os.replace(partial, local_path)
                return
            partial.unlink(missing_ok=True)
        raise NodeError(f"{remote_path} arrived damaged from node {self.node.name} twice (SHA-256 differs).")

    def _download_from(self, remote_path: str, partial: Path, offset: int) -> None:
        with self._transfer(f"download of {remote_path}") as channel:
            channel.exec_command(shlex.join(["tail", "-c", f"+{offset + 1}", remote_path]))
            with open(partial, "ab" if offset else "wb") as target:
                while data := channel.recv(CHUNK):
                    target.write(data)
            status = channel.recv_exit_status()
        if status != 0:
            raise NodeError(f"Reading {remote_path} on node {self.node.name} failed (exit {status}).")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
