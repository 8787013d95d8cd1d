"""The production web server's worker: uvicorn inside gunicorn (``docker/web.sh``).

Gunicorn's master forks ``WEB_CONCURRENCY`` workers (one per core by default), restarts one that dies,
and replaces them all gracefully on SIGHUP; each worker serves HTTP and websockets (the Channels
application in ``talkforge/asgi.py``) on an asyncio loop.
"""

import asyncio
import gc
import logging
import multiprocessing
import os
import sys
import time

from gunicorn.arbiter import Arbiter
from uvicorn import Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# Each worker's open connections, for BalancedServer: (pid, connections) per slot, in memory the master
# maps before it forks (gunicorn imports this module, the worker class's, in the master), so every worker,
# the ones a restart starts included, sees the same numbers. A slot is free while its pid is 0.
SLOTS = 64
_loads = multiprocessing.RawArray("q", 2 * SLOTS)
# How long a worker holding more connections than another lets that one take a waiting connection first.
DEFER_SECONDS = 0.005
# A worker this many connections above the least-loaded one closes a keep-alive connection after its
# response (GracefulHttpToolsProtocol), so that the client reconnects to the other.
SHED_EXCESS = 2
# At most one such close per this many seconds and worker: a closed connection leaves the counts only when
# its response is out and the client has reconnected, and closing on every request until then would close
# many where one was needed.
SHED_INTERVAL = 0.05
_last_shed = 0.0
# How often a worker writes its count when no connection comes (connections also close).
PUBLISH_SECONDS = 0.05


class GracefulHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, except that a graceful shutdown answers the request of a connection it has
    accepted but not read yet.

    On SIGHUP/SIGTERM uvicorn stops accepting, then calls ``shutdown()`` on every connection
    (uvicorn/server.py ``Server.shutdown``), and ``HttpToolsProtocol.shutdown`` closes each one with no
    request in progress. That includes a connection accepted a moment before whose request bytes sit
    unread in the socket, not yet parsed: its client had sent a request and got a reset (the restart
    test saw about one per restart under load). Here such a connection gets ``timeout_keep_alive`` seconds
    for its request, which is then answered and the connection closed (``keep_alive`` off); a connection
    that sends nothing in that time is closed as an idle one would be. Connections between two requests of
    a keep-alive session are closed as before: the client sent nothing on them, and HTTP clients open a
    new connection when an idle one closes.
    """

    _closing_after_first_request = False
    _request_wait = None

    def shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self._closing_after_first_request = True
            self._request_wait = self.loop.call_later(self.timeout_keep_alive, self._close_unused)
            return
        super().shutdown()

    def _close_unused(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is None:
            return
        if self._closing_after_first_request:
            self.cycle.keep_alive = False
            self._request_wait.cancel()
        elif self.cycle.keep_alive and _shed_due() and excess(len(self.connections)) >= SHED_EXCESS:
            # Rebalance: answer with "Connection: close"; the client's next connection goes to a worker
            # with fewer (BalancedServer). Connections accepted while a peer was still starting, or before
            # a restart, would otherwise stay where they landed for as long as the client keeps them.
            self.cycle.keep_alive = False


class BalancedServer(Server):
    """uvicorn's server with an accept loop that spreads connections evenly over the workers.

    Every worker waits on the one listening socket gunicorn's master opened; uvicorn hands it to the event
    loop (``loop.create_server``), which accepts every connection waiting whenever the socket is readable.
    Keep-alive clients (nginx keeps 32 connections to the web tier, docker/nginx/default.conf.template) that
    connect in a burst then land mostly on whichever worker woke first: bench/api_load.py's 50 clients were
    split 50/0, 45/5 or 36/14 over two workers, and the fuller worker's clients waited three times as long
    (p50 463 vs 131 ms in one run) while the other core idled. Here each worker accepts one connection at a
    time and, when it holds more connections than the least-loaded other worker (the counts in ``_loads``),
    first leaves the connection ``DEFER_SECONDS`` to that worker; a connection nobody else took is accepted
    after that, so a stuck or dead peer (a stale count) costs a few milliseconds, never a refusal."""

    def __init__(self, config, listeners, slot: int):
        super().__init__(config=config)
        self.listeners, self.slot = listeners, slot
        self._deferred: set[int] = set()
        self._publisher = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=[])  # all of uvicorn's start-up but its listening servers
        loop = asyncio.get_running_loop()
        self._publish()
        for sock in self.listeners:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable, sock)

    async def shutdown(self, sockets=None) -> None:
        self._stop_accepting()
        await super().shutdown(sockets=sockets)

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.listeners:
            loop.remove_reader(sock.fileno())
        if self._publisher is not None:
            self._publisher.cancel()
        _loads[2 * self.slot] = _loads[2 * self.slot + 1] = 0

    def _publish(self) -> None:
        _loads[2 * self.slot], _loads[2 * self.slot + 1] = os.getpid(), len(self.server_state.connections)
        self._publisher = asyncio.get_running_loop().call_later(PUBLISH_SECONDS, self._publish)

    def _readable(self, sock) -> None:
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        if fd not in self._deferred and excess(len(self.server_state.connections)) > 0:
            self._deferred.add(fd)
            loop.remove_reader(fd)
            loop.call_later(DEFER_SECONDS, self._resume, sock)
            return
        self._deferred.discard(fd)
        try:
            connection, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it
        except OSError as error:  # out of file descriptors and the like: wait a second, as asyncio does
            logging.getLogger("uvicorn.error").error("accept failed: %s", error)
            loop.remove_reader(fd)
            loop.call_later(1.0, self._resume, sock)
            return
        connection.setblocking(False)
        loop.create_task(loop.connect_accepted_socket(self._protocol, connection, ssl=self.config.ssl))
        _loads[2 * self.slot + 1] = len(self.server_state.connections) + 1

    def _resume(self, sock) -> None:
        if not self.should_exit:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, sock)

    def _protocol(self):
        return self.config.http_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


def _shed_due() -> bool:
    global _last_shed
    now = time.monotonic()
    if now - _last_shed < SHED_INTERVAL:
        return False
    _last_shed = now
    return True


def excess(mine: int) -> int:
    """How many connections more than the least-loaded other live worker this one holds (0 when alone)."""
    me, least = os.getpid(), None
    for slot in range(SLOTS):
        pid, connections = _loads[2 * slot], _loads[2 * slot + 1]
        if pid and pid != me and (least is None or connections < least) and _alive(pid):
            least = connections
    return 0 if least is None else max(0, mine - least)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TalkforgeUvicornWorker(UvicornWorker):
    """uvicorn as daphne served us before: the client address is the connection's own.

    ``proxy_headers=False``: uvicorn would otherwise take X-Forwarded-For/-Proto from a proxy on
    loopback and rewrite the client and scheme itself; the settings decide that instead
    (TRUSTED_PROXY_COUNT in core/proxies.py, SECURE_PROXY_SSL_HEADER), so a proxy is counted once.
    ``lifespan="off"``: Django's ASGI handler has no start-up or shutdown events.
    ``http``: uvicorn's httptools protocol with the graceful-shutdown fix above.
    """

    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "proxy_headers": False,
        "lifespan": "off",
        "http": GracefulHttpToolsProtocol,
    }

    def load_wsgi(self) -> None:
        """The application, then everything loaded so far moved out of the garbage collector's sight
        (``gc.freeze``): Django, DRF and the project's modules, hundreds of thousands of objects that live as
        long as the worker, were walked again by every full collection, in the middle of some request.
        bench/api_load.py, three runs each at 50 clients: p99 519, 534, 449 ms with it, 601, 616, 553
        without."""
        super().load_wsgi()
        gc.freeze()

    async def _serve(self) -> None:
        """UvicornWorker._serve with BalancedServer."""
        self.config.app = self.wsgi
        server = BalancedServer(self.config, self.sockets, slot=self.age % SLOTS)
        self._install_sigquit_handler()
        await server.serve(sockets=[])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
