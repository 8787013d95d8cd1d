"""What the reverse proxies in front of us may tell us about the client: its address.

Anyone can send ``X-Forwarded-For``; only the entries appended by our own proxies are true. With
``TRUSTED_PROXY_COUNT = N`` the client is the Nth address from the right (the one the outermost trusted
proxy saw), with 0 it is the connection's own address. This is the rule Django REST framework applies
with ``NUM_PROXIES`` (``rest_framework.throttling.BaseThrottle.get_ident``), which the settings set to the
same number, so the sign-in lockout (django-axes) and the API throttles count the same client.
"""

import ipaddress

from django.conf import settings


def client_address(request) -> str | None:
    """The client's IP address as ``TRUSTED_PROXY_COUNT`` allows us to know it (django-axes'
    ``AXES_CLIENT_IP_CALLABLE``). Something that is not an IP address is never returned: the lockout
    stores it in an address column."""
    remote = request.META.get("REMOTE_ADDR") or None
    count = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if count == 0 or not forwarded:
        return remote
    addresses = [part.strip() for part in forwarded.split(",")]
    candidate = addresses[-min(count, len(addresses))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote
