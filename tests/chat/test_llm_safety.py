"""A conversation's own LLM endpoint cannot be used to steal the platform's key or to reach the
platform's network: the key rule, the operator's settings, the address check at connect time (also
against DNS rebinding), errors that do not tell ports apart or echo what came back; and the system
prompt's length limit.

Loopback listeners stand in for internal services: they are what a user's endpoint must not reach. Where a
test needs an allowed (public) endpoint, ``public_host`` routes a public address to a loopback port."""

# ruff: noqa: F811  (the fixtures imported from test_chat_llm are parameters here)

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from chat import services
from chat.llm import LLMError, config_for, stream_chat
from chat.models import Conversation
from core.errors import ServiceError
from tests.chat.test_llm import PUBLIC_IP, llm_server, public_host  # noqa: F401
from tests.chat.test_services import make_avatar

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def llm_settings(settings, llm_server):
    """The platform's endpoint is the loopback fake (trusted: the operator chose it); own endpoints on."""
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{llm_server.server_port}/v1/"
    settings.CHAT_LLM_MODEL = "glm-test"
    settings.CHAT_LLM_API_KEY = "sk-platform-secret"
    settings.CHAT_LLM_TIMEOUT = 2.0
    settings.CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS = True
    settings.CHAT_LLM_ALLOWED_HOSTS = []
    return settings


@pytest.fixture
def api_client(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user


class RawListener:
    """A loopback TCP port that answers every connection with ``payload`` and hangs up: an SSH server,
    say, or a broken HTTP one."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.payload = b"SSH-2.0-OpenSSH_9.6 SECRET-BANNER\r\n"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                connection.settimeout(2)
                connection.recv(65536)
                connection.sendall(self.payload)
                connection.shutdown(socket.SHUT_WR)
                while connection.recv(65536):  # what is left of the request: no reset for the client
                    pass


@pytest.fixture
def raw_listener():
    listener = RawListener()
    yield listener
    listener.server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the block ends: nothing listens there


# --- the platform's key goes only to the platform's endpoint ---------------------------------------------


def test_an_own_base_url_without_an_own_key_is_refused_when_saved(alice, llm_settings, api_client):
    avatar = make_avatar(alice)
    with pytest.raises(ServiceError, match="needs its own API key"):
        services.conversation_create(owner=alice, avatar=avatar, llm_base_url="https://llm.example.com/v1/")
    response = api_client(alice).post(
        "/api/conversations/", {"avatar": avatar.pk, "llm_base_url": "https://llm.example.com/v1/"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "needs its own API key" in response.json()["detail"]
    page = api_client(alice).post(
        "/chat/new/", {"avatar": avatar.pk, "language": "", "llm_base_url": "https://llm.example.com/v1/"}
    )
    assert page.status_code == 200 and "needs its own API key" in page.content.decode()
    assert not Conversation.objects.exists()

    conversation = services.conversation_create(owner=alice, avatar=avatar)
    with pytest.raises(ServiceError, match="needs its own API key"):
        services.conversation_update(conversation=conversation, llm_base_url="https://llm.example.com/v1/")


def test_the_platform_key_is_not_sent_to_an_own_endpoint_saved_before(
    alice,
    llm_settings,
    llm_server,
    public_host,
):
    """A conversation saved without these checks (or with settings since changed) is stopped at call
    time: config_for refuses rather than hand its endpoint the platform's key."""
    public_host.add("llm.example.com")
    own_url = f"http://llm.example.com:{llm_server.server_port}/v1/"
    with pytest.raises(LLMError, match="needs its own API key"):
        config_for(base_url=own_url)
    conversation = Conversation.objects.create(owner=alice, avatar=make_avatar(alice), llm_base_url=own_url)
    with pytest.raises(ServiceError, match="needs its own API key"):
        services.conversation_llm_config(conversation)

    # With a key of its own, that key (and only that one) goes to the endpoint.
    config = config_for(base_url=own_url, api_key="sk-alice-own")
    assert "".join(stream_chat(HI, config=config)) == "Hello there. How are you?"
    assert [request["auth"] for request in llm_server.requests] == ["Bearer sk-alice-own"]


# --- the operator decides whether own endpoints are allowed, and which --------------------------------


def test_own_endpoints_are_refused_unless_the_operator_allows_them(alice, llm_settings, api_client):
    llm_settings.CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS = False
    avatar = make_avatar(alice)
    response = api_client(alice).post(
        "/api/conversations/",
        {"avatar": avatar.pk, "llm_base_url": "https://api.openai.com/v1/", "llm_api_key": "sk-own"},
        content_type="application/json",
    )
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "does not allow a conversation's own LLM endpoint" in detail
    assert "leave the base URL empty" in detail and "ask the administrator" in detail
    assert "CHAT_" not in detail
    with pytest.raises(LLMError, match="does not allow"):
        config_for(base_url="https://api.openai.com/v1/", api_key="sk-own")
    # The platform's own endpoint, model and an own key for it stay fine.
    assert services.conversation_create(owner=alice, avatar=avatar, llm_model="glm-4-plus", llm_api_key="k")


def test_the_allowed_hosts_setting_is_honoured(alice, llm_settings):
    llm_settings.CHAT_LLM_ALLOWED_HOSTS = ["api.openai.com", ".llm.example.com"]
    avatar = make_avatar(alice)
    for url in ("https://api.openai.com/v1/", "https://llm.example.com/v1", "https://eu.llm.example.com/v1"):
        assert services.conversation_create(owner=alice, avatar=avatar, llm_base_url=url, llm_api_key="k")
    for url in (
        "https://evil.example.org/v1/",
        "https://api.openai.com.evil.example/",
        "https://xllm.example.com/",
    ):
        with pytest.raises(ServiceError, match="not one this platform allows"):
            services.conversation_create(owner=alice, avatar=avatar, llm_base_url=url, llm_api_key="k")
        with pytest.raises(LLMError, match="not one this platform allows"):
            config_for(base_url=url, api_key="k")


# --- only public addresses, checked on the addresses actually connected to -------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "2130706433",  # loopback, however spelt
        "0.0.0.0", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "[fc00::1]",  # unspecified, private
        "169.254.169.254", "[fe80::1]",  # link-local: the cloud metadata service lives there
        "224.0.0.1", "240.0.0.1", "[2002:7f00:1::]",  # multicast, reserved, 6to4 around 127.0.0.1
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused_for_an_own_endpoint(alice, llm_settings, llm_server, host):
    url = f"http://{host}:{llm_server.server_port}/v1/"
    with pytest.raises(ServiceError, match="not a public address"):
        services.conversation_create(
            owner=alice, avatar=make_avatar(alice), llm_base_url=url, llm_api_key="k"
        )
    with pytest.raises(LLMError, match="not a public address"):
        list(stream_chat(HI, config=config_for(base_url=url, api_key="sk-own")))
    assert llm_server.requests == []


def test_the_address_is_checked_on_every_connect_so_dns_rebinding_fails(
    alice,
    llm_settings,
    llm_server,
    public_host,
    monkeypatch,
):
    """The name resolves to a public address when the conversation is saved and for the first reply, then
    to 127.0.0.1: the second reply is refused before anything is sent."""
    answers = iter([PUBLIC_IP, PUBLIC_IP, "127.0.0.1"])
    routed = socket.getaddrinfo  # public_host's: PUBLIC_IP reaches the loopback fake

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (next(answers), port))]
        return routed(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), llm_api_key="sk-own",
        llm_base_url=f"http://rebind.example.com:{llm_server.server_port}/v1/",
    )  # fmt: skip
    config = services.conversation_llm_config(conversation)
    assert "".join(stream_chat(HI, config=config))
    with pytest.raises(LLMError, match="not a public address"):
        list(stream_chat(HI, config=config))
    assert len(llm_server.requests) == 1


def test_a_name_with_any_non_public_address_is_refused(llm_settings, llm_server, monkeypatch):
    def mixed(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (PUBLIC_IP, port)),
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    config = config_for(base_url=f"http://mixed.example.com:{llm_server.server_port}/v1/", api_key="k")
    with pytest.raises(LLMError, match="not a public address"):
        list(stream_chat(HI, config=config))
    assert llm_server.requests == []


# --- what an own endpoint answers is not echoed, and ports cannot be told apart -----------------------


def test_failures_of_an_own_endpoint_do_not_tell_ports_apart(llm_settings, raw_listener, public_host):
    public_host.add("llm.example.com")
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    llm_settings.CHAT_LLM_TIMEOUT = 1.0
    targets = {
        "closed": f"http://llm.example.com:{_closed_port()}/v1/",
        "not http": f"http://llm.example.com:{raw_listener.port}/v1/",
        "not tls": f"https://llm.example.com:{raw_listener.port}/v1/",
        "silent": f"http://llm.example.com:{silent.getsockname()[1]}/v1/",
    }
    messages = {}
    with silent:
        for name, url in targets.items():
            with pytest.raises(LLMError) as caught:
                list(stream_chat(HI, config=config_for(base_url=url, api_key="sk-own")))
            messages[name] = str(caught.value).replace(url, "<url>")
    assert len(set(messages.values())) == 1, messages
    assert "No HTTP answer" in messages["closed"]
    assert not any("SECRET" in message or "SSH" in message for message in messages.values())


def test_an_own_endpoint_errors_give_the_status_but_not_the_body(
    llm_settings,
    llm_server,
    raw_listener,
    public_host,
):
    public_host.add("llm.example.com")
    llm_server.mode = 500
    with pytest.raises(LLMError) as caught:
        url = f"http://llm.example.com:{llm_server.server_port}/v1/"
        list(stream_chat(HI, config=config_for(base_url=url, api_key="sk-own")))
    assert "(500)" in str(caught.value) and "fake error" not in str(caught.value)
    assert caught.value.status == 500

    raw_listener.payload = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: SECRET-DATA\n\n"
    with pytest.raises(LLMError, match="malformed event") as caught:
        url = f"http://llm.example.com:{raw_listener.port}/v1/"
        list(stream_chat(HI, config=config_for(base_url=url, api_key="sk-own")))
    assert "SECRET" not in str(caught.value)

    # The platform's own endpoint keeps the server's message, for whoever runs it.
    with pytest.raises(LLMError, match="fake error 500"):
        list(stream_chat(HI, config=config_for()))


# --- the system prompt's length ---------------------------------------------------------------------------


def test_a_huge_system_prompt_is_refused(alice, settings, api_client):
    avatar = make_avatar(alice)
    # As a form body: a 2 MB JSON body is already refused whole, by the API's JSON size limit.
    response = api_client(alice).post(
        "/api/conversations/", {"avatar": avatar.pk, "system_prompt": "x" * 2_000_000}
    )
    assert response.status_code == 400
    assert "4000" in str(response.json())
    settings.CHAT_SYSTEM_PROMPT_MAX_CHARS = 10
    response = api_client(alice).post(
        "/api/conversations/", {"avatar": avatar.pk, "system_prompt": "You are Ada."},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "the limit is 10 characters" in response.json()["detail"]
    page = api_client(alice).post("/chat/new/", {"avatar": avatar.pk, "system_prompt": "You are Ada."})
    assert page.status_code == 200 and "the limit is 10 characters" in page.content.decode()
    assert not Conversation.objects.exists()

    conversation = services.conversation_create(owner=alice, avatar=avatar, system_prompt="Be Ada.")
    with pytest.raises(ServiceError, match="the limit is 10 characters"):
        services.conversation_update(conversation=conversation, system_prompt="You are Ada.")
