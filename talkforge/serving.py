"""The production web server's worker: uvicorn inside gunicorn (``docker/web.sh``).

Gunicorn's master forks ``WEB_CONCURRENCY`` workers (one per core by default), restarts one that dies,
and replaces them all gracefully on SIGHUP; each worker serves HTTP and websockets (the Channels
application in ``talkforge/asgi.py``) on an asyncio loop.
"""

from uvicorn_worker import UvicornWorker


class TalkforgeUvicornWorker(UvicornWorker):
    """uvicorn as daphne served us before: the client address is the connection's own.

    ``proxy_headers=False``: uvicorn would otherwise take X-Forwarded-For/-Proto from a proxy on
    loopback and rewrite the client and scheme itself; the settings decide that instead
    (TRUSTED_PROXY_COUNT in core/proxies.py, SECURE_PROXY_SSL_HEADER), so a proxy is counted once.
    ``lifespan="off"``: Django's ASGI handler has no start-up or shutdown events.
    """

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "proxy_headers": False, "lifespan": "off"}
