"""Error reporting to Sentry, only when ``SENTRY_DSN`` is set: Django (requests, templates, signals), RQ
(a job that raises in a worker) and logging (``logger.error``/``exception`` lines become events)."""

from __future__ import annotations

import sentry_sdk
from django.conf import settings
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.rq import RqIntegration


def sentry_init() -> bool:
    """Start the SDK when a DSN is configured; True when it did."""
    if not settings.SENTRY_DSN:
        return False
    sentry_sdk.init(
        dsn=settings.SENTRY_DSN,
        environment=settings.SENTRY_ENVIRONMENT or None,
        integrations=[DjangoIntegration(), RqIntegration(), LoggingIntegration()],
        # No user names, e-mail or addresses, no cookies, API keys or request bodies: people's faces and
        # voices pass through here, and secrets stay out of every outside system. ``send_default_pii`` off
        # keeps out the signed-in user, cookies, addresses and the Authorization header, but not the rest:
        # the SDK still sends a request's JSON or form body (``max_request_body_size``, "medium" by
        # default) and every frame's local variables (``include_local_variables``: a view's ``user``
        # arrives as "<User: alice>"). tests/talkforge/test_logs_sentry.py posts a request carrying each of
        # these through a failing view and looks for them in what reaches Sentry.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
    )
    return True
