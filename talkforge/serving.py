"""The production web server's worker: uvicorn inside gunicorn (``docker/web.sh``).

Gunicorn's master forks ``WEB_CONCURRENCY`` workers (one per core by default), restarts one that dies,
and replaces them all gracefully on SIGHUP; each worker serves HTTP and websockets (the Channels
application in ``talkforge/asgi.py``) on an asyncio loop.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker


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
        if self._closing_after_first_request and self.cycle is not None:
            self.cycle.keep_alive = False
            self._request_wait.cancel()


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
