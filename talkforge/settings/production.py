"""Production: PostgreSQL required, a real secret key, HTTPS only (redirect, HSTS, secure cookies), media
through X-Accel-Redirect. ``manage.py check --deploy`` passes with the defaults."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .env import env_bool, env_int, env_str
from .secret_key import refuse_weak_secret_key

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":  # noqa: F405
    raise ImproperlyConfigured("Production needs PostgreSQL: set DATABASE_URL=postgres://…")
refuse_weak_secret_key(SECRET_KEY)  # noqa: F405
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
MEDIA_ACCEL_REDIRECT = env_bool("MEDIA_ACCEL_REDIRECT", True)
# HTTPS only. A stack served over plain HTTP (docker/.env.example, before a TLS proxy is in front) turns
# these off; HSTS is a promise browsers keep for SECURE_HSTS_SECONDS, so start small when unsure.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# New accounts wait for staff unless the deployment says otherwise (base.py checks the value).
SIGNUP_POLICY = env_str("SIGNUP_POLICY", "approval")
