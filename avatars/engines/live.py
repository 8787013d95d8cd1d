"""The platform's side of a live render session's wire (avatars/engines/node/live_session.py): how a session
is started on a node for an engine, and a link to it through ``live_relay.py`` over the node's own process
channel (``NodeConnection.start(stdin=True)``: a subprocess on a local node, an exec channel of the pooled
SSH transport on an SSH node).

The link sends JSON lines and reads frames: a 4-byte big-endian header length, the JSON header, then
``size`` bytes of payload when the header has one."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from gpu_nodes.connections import NodeConnection, NodeError, RunningProcess
from gpu_nodes.models import Node

from .base import scripts_on_node

SESSION_SCRIPT = "node/live_session.py"
RELAY_SCRIPT = "node/live_relay.py"
MAX_HEADER = 1 << 20


class LinkClosed(NodeError):
    """The relay (or the session behind it) went away; the message says what was last heard."""


@dataclass(frozen=True)
class SessionCommand:
    """What starts a session on a node: argv (not yet wrapped for the runtime), cwd, env, scripts to put."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    scripts: tuple
    socket: str


class _NodeOf:
    """``scripts_on_node`` reads ``job.node``: this carries a node where there is no job."""

    def __init__(self, node: Node):
        self.node = node


def live_folder(node: Node) -> PurePosixPath:
    return PurePosixPath(node.workdir) / "live"


def session_command(*, engine, node: Node, name: str, config: dict, idle_seconds: float) -> SessionCommand:
    """The command that runs ``engine``'s live backend as session ``name`` (a slug) on ``node``."""
    python, (server, backend), scripts = scripts_on_node(_NodeOf(node), SESSION_SCRIPT, engine.live_backend)
    folder = live_folder(node)
    socket = str(folder / f"{name}.sock")
    argv = [
        python, "-u", server, "--socket", socket, "--backend", backend, "--config", json.dumps(config),
        "--idle-timeout", str(idle_seconds), "--log", str(folder / f"{name}.log"),
    ]  # fmt: skip
    return SessionCommand(argv=argv, cwd=str(folder), env=engine.env(), scripts=scripts, socket=socket)


def relay_command(node: Node, socket: str, *, wait: float) -> tuple[list[str], tuple]:
    python, (relay,), scripts = scripts_on_node(_NodeOf(node), RELAY_SCRIPT)
    return [python, "-u", relay, socket, "--wait", str(wait)], scripts


def wait_ready(process: RunningProcess, *, timeout: float) -> dict:
    """Read the starting session's output until its ``ready {…}`` line: the facts it prints (load time,
    pid, frame size). NodeError with its last lines if it ends or does not get ready in time."""
    deadline = time.monotonic() + timeout
    output = b""
    while time.monotonic() < deadline:
        data = process.read(0.2)
        if data == b"":
            break
        if data is None:
            if process.wait(0) is not None and not process.read(0.2):
                break  # it ended (its channel may not say end of stream at once)
            continue
        output += data
        for line in output.splitlines():
            if line.startswith(b"ready {"):
                return json.loads(line[len(b"ready ") :])
    tail = output.decode("utf-8", "replace").strip()[-600:]
    code = process.wait(0)
    state = f"it ended (exit {code})" if code is not None else f"it was not ready within {timeout:.0f} s"
    raise NodeError(f"The live session did not start: {state}. {tail}".strip())


class SessionLink:
    """One conversation's line to a session: the relay process, JSON lines out, frames in."""

    def __init__(self, process: RunningProcess, conn: NodeConnection | None = None, marker: str = ""):
        self.process, self.conn, self.marker = process, conn, marker
        self.buffer = bytearray()
        self.ended = False

    def send(self, request: dict) -> None:
        self.process.write(json.dumps(request).encode() + b"\n")

    def _fill(self, size: int, deadline: float) -> bool:
        while len(self.buffer) < size:
            if self.ended:
                raise LinkClosed("The live session closed the connection.")
            data = self.process.read(max(0.0, min(0.2, deadline - time.monotonic())))
            if data == b"":
                self.ended = True
                continue
            if data:
                self.buffer += data
            elif time.monotonic() >= deadline:
                return False
        return True

    def receive(self, timeout: float) -> tuple[dict, bytes] | None:
        """The next message (header, payload), or None if none is whole within ``timeout``."""
        deadline = time.monotonic() + timeout
        if not self._fill(4, deadline):
            return None
        (length,) = struct.unpack(">I", self.buffer[:4])
        if length > MAX_HEADER:
            text = bytes(self.buffer[:200]).decode("utf-8", "replace")
            raise LinkClosed(f"The live session's link sent something else than its frames: {text}")
        if not self._fill(4 + length, deadline + 5):
            return None
        header = json.loads(bytes(self.buffer[4 : 4 + length]))
        size = int(header.get("size", 0))
        if not self._fill(4 + length + size, deadline + 30):
            raise LinkClosed("The live session stopped in the middle of a piece.")
        payload = bytes(self.buffer[4 + length : 4 + length + size])
        del self.buffer[: 4 + length + size]
        return header, payload

    def ask(self, request: dict, *, answer: str, timeout: float = 10) -> dict:
        """Send ``request`` and wait for the header whose ``op`` is ``answer`` (skipping others)."""
        self.send(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message and message[0].get("op") == answer:
                return message[0]
        raise LinkClosed(f"The live session did not answer {request['op']} within {timeout:.0f} s.")

    def render(
        self, *, ident: int, wav: str, pose_start: int, should_stop: Callable[[], bool], timeout: float = 300
    ) -> Iterator[tuple[dict, bytes]]:
        """Render one sentence: yields ``({"piece": seq, …}, bytes)`` as the pieces arrive, then
        ``(end, b"")`` with the session's end message (``done`` or ``error``). When ``should_stop`` turns
        true, a ``stop`` goes to the session once and the render ends with its ``stopped`` answer."""
        self.send({"op": "render", "id": ident, "wav": wav, "pose_start": pose_start})
        deadline = time.monotonic() + timeout
        stop_sent = False
        while True:
            if not stop_sent and should_stop():
                self.send({"op": "stop"})
                stop_sent = True
            if time.monotonic() > deadline:
                raise LinkClosed(f"The live session rendered nothing more for {timeout:.0f} s.")
            message = self.receive(0.1)
            if message is None:
                continue
            header, payload = message
            if header.get("id") != ident:
                continue  # a stop's answer, or what is left of an earlier render
            if "piece" in header:
                deadline = time.monotonic() + timeout
                yield header, payload
            else:
                yield header, b""
                return

    def close(self) -> None:
        """Hang up: the session serves the next client; the relay ends."""
        self.process.close_stdin()
        if self.process.wait(5) is None and self.conn is not None:
            self.conn.kill_tree(self.process.pid, marker=self.marker, grace=0.5)


def open_link(conn: NodeConnection, node: Node, socket: str, *, marker: str, wait: float = 30) -> SessionLink:
    """A relay to the session at ``socket`` (it waits up to ``wait`` s for the socket to accept)."""
    argv, scripts = relay_command(node, socket, wait=wait)
    for local_path, remote_path in scripts:
        conn.put(local_path, remote_path)
    return SessionLink(conn.start(argv, marker=marker, stdin=True), conn, marker)
