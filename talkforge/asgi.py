"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "talkforge.settings.production")
django_asgi_app = get_asgi_application()

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
