"""HTTP views run on a fixed set of threads per web process (talkforge/asgi.py RequestThreads), each
request on the thread with the fewest requests in flight, all of one request's work on one thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.core.signals import request_finished, request_started
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from talkforge.asgi import UPLOAD_BYTES, OneHopASGIHandler, RequestThreads, carries_an_upload


def test_each_request_takes_the_thread_with_the_fewest_in_flight():
    threads = RequestThreads(3)
    taken = [threads.take() for _ in range(4)]
    assert [threads.executors.index(executor) for _, executor in taken] == [0, 1, 2, 0]
    threads.release(*taken[1])
    threads.release(*taken[2])
    assert threads.take()[1] is threads.executors[1]
    assert [len(requests) for requests in threads.in_flight] == [2, 1, 0]


def test_threads_busy_with_a_long_view_are_passed_by_and_then_a_request_gets_its_own(monkeypatch):
    threads = RequestThreads(2)
    clock = [100.0]
    monkeypatch.setattr("talkforge.asgi.time.monotonic", lambda: clock[0])
    long_view = threads.take()  # thread 0, say a large upload going to storage
    clock[0] += RequestThreads.STUCK_SECONDS
    short = [threads.take() for _ in range(2)]
    assert all(executor is threads.executors[1] for _, executor in short)  # not behind the long view
    clock[0] += RequestThreads.STUCK_SECONDS
    lease, own = threads.take()  # both threads' oldest requests are old now: a thread of its own
    assert own not in threads.executors
    own.submit(lambda: None).result()
    threads.release(lease, own)  # and it ends with the request
    assert own._shutdown
    threads.release(*long_view)
    assert threads.take()[1] is threads.executors[0]


def test_a_request_carrying_an_upload_gets_a_thread_of_its_own():
    assert not carries_an_upload({"headers": [(b"host", b"x")]})
    assert not carries_an_upload({"headers": [(b"content-length", str(UPLOAD_BYTES).encode())]})
    assert carries_an_upload({"headers": [(b"content-length", str(UPLOAD_BYTES + 1).encode())]})
    assert carries_an_upload({"headers": [(b"transfer-encoding", b"chunked")]})
    threads = RequestThreads(1)
    lease, own = threads.take(own=True)
    assert own not in threads.executors
    assert threads.take()[1] is threads.executors[0]  # the kept thread is not counted as busy with it
    threads.release(lease, own)
    assert own._shutdown


def http_scope(url: str, method: str = "GET", headers: list | None = None) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": url, "raw_path": url.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), *(headers or [])], "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }  # fmt: skip


async def get(app, path: str = "/healthz", body: bytes = b"") -> int:
    """One HTTP request through the ASGI application (a POST when it has a body); its status."""
    headers = [(b"content-length", str(len(body)).encode())] if body else []
    scope = http_scope(path, "POST" if body else "GET", headers)
    sent = asyncio.Event()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await sent.wait()
        return {"type": "http.disconnect"}

    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent.set()

    await app(scope, receive, send)
    return statuses[0]


@pytest.fixture
def seen_threads():
    """The thread each request's synchronous work starts on (Django's request_started, sent in it)."""
    names: list[str] = []

    def record(**kwargs):
        names.append(threading.current_thread().name)

    request_started.connect(record)
    yield names
    request_started.disconnect(record)


@override_settings(WEB_THREADS=2)
def test_concurrent_requests_run_on_the_process_threads_only(seen_threads):
    app = OneHopASGIHandler()

    async def burst():
        return await asyncio.gather(*(get(app) for _ in range(8)))

    assert asyncio.run(burst()) == [200] * 8
    assert sorted(set(seen_threads)) == ["request-0_0", "request-1_0"]


@pytest.mark.parametrize(
    ("threads", "upload"),
    [(2, b""), (1, b"x" * (UPLOAD_BYTES + 1))],
    ids=["the other kept thread", "an upload on one of its own"],
)
def test_a_request_busy_on_one_thread_does_not_hold_up_one_on_the_other(settings, threads, upload):
    settings.WEB_THREADS = threads
    app = OneHopASGIHandler()
    release = threading.Event()
    first_started = threading.Event()

    def block_the_first(**kwargs):
        if not first_started.is_set():
            first_started.set()
            release.wait(30)  # as a slow view would

    request_started.connect(block_the_first)
    try:

        async def both():
            slow = asyncio.ensure_future(get(app, body=upload))
            await asyncio.get_running_loop().run_in_executor(None, first_started.wait, 30)
            quick = await asyncio.wait_for(get(app), 20)  # answered while the first still blocks
            assert not slow.done()
            release.set()
            return quick, await slow

        assert asyncio.run(both()) == (200, 200)
    finally:
        release.set()
        request_started.disconnect(block_the_first)


# --- one hand-off per request (OneHopASGIHandler.handle) ------------------------------------------------

events: list[tuple[str, str]] = []


def note(what: str) -> None:
    events.append((what, threading.current_thread().name))


def plain_view(request):
    note("view")
    return HttpResponse(b"x" * 10_000)


def streaming_view(request):
    async def chunks():
        for number in range(3):
            note(f"chunk {number}")
            yield f"part {number};".encode()

    return StreamingHttpResponse(chunks())


def endless_view(request):
    async def chunks():
        while True:
            note("chunk")
            yield b"more"
            await asyncio.sleep(0.01)

    return StreamingHttpResponse(chunks())


def failing_view(request):
    async def chunks():
        yield b"first"
        raise OSError("the file went away")

    return StreamingHttpResponse(chunks())


urlpatterns = [
    path("plain/", plain_view),
    path("streaming/", streaming_view),
    path("endless/", endless_view),
    path("failing/", failing_view),
]


@pytest.fixture
def recorded(settings):
    """This module's views; the signals and what the handler sends, in the order they happen."""
    settings.ROOT_URLCONF = __name__
    events.clear()

    def started(**kwargs):
        note("request_started")

    def finished(**kwargs):
        note("request_finished")

    request_started.connect(started)
    request_finished.connect(finished)
    yield events
    request_started.disconnect(started)
    request_finished.disconnect(finished)


def serve(url: str, *, disconnect_after: int | None = None) -> bytes:
    """One GET through a fresh handler; the body sent. ``disconnect_after``: the client goes away once
    that many body messages have been sent."""
    app = OneHopASGIHandler()
    body, sent_bodies, gone = [], [0], asyncio.Event()
    request = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if request:
            return request.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        note(message["type"])
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            sent_bodies[0] += 1
            if disconnect_after is not None and sent_bodies[0] >= disconnect_after:
                gone.set()

    async def main():
        await asyncio.wait_for(app(scope := http_scope(url), receive, send), 20)
        return scope

    asyncio.run(main())
    return b"".join(body)


def test_a_request_is_started_answered_and_finished_in_one_thread_before_its_answer_goes_out(recorded):
    """request_started, the view and request_finished (the database connection back to the pool) run in
    the request's thread in that order, one hand-off; the event loop sends the answer afterwards."""
    assert serve("/plain/") == b"x" * 10_000
    work = [what for what, _ in recorded if not what.startswith("http.")]
    assert work == ["request_started", "view", "request_finished"]
    assert len({thread for what, thread in recorded if not what.startswith("http.")}) == 1
    assert recorded[0][1].startswith("request-")  # one of the process's kept threads
    order = [what for what, _ in recorded]
    assert order.index("request_finished") < order.index("http.response.start")


def test_a_streaming_answer_is_sent_whole_then_finished(recorded):
    assert serve("/streaming/") == b"part 0;part 1;part 2;"
    order = [what for what, _ in recorded]
    assert order.index("http.response.start") < order.index("chunk 0")
    assert order.index("chunk 2") < order.index("request_finished")  # closed once all of it is out
    assert order[-1] == "request_finished"


def test_a_streaming_answer_stops_when_the_client_goes_away_and_still_finishes(recorded):
    """The stream stops at the client's disconnect (Django's listen_for_disconnect), instead of running
    for ever, and the response is closed: request_finished still runs."""
    body = serve("/endless/", disconnect_after=3)
    assert body.startswith(b"moremore") and len(body) < 4 * 50
    assert recorded[-1][0] == "request_finished"


def test_a_stream_that_fails_raises_as_in_django_and_still_finishes(recorded):
    """An error in the middle of a stream goes up to the server, which drops the connection (as with
    Django's handler); the response is still closed and the listener for the disconnect stopped."""
    with pytest.raises(OSError, match="the file went away"):
        serve("/failing/")
    assert recorded[-1][0] == "request_finished"
