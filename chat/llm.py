"""The LLM edge: any OpenAI-compatible chat-completions endpoint, streamed (Zhipu GLM by default).

Plain ``http.client`` keeps the web tier free of an SDK: the request is one POST with ``stream: true``
and the answer is server-sent events, ``data: {json}`` lines ending with ``data: [DONE]``. Tokens are
yielded as they arrive. Failures become :class:`LLMError` with a message a person can act on (which
setting, what to do); the API key never appears in one.

A conversation may name its own endpoint, which makes this module a way for any user to make the server
send requests. So the platform's key (CHAT_LLM_API_KEY) only ever goes to the platform's endpoint
(CHAT_LLM_BASE_URL); a conversation's own endpoint needs the operator's leave
(CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS, CHAT_LLM_ALLOWED_HOSTS), its own key, and a public address, checked on
the addresses the socket connects to (so a name that resolves differently later, DNS rebinding, gains
nothing); and what such an endpoint answers is never echoed back, only its HTTP status.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # a rough, deliberately cautious estimate; good enough to stay inside a budget


class LLMError(Exception):
    """The LLM call failed; the message says why and what to do. ``retryable``: trying later may help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str
    timeout: float
    # Where each value came from, so errors name the right thing to fix.
    key_source: str = "the platform's API key with the administrator"
    # A conversation's own endpoint: connect only to public addresses, and echo nothing it answers.
    own_endpoint: bool = False

    def __repr__(self) -> str:  # never print the key
        key = f"<{len(self.api_key)} chars>"
        return f"LLMConfig(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"


def _fix(config: LLMConfig, what: str) -> str:
    """What to check, said to the person who can: a conversation's own endpoint is its owner's to fix; the
    platform's is the administrator's, and the log names the settings (people never see them)."""
    if config.own_endpoint:
        return f"check the conversation's {what}"
    logger.warning(
        "The platform's LLM endpoint failed: check CHAT_LLM_BASE_URL (%s), CHAT_LLM_MODEL (%s) and "
        "CHAT_LLM_TIMEOUT.", config.base_url, config.model,
    )  # fmt: skip
    return f"ask the administrator to check the platform's {what}"


def config_for(*, base_url: str = "", model: str = "", api_key: str = "") -> LLMConfig:
    """The settings' endpoint, model and key, each replaced by a conversation's own value when it has one.

    An own endpoint is checked again here (the conversation was checked when saved; the settings may have
    changed since) and never gets the platform's key."""
    if base_url:
        check_own_endpoint(base_url, has_own_key=bool(api_key))
    return LLMConfig(
        base_url=base_url or settings.CHAT_LLM_BASE_URL,
        model=model or settings.CHAT_LLM_MODEL,
        api_key=api_key or settings.CHAT_LLM_API_KEY,
        timeout=settings.CHAT_LLM_TIMEOUT,
        key_source="the conversation's API key"
        if api_key
        else "the platform's API key with the administrator",
        own_endpoint=bool(base_url),
    )


def check_own_endpoint(base_url: str, *, has_own_key: bool, resolve: bool = False) -> None:
    """Raise :class:`LLMError` unless a conversation may send its requests to ``base_url``: the operator
    allows own endpoints, the host is on CHAT_LLM_ALLOWED_HOSTS (when that is set), the conversation has
    its own API key, and (with ``resolve``) the host's addresses are public. A name that does not resolve
    now passes: the addresses are checked again on every connect, and that check is the one that counts."""
    if not settings.CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS:
        raise LLMError(
            "This platform does not allow a conversation's own LLM endpoint: leave the base URL empty to use "
            "the platform's, or ask the administrator to allow custom endpoints."
        )
    parts = urlsplit(base_url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    if parts.scheme not in {"http", "https"} or not parts.hostname or port is None:
        raise LLMError(f"The LLM base URL {base_url!r} is not an http(s) URL with a host name.")
    host = parts.hostname.rstrip(".").lower()
    allowed = settings.CHAT_LLM_ALLOWED_HOSTS
    if allowed and not any(_host_matches(host, pattern) for pattern in allowed):
        raise LLMError(
            f"The LLM host {host} is not one this platform allows for a conversation's own endpoint "
            f"({', '.join(allowed)}): use one of those, or leave the base URL empty to use the platform's."
        )
    if not has_own_key:
        raise LLMError(
            "A conversation with its own LLM base URL needs its own API key: the platform's key is only "
            "sent to the platform's LLM service. Enter the key for that endpoint, or leave the base URL "
            "empty to use the platform's."
        )
    if resolve:
        with contextlib.suppress(_Unreachable):  # e.g. down for now: the connect decides then
            _public_addresses(host, port)


def _host_matches(host: str, pattern: str) -> bool:
    """``pattern`` as in Django's ALLOWED_HOSTS: a name, or ".example.com" for it and its subdomains."""
    pattern = pattern.strip().rstrip(".").lower()
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


class _Unreachable(OSError):
    """The own endpoint's host name did not resolve (reported like any other failure to connect)."""


def _is_public(address: str) -> bool:
    """Whether ``address`` is a public unicast address, also behind the IPv6 forms that carry an IPv4
    address (mapped ::ffff:a.b.c.d, 6to4 2002::/16, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope ("%eth0") is not part of it
    candidates = [ip]
    if ip.version == 6:
        candidates += [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    return all(_is_public_one(candidate) for candidate in candidates if candidate is not None)


def _is_public_one(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global alone lets multicast through; the others say the same thing twice, on purpose.
    special = (ip.is_private, ip.is_loopback, ip.is_link_local, ip.is_multicast, ip.is_reserved)
    return ip.is_global and not ip.is_unspecified and not any(special)


def _public_addresses(host: str, port: int) -> list[tuple]:
    """Resolve ``host`` and return its socket addresses, refusing them all if any one is not public
    (a name with one private address among public ones would otherwise be a coin toss away from it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _Unreachable(str(exc)) from None
    if not infos:
        raise _Unreachable(f"{host} has no address")
    if not all(_is_public(sockaddr[0]) for *_, sockaddr in infos):
        raise LLMError(
            f"The LLM host {host} is not a public address (loopback, private, link-local and reserved "
            "addresses are refused for a conversation's own endpoint). Use a public endpoint, or leave the "
            "base URL empty to use the platform's."
        )
    return [sockaddr[:2] for *_, sockaddr in infos]


def _connect_public(host: str, port: int, timeout: float | None) -> socket.socket:
    """A socket to one of ``host``'s addresses, each checked to be public just before connecting to it."""
    error: OSError = _Unreachable(f"{host} has no address")
    for address in _public_addresses(host, port):
        try:
            return socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            error = exc
    raise error


class _PublicHTTPConnection(http.client.HTTPConnection):
    """HTTP that connects only to the vetted public addresses of its host (see :func:`_connect_public`)."""

    def connect(self):
        self.sock = _connect_public(self.host, self.port, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the vetted public addresses, with SNI and the certificate checked against the host name."""

    def __init__(self, *args, **kwargs):
        self.tls_context = ssl.create_default_context()
        super().__init__(*args, context=self.tls_context, **kwargs)

    def connect(self):
        sock = _connect_public(self.host, self.port, self.timeout)
        try:
            self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def trim_history(messages: list[dict], *, budget_tokens: int) -> list[dict]:
    """The system prompt (if first) and the newest turns that fit in ``budget_tokens``, in order.

    The newest message is always kept, even alone over budget: without it there is nothing to answer."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    used = sum(estimate_tokens(m["content"]) for m in system)
    kept: list[dict] = []
    for message in reversed(rest):
        cost = estimate_tokens(message["content"])
        if kept and used + cost > budget_tokens:
            break
        kept.append(message)
        used += cost
    return system + kept[::-1]


def _endpoint(config: LLMConfig) -> tuple[type[http.client.HTTPConnection], str, int | None, str]:
    base_url = config.base_url
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in {"http", "https"} or not parts.hostname or port == 0:
        raise LLMError(
            f"The LLM base URL {base_url!r} is not an http(s) URL: {_fix(config, 'base URL')}, "
            "e.g. https://open.bigmodel.cn/api/paas/v4/."
        )
    if config.own_endpoint:
        connection = _PublicHTTPSConnection if parts.scheme == "https" else _PublicHTTPConnection
    else:  # the operator's own choice, trusted: it may well be an LLM on this machine or this network
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = parts.path.rstrip("/") + "/chat/completions"
    return connection, parts.hostname, port, path


def _error_detail(body: bytes) -> str:
    """The server's own message from an error body ({"error": {"message": …}} in OpenAI's format)."""
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or error)[:300]
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip()[:300]


def _raise_for_status(status: int, body: bytes, config: LLMConfig) -> None:
    """An error status explained. An own endpoint's body is left out: it could be anything at all."""
    detail = f"{status}" if config.own_endpoint else f"{status}: {_error_detail(body)}"
    where = f"{config.base_url} (model {config.model})"
    if status in (401, 403):
        raise LLMError(
            f"The LLM service at {where} refused the API key ({detail}). Check {config.key_source}.",
            status=status,
        )
    if status == 429:
        raise LLMError(
            f"The LLM service at {where} is rate limiting this key ({detail}). Try again in a "
            "moment, or raise the key's quota.",
            status=status,
            retryable=True,
        )
    if status >= 500:
        raise LLMError(
            f"The LLM service at {where} failed ({detail}). It is a fault on their side: try again later.",
            status=status,
            retryable=True,
        )
    if status == 404:
        raise LLMError(
            f"The LLM service at {where} has no such endpoint or model ({detail}): "
            f"{_fix(config, 'base URL and model')}.",
            status=status,
        )
    raise LLMError(f"The LLM service at {where} refused the request ({detail}).", status=status)


def stream_chat(messages: list[dict], *, config: LLMConfig, temperature: float = 0.7) -> Iterator[str]:
    """Send ``messages`` and yield the reply's text pieces as the server streams them."""
    connection_class, host, port, path = _endpoint(config)
    body = json.dumps(
        {"model": config.model, "messages": messages, "stream": True, "temperature": temperature}
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Content-Length": str(len(body)),
    }
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    where = config.base_url
    # The timeout bounds the connect and every read: a server that stops sending mid-reply is caught too.
    connection = connection_class(host, port, timeout=config.timeout)
    try:
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if not config.own_endpoint:
                _raise_unreachable(exc, config)
            # One message for every way of not getting an HTTP answer: a closed port, an open one that
            # speaks something else, TLS and timeouts look alike, so an own endpoint cannot map a network.
            raise LLMError(
                f"No HTTP answer from the LLM service at {where} (it could not be reached, did not answer "
                f"within {config.timeout:.0f} s, or its TLS or HTTP was broken). Check the conversation's "
                "base URL.",
                retryable=True,
            ) from None
        if response.status != 200:
            body = b"" if config.own_endpoint else response.read(65536)
            _raise_for_status(response.status, body, config)
        yield from _read_events(response, config)
    finally:
        connection.close()


def _raise_unreachable(exc: OSError | http.client.HTTPException, config: LLMConfig) -> None:
    """The platform endpoint's connection failure, with the detail an operator needs."""
    where = config.base_url
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        raise LLMError(
            f"The LLM service at {where} cannot be reached ({exc.strerror or exc}): "
            f"{_fix(config, 'base URL')}.",
            retryable=True,
        ) from None
    if isinstance(exc, TimeoutError):
        raise LLMError(
            f"The LLM service at {where} did not answer within {config.timeout:.0f} s. Try again later.",
            retryable=True,
        ) from None
    raise LLMError(f"The LLM service at {where} cannot be reached ({exc}).", retryable=True) from None


def _read_events(response: http.client.HTTPResponse, config: LLMConfig) -> Iterator[str]:
    """The reply's text pieces. What an own endpoint sends besides them is not quoted in errors."""
    where = config.base_url
    try:
        while True:
            line = response.readline()
            if not line:
                return  # the server closed the stream (some send no [DONE])
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, ": keep-alive" comments, event:/id: fields
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                shown = "" if config.own_endpoint else f": {data[:200]!r}"
                raise LLMError(f"The LLM service at {where} sent a malformed event{shown}.")
            if "error" in event:
                shown = "" if config.own_endpoint else f": {_error_detail(data)}"
                raise LLMError(f"The LLM service at {where} failed mid-reply{shown}.")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece
    except TimeoutError:
        raise LLMError(
            f"The LLM service at {where} stopped sending for {config.timeout:.0f} s mid-reply. Try again.",
            retryable=True,
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise LLMError(f"The connection to the LLM service at {where} broke mid-reply ({exc}).") from None
