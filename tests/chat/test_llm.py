"""The LLM client against a loopback OpenAI-compatible server: streamed SSE, history budget, errors."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat.llm import LLMError, config_for, stream_chat, trim_history

HOLD_SECONDS = 60


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions like OpenAI/Zhipu do. ``server.mode`` picks the behaviour.

    ``server.hold_last_until``, when set, is a condition the server waits for (up to HOLD_SECONDS) before
    it sends the reply's last piece: a test that asserts "X happened while the reply was still streaming"
    makes X the condition, so the check holds by cause, not by how fast a loaded machine happens to be
    (without streaming X never comes, the wait runs out, and X lands after the last piece)."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        length = int(self.headers["Content-Length"])
        server.requests.append(
            {
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "body": json.loads(self.rfile.read(length)),
            }
        )
        # The client may hang up mid-stream (a stopped reply): nothing more to send then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(server)

    def _answer(self, server):
        mode = server.mode
        if mode in {401, 429, 500, 503}:
            body = json.dumps({"error": {"message": f"fake error {mode}", "code": str(mode)}}).encode()
            self.send_response(mode)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if mode == "hang":
            time.sleep(3)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": keep-alive\n\n")
        for index, piece in enumerate(server.pieces):
            if mode == "stall" and index == 1:
                time.sleep(3)
            if index == len(server.pieces) - 1 and server.hold_last_until is not None:
                deadline = time.monotonic() + HOLD_SECONDS
                while not server.hold_last_until() and time.monotonic() < deadline:
                    time.sleep(0.02)
            event = {"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            server.sent_at.append(time.monotonic())
            time.sleep(server.delay)
        self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def llm_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.daemon_threads = True
    server.mode = "ok"
    server.pieces = ["Hello", " there.", " How", " are you", "?"]
    server.delay = 0.15
    server.requests = []
    server.sent_at = []
    server.hold_last_until = None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


PUBLIC_IP = "93.184.215.14"  # a public address (example.com's); nothing is ever sent to it


@pytest.fixture
def public_host(monkeypatch):
    """Stands in for the internet, which these tests cannot reach: the names added to the returned set
    resolve to PUBLIC_IP, and a connection to PUBLIC_IP reaches the same port on loopback. Only DNS and
    routing are faked; chat.llm's check of the addresses it connects to runs for real."""
    names: set[str] = set()
    real_getaddrinfo, real_create_connection = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (PUBLIC_IP, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        host, port = address[:2]
        if host == PUBLIC_IP or host in names:
            return real_create_connection(("127.0.0.1", port), *args, **kwargs)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return names


def _config(server, settings, **overrides):
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{server.server_port}/v1/"
    settings.CHAT_LLM_MODEL = "glm-test"
    settings.CHAT_LLM_API_KEY = "sk-settings-key"
    settings.CHAT_LLM_TIMEOUT = overrides.pop("timeout", 5.0)
    return config_for(**overrides)


def test_tokens_arrive_as_the_server_streams_them(llm_server, settings):
    config = _config(llm_server, settings)
    received = []
    llm_server.hold_last_until = lambda: bool(received)
    for piece in stream_chat([{"role": "user", "content": "hi"}], config=config):
        received.append((piece, time.monotonic()))
    assert "".join(piece for piece, _ in received) == "Hello there. How are you?"
    # The first token was in our hands before the server had sent the last one: streamed, not buffered.
    assert received[0][1] < llm_server.sent_at[-1]
    request = llm_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-settings-key"
    assert request["body"]["model"] == "glm-test"
    assert request["body"]["stream"] is True
    assert request["body"]["messages"] == [{"role": "user", "content": "hi"}]


def test_conversation_overrides_base_url_model_and_key(llm_server, settings, public_host):
    _config(llm_server, settings)
    settings.CHAT_LLM_BASE_URL = "http://127.0.0.1:9/nothing-here/"
    settings.CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS = True
    public_host.add("llm.example.com")  # a conversation's own endpoint must be a public host
    config = config_for(
        base_url=f"http://llm.example.com:{llm_server.server_port}/v1", model="other-model", api_key="sk-own"
    )
    assert "".join(stream_chat([{"role": "user", "content": "hi"}], config=config))
    assert llm_server.requests[0]["auth"] == "Bearer sk-own"
    assert llm_server.requests[0]["body"]["model"] == "other-model"
    assert "sk-own" not in repr(config)


@pytest.mark.parametrize(
    ("code", "says", "retryable"),
    [
        (401, "the platform's API key with the administrator", False),
        (429, "rate limiting", True),
        (500, "fault on their side", True),
        (503, "try again later", True),
    ],
)
def test_error_codes_are_explained(llm_server, settings, code, says, retryable):
    llm_server.mode = code
    config = _config(llm_server, settings)
    with pytest.raises(LLMError) as caught:
        list(stream_chat([{"role": "user", "content": "hi"}], config=config))
    message = str(caught.value)
    assert says in message
    assert f"fake error {code}" in message
    assert caught.value.status == code
    assert caught.value.retryable is retryable
    assert "sk-settings-key" not in message


def test_bad_key_of_a_conversation_names_the_conversation(llm_server, settings):
    llm_server.mode = 401
    config = _config(llm_server, settings, api_key="sk-conversation")
    with pytest.raises(LLMError, match="the conversation's API key"):
        list(stream_chat([{"role": "user", "content": "hi"}], config=config))


def test_connection_refused_sends_people_to_the_administrator_and_logs_the_setting(settings, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{port}/v1/"
    settings.CHAT_LLM_TIMEOUT = 5.0
    with pytest.raises(LLMError, match="cannot be reached.*ask the administrator") as caught:
        list(stream_chat([{"role": "user", "content": "hi"}], config=config_for()))
    assert "CHAT_" not in str(caught.value)
    assert "CHAT_LLM_BASE_URL" in caplog.text


def test_a_server_that_does_not_answer_times_out(llm_server, settings):
    llm_server.mode = "hang"
    config = _config(llm_server, settings, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(LLMError, match="did not answer within 1 s"):
        list(stream_chat([{"role": "user", "content": "hi"}], config=config))
    assert time.monotonic() - started < 2.5


def test_a_stream_that_stalls_mid_reply_times_out(llm_server, settings):
    llm_server.mode = "stall"
    config = _config(llm_server, settings, timeout=1.0)
    received = []
    with pytest.raises(LLMError, match="stopped sending"):
        for piece in stream_chat([{"role": "user", "content": "hi"}], config=config):
            received.append(piece)
    assert received == ["Hello"]


def test_a_base_url_that_is_not_http_is_refused(settings):
    settings.CHAT_LLM_BASE_URL = "ftp://example.com/"
    with pytest.raises(LLMError, match="not an http"):
        list(stream_chat([{"role": "user", "content": "hi"}], config=config_for()))


def test_history_keeps_the_system_prompt_and_the_newest_turns_within_budget():
    system = {"role": "system", "content": "You are a helpful avatar."}  # 25 chars → 7 tokens
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i:02d} " * 10} for i in range(10)
    ]
    # each turn: 80 chars → 21 tokens; 7 + 3 × 21 = 70 fits in 75, a fourth does not
    kept = trim_history([system, *turns], budget_tokens=75)
    assert kept[0] == system
    assert kept[1:] == turns[-3:]
    # The newest message always goes, even alone over budget.
    assert trim_history([system, *turns], budget_tokens=1) == [system, turns[-1]]
    assert trim_history(turns[:2], budget_tokens=10_000) == turns[:2]
