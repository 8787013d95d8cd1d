"""Production: PostgreSQL required, secure cookies, media through X-Accel-Redirect."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .env import env_bool, env_str

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":  # noqa: F405
    raise ImproperlyConfigured("Production needs PostgreSQL: set DATABASE_URL=postgres://…")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
MEDIA_ACCEL_REDIRECT = env_bool("MEDIA_ACCEL_REDIRECT", True)
# New accounts wait for staff unless the deployment says otherwise (base.py checks the value).
SIGNUP_POLICY = env_str("SIGNUP_POLICY", "approval")
