"""The LLM edge: any OpenAI-compatible chat-completions endpoint, streamed (Zhipu GLM by default).

Plain ``http.client`` keeps the web tier free of an SDK: the request is one POST with ``stream: true``
and the answer is server-sent events, ``data: {json}`` lines ending with ``data: [DONE]``. Tokens are
yielded as they arrive. Failures become :class:`LLMError` with a message a person can act on (which
setting, what to do); the API key never appears in one.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

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
    key_source: str = "CHAT_LLM_API_KEY"

    def __repr__(self) -> str:  # never print the key
        key = f"<{len(self.api_key)} chars>"
        return f"LLMConfig(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"


def config_for(*, base_url: str = "", model: str = "", api_key: str = "") -> LLMConfig:
    """The settings' endpoint, model and key, each replaced by a conversation's own value when it has one."""
    return LLMConfig(
        base_url=base_url or settings.CHAT_LLM_BASE_URL,
        model=model or settings.CHAT_LLM_MODEL,
        api_key=api_key or settings.CHAT_LLM_API_KEY,
        timeout=settings.CHAT_LLM_TIMEOUT,
        key_source="the conversation's API key" if api_key else "CHAT_LLM_API_KEY",
    )


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


def _endpoint(base_url: str) -> tuple[type[http.client.HTTPConnection], str, int | None, str]:
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise LLMError(
            f"The LLM base URL {base_url!r} is not an http(s) URL: set CHAT_LLM_BASE_URL (or the "
            "conversation's base URL) to e.g. https://open.bigmodel.cn/api/paas/v4/."
        )
    connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = parts.path.rstrip("/") + "/chat/completions"
    return connection, parts.hostname, parts.port, path


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
    detail = _error_detail(body)
    where = f"{config.base_url} (model {config.model})"
    if status in (401, 403):
        raise LLMError(
            f"The LLM service at {where} refused the API key ({status}: {detail}). Check "
            f"{config.key_source}.",
            status=status,
        )
    if status == 429:
        raise LLMError(
            f"The LLM service at {where} is rate limiting this key (429: {detail}). Try again in a "
            "moment, or raise the key's quota.",
            status=status,
            retryable=True,
        )
    if status >= 500:
        raise LLMError(
            f"The LLM service at {where} failed ({status}: {detail}). It is a fault on their side: try "
            "again later.",
            status=status,
            retryable=True,
        )
    if status == 404:
        raise LLMError(
            f"The LLM service at {where} has no such endpoint or model (404: {detail}). Check "
            "CHAT_LLM_BASE_URL and CHAT_LLM_MODEL (or the conversation's own).",
            status=status,
        )
    raise LLMError(f"The LLM service at {where} refused the request ({status}: {detail}).", status=status)


def stream_chat(messages: list[dict], *, config: LLMConfig, temperature: float = 0.7) -> Iterator[str]:
    """Send ``messages`` and yield the reply's text pieces as the server streams them."""
    connection_class, host, port, path = _endpoint(config.base_url)
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
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise LLMError(
                f"The LLM service at {where} cannot be reached ({exc.strerror or exc}). Check "
                "CHAT_LLM_BASE_URL and the network.",
                retryable=True,
            ) from None
        except TimeoutError:
            raise LLMError(
                f"The LLM service at {where} did not answer within {config.timeout:.0f} s "
                "(CHAT_LLM_TIMEOUT). Try again later.",
                retryable=True,
            ) from None
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise LLMError(f"The LLM service at {where} cannot be reached ({exc}).", retryable=True) from None
        if response.status != 200:
            _raise_for_status(response.status, response.read(65536), config)
        yield from _read_events(response, config)
    finally:
        connection.close()


def _read_events(response: http.client.HTTPResponse, config: LLMConfig) -> Iterator[str]:
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
                raise LLMError(
                    f"The LLM service at {where} sent a malformed event: {data[:200]!r}."
                ) from None
            if "error" in event:
                raise LLMError(f"The LLM service at {where} failed mid-reply: {_error_detail(data)}.")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece
    except TimeoutError:
        raise LLMError(
            f"The LLM service at {where} stopped sending for {config.timeout:.0f} s mid-reply "
            "(CHAT_LLM_TIMEOUT). Try again.",
            retryable=True,
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise LLMError(f"The connection to the LLM service at {where} broke mid-reply ({exc}).") from None
