"""ASGI entry point: HTTP through Django, websockets through Channels."""

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "talkforge.settings.production")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with all of a request's synchronous work done in one hand-off to its thread.

    For ASGI Django builds the middleware chain in async mode: every ``process_request`` and
    ``process_response`` of the middleware that can run either way, the hop back out of WhiteNoise (sync
    only), ``process_view`` and the view itself each go through ``sync_to_async``: 16 hand-offs between the
    event loop and the request's thread per request, about a quarter of the job list's CPU time. Every
    HTTP view here is synchronous, so the chain is built as under WSGI (an async view would still work:
    Django runs it with ``async_to_sync``), and ``handle`` enters the thread once: request_started's
    receivers, the chain and the view, and closing the response (request_finished's receivers: the
    database connection goes back to the pool) run there in that order, as under WSGI; the event loop then
    writes the response out. Django's own ``handle`` makes a hand-off for each of those three
    (django/core/handlers/asgi.py ``ASGIHandler.handle``); with one request thread a request then queued
    three times behind other requests' hand-offs, waiting behind some of them twice and others not at all,
    and the slowest 1% took twice the median (bench/api_load.py, README "Benchmarks"). A streaming
    response (a file) is sent as Django sends one: stopped when the client goes away, then closed in the
    request's thread."""

    def __init__(self):
        super().__init__()
        # A request's thread: the one with the fewest requests in flight (RequestThreads).
        self.threads = RequestThreads(settings.WEB_THREADS)
        # Made once: asgiref's SyncToAsync.__init__ inspects the function, a cost per request otherwise.
        self.respond_in_thread = sync_to_async(self.respond, thread_sensitive=True)

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await self.respond_in_thread(scope, body_file)
        if response.streaming:
            await self.stream(response, receive, send)
        else:
            await self.send_response(response, send)  # closed already: its content is all here

    def respond(self, scope, body_file):
        """The response, in the request's thread: what Django's ``handle`` and ``run_get_response`` do
        around the chain, in the same order."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
        else:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the server chunks it further
        if not response.streaming:
            response.close()
        return response

    async def stream(self, response, receive, send):
        """Django's ``handle`` for a streaming response: sent while listening for the client's disconnect,
        which stops it; then closed in the request's thread."""
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(self.send_response(response, send)),
        ]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in tasks:  # an error sending (the stream's iterator failed) goes on up, as in Django
                with contextlib.suppress(RequestAborted, asyncio.CancelledError):
                    await task
        finally:
            await sync_to_async(response.close, thread_sensitive=True)()

    async def __call__(self, scope, receive, send):
        """As Django's, but on one of the process's kept request threads (RequestThreads) instead of a new
        thread per request.

        Django enters a fresh ``ThreadSensitiveContext`` per request (django/core/handlers/asgi.py
        ``ASGIHandler.__call__``), and asgiref gives each such context a new one-thread executor: a thread
        started for the request and joined at its end (asgiref/sync.py ``ThreadSensitiveContext``). With
        50 clients that is 25 threads per process running views at once, and the process spent its time
        passing the GIL between them (bench/api_load.py: 122-124 requests/s with a thread per request,
        134-181 with 2-4 kept threads, README "Benchmarks"). asgiref 3.13 lets the caller give the context
        its executor (``ThreadSensitiveContext(executor=...)``, not shut down on exit)."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        lease, executor = self.threads.take(own=carries_an_upload(scope))
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.release(lease, executor)


# A request body above this is an upload (a video, a voice sample), not an API call's JSON.
UPLOAD_BYTES = 1 << 20


def carries_an_upload(scope) -> bool:
    """Whether the request announces a body over UPLOAD_BYTES, or one of unknown length (chunked)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not value.isdigit() or int(value) > UPLOAD_BYTES
        if name == b"transfer-encoding":
            return True
    return False


class RequestThreads:
    """``count`` one-thread executors; each request takes the one with the fewest requests in flight.

    Django's rule for a request's synchronous work holds: all of it runs in one thread, in order (its
    database connection is that thread's). Several requests may share a thread: their calls queue in it and
    run one after another, and each request's whole middleware chain and view is one call here
    (OneHopASGIHandler), so one request's view never runs in the middle of another's. What a request does
    on the event loop (reading an upload's body, sending the answer to a slow client) holds no thread.

    One thread per process by default (WEB_THREADS): its requests then run one after another, first come
    first served, and each waits about as long as the others; with 2 or 4 threads sharing the GIL the
    slowest 1% of answers took 2.1-3.0x the median instead of 1.8x, for no more throughput
    (bench/api_load.py, README "Benchmarks"). Long views must not hold up the short ones queued behind them:
    a request carrying an upload (``carries_an_upload``: its view parses a large body and writes it to
    object storage) gets a thread of its own from the start, as Django gives every request; and a thread
    whose oldest request has been in flight for ``STUCK_SECONDS`` is busy with some other long view: new
    requests pass it by, and when every thread is such, they get threads of their own too. Used from the
    event loop only."""

    STUCK_SECONDS = 5.0

    def __init__(self, count: int):
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{i}") for i in range(count)
        ]
        # Per thread, its requests in flight and when each was taken, oldest first (dicts keep that order).
        self.in_flight: list[dict[object, float]] = [{} for _ in range(count)]

    def take(self, *, own: bool = False) -> tuple[object, ThreadPoolExecutor]:
        """A lease (give it to ``release``) and the executor the request's work goes to: a thread of its own
        with ``own``."""
        now = time.monotonic()
        lease = object()
        free = [
            index
            for index, requests in enumerate(self.in_flight)
            if not requests or now - next(iter(requests.values())) < self.STUCK_SECONDS
        ]
        if own or not free:
            return lease, ThreadPoolExecutor(max_workers=1, thread_name_prefix="request-own")
        index = min(free, key=lambda i: len(self.in_flight[i]))
        self.in_flight[index][lease] = now
        return lease, self.executors[index]

    def release(self, lease: object, executor: ThreadPoolExecutor) -> None:
        for requests in self.in_flight:
            if requests.pop(lease, None) is not None:
                return
        executor.shutdown(wait=False)  # a thread of the request's own: it ends once its work is done


django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.websocket import BrowserOriginCheck, SessionOrTokenAuthStack  # noqa: E402
from chat.routing import websocket_urlpatterns as chat_websockets  # noqa: E402
from jobs.routing import websocket_urlpatterns  # noqa: E402

websockets = [*websocket_urlpatterns, *chat_websockets]
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": BrowserOriginCheck(SessionOrTokenAuthStack(URLRouter(websockets))),
    }
)
