"""The first middleware: a request id for every request, HTTP metrics, and the three operations endpoints.

``/healthz``, ``/readyz`` and ``/metrics`` are answered here, before the host check and the HTTPS
redirect: load balancers and Prometheus come by IP address and over plain HTTP inside the deployment, and
none of these answers builds a URL from the Host header. Works both as sync and async middleware, so
under ASGI (daphne) it adds no thread hop of its own; the blocking checks run in a thread.
"""

from __future__ import annotations

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse

from .access import metrics_allowed, metrics_enabled
from .checks import CHECKS, readiness
from .logs import request_id_for, request_id_var
from .metrics import http_request_observe, metrics_text

ENDPOINTS = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}
NO_STORE = {"Cache-Control": "no-store"}


def healthz(request) -> HttpResponse:
    """Liveness: the process answers. No dependency is touched (a dead database must not get the web
    processes restarted in a loop)."""
    return JsonResponse({"status": "ok"}, headers=NO_STORE)


def readyz(request) -> HttpResponse:
    """Readiness: 200 when every check passes, else 503 naming the failing ones. ``?skip=workers,...``
    leaves checks out (a load balancer that should keep the portal up while the GPU side is down)."""
    skip = {name.strip() for name in request.GET.get("skip", "").split(",") if name.strip()}
    unknown = skip - set(CHECKS)
    if unknown:
        return JsonResponse(
            {"error": f"unknown check(s) to skip: {', '.join(sorted(unknown))}", "checks": list(CHECKS)},
            status=400,
            headers=NO_STORE,
        )
    results = readiness([name for name in CHECKS if name not in skip])
    failing = [name for name, result in results.items() if not result.ok]
    body = {
        "status": "failing" if failing else "ok",
        "failing": failing,
        "checks": {name: result.as_dict() for name, result in results.items()},
    }
    return JsonResponse(body, status=503 if failing else 200, headers=NO_STORE)


def metrics(request) -> HttpResponse:
    if not metrics_enabled():
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    if not metrics_allowed(request):
        headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if settings.METRICS_TOKEN else {}
        return HttpResponse(
            "Not allowed.\n", status=401 if headers else 403, content_type="text/plain", headers=headers
        )
    from prometheus_client import CONTENT_TYPE_LATEST

    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST, headers=NO_STORE)


VIEWS = {"healthz": healthz, "readyz": readyz, "metrics": metrics}


def _view_label(request, response, endpoint: str | None) -> str:
    """A bounded label: the URL name (``app:name``), never the path (ids would explode the series)."""
    if endpoint:
        return endpoint
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or match._func_path
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "not_found" if response.status_code == 404 else "unresolved"


class ObservabilityMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _begin(self, request):
        request.request_id = request_id_for(request.headers.get("X-Request-ID"))
        return request_id_var.set(request.request_id), time.perf_counter(), ENDPOINTS.get(request.path)

    def _end(self, request, response, token, started: float, endpoint: str | None):
        http_request_observe(
            view=_view_label(request, response, endpoint),
            method=request.method,
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        response["X-Request-ID"] = request.request_id
        request_id_var.reset(token)
        return response

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        token, started, endpoint = self._begin(request)
        response = VIEWS[endpoint](request) if endpoint else self.get_response(request)
        return self._end(request, response, token, started, endpoint)

    async def __acall__(self, request):
        token, started, endpoint = self._begin(request)
        if endpoint:
            # The checks and the scrape block (database, Redis, disk): off the event loop, in this request's
            # own thread (Django's ASGI handler gives each request one), where Django also closes the
            # database connection the scrape used when the request ends.
            response = await sync_to_async(VIEWS[endpoint])(request)
        else:
            response = await self.get_response(request)
        return self._end(request, response, token, started, endpoint)
