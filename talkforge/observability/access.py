"""Who may read ``/metrics``: a scraper with the bearer token, or one from an allowed network."""

from __future__ import annotations

import functools
import hmac
import ipaddress

from django.conf import settings

from core.proxies import client_address


@functools.cache
def _networks(configured: tuple[str, ...]):
    return [ipaddress.ip_network(item) for item in configured]


def metrics_enabled() -> bool:
    return bool(settings.METRICS_TOKEN or settings.METRICS_ALLOWED_NETWORKS)


def metrics_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode()):
        return True
    networks = _networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    address = client_address(request)
    if not networks or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
