"""Websocket authentication: the browser's session, or ``Authorization: Token <key>`` for other clients."""

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings

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


class BrowserOriginValidator(OriginValidator):
    """Reject cross-site websocket handshakes from browsers; let non-browser clients in.

    Browsers always send ``Origin`` on a websocket handshake, and it must name one of ALLOWED_HOSTS, so
    another site cannot ride a signed-in user's session cookie. A handshake without ``Origin`` comes from a
    program (which authenticates with its API token); Channels' own validator would refuse it."""

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or self.validate_origin(parsed_origin)


def BrowserOriginCheck(inner):  # noqa: N802 - named like Channels' AllowedHostsOriginValidator
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(inner, allowed)
