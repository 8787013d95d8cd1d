"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "talkforge.settings.production")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain built as under WSGI and entered once per request.

    For ASGI Django builds the chain in async mode: every ``process_request`` and ``process_response`` of
    the middleware that can run either way, the hop back out of WhiteNoise (sync only), ``process_view``
    and the view itself each go through ``sync_to_async``: 16 hand-offs between the event loop and the
    request's thread per request, about a quarter of the job list's CPU time. Every HTTP view here is
    synchronous, so the whole chain runs in the request's thread in one hand-off instead (an async view
    would still work: Django runs it with ``async_to_sync``). The same middleware in the same order, run
    in the same thread as before."""

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)


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
