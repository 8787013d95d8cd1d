"""Websocket authentication: the browser's session, or ``Authorization: Token <key>`` for other clients."""

from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from .authentication import key_from_header
from .services import user_for_api_key


@database_sync_to_async
def _user_for(key):
    return user_for_api_key(key)


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        header = headers.get(b"authorization", b"").decode("latin-1")
        key = key_from_header(header) if header else None
        if key:
            user = await _user_for(key)
            if user is not None:
                scope = dict(scope, user=user)
        return await super().__call__(scope, receive, send)


def SessionOrTokenAuthStack(inner):  # noqa: N802 - named like Channels' own stacks
    # The session stack sets scope["user"] first; a valid token header then takes precedence.
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, authority: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``scheme://authority``, the port filled in; None when it is not one."""
    if scheme not in DEFAULT_PORTS or not authority or any(c in authority for c in "/?#@\\ "):
        return None
    parsed = urlsplit(f"{scheme}://{authority}")
    try:
        port = parsed.port or DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number
        return None
    return (scheme, parsed.hostname, port) if parsed.hostname else None


def _parse_origin(value: str) -> tuple[str, str, int] | None:
    scheme, _, authority = value.strip().partition("://")
    return _origin(scheme.lower(), authority)


def _header(scope, name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", []) if key.lower() == name]
    return values[-1].decode("latin-1") if values else None


def own_origin(scope) -> tuple[str, str, int] | None:
    """This site's origin as the handshake reached us: the Host header (X-Forwarded-Host only with
    USE_X_FORWARDED_HOST, as for Django's request.get_host()), checked against ALLOWED_HOSTS; https when the
    connection is TLS, or when the proxy says so in SECURE_PROXY_SSL_HEADER, which Django's own
    request.is_secure() honours in the same case."""
    host = (settings.USE_X_FORWARDED_HOST and _header(scope, b"x-forwarded-host")) or _header(scope, b"host")
    if not host:
        return None
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host.strip().lower())
    if not domain or not validate_host(domain, allowed):
        return None
    secure = scope.get("scheme") in {"wss", "https"}
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        header = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        forwarded = _header(scope, header)
        if forwarded is not None:
            secure = forwarded.split(",")[0].strip() == secure_value
    return _origin("https" if secure else "http", host.strip().lower())


def trusted_origins() -> set[tuple[str, str, int]]:
    """CSRF_TRUSTED_ORIGINS that name one origin exactly (a wildcard entry names none here)."""
    parsed = (_parse_origin(origin) for origin in settings.CSRF_TRUSTED_ORIGINS if "*" not in origin)
    return {origin for origin in parsed if origin}


class BrowserOriginCheck:
    """Refuse a websocket handshake from a page of another origin; let non-browser clients in.

    Browsers always send ``Origin`` on a websocket handshake. It must be this site itself (scheme, host and
    port exactly, as ``own_origin`` sees the request) or one of CSRF_TRUSTED_ORIGINS exactly, so no other
    site, nor another port of this host (another service there), can ride a signed-in user's session
    cookie. A handshake without ``Origin`` comes from a program, which authenticates with its API token.
    Wraps the websocket application like Channels' AllowedHostsOriginValidator, which accepted any port
    and scheme of an allowed host."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("BrowserOriginCheck guards websocket connections only.")
        origin = _header(scope, b"origin")
        if origin is None or self.allowed(_parse_origin(origin), scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    @staticmethod
    def allowed(origin, scope) -> bool:
        return origin is not None and (origin == own_origin(scope) or origin in trusted_origins())
