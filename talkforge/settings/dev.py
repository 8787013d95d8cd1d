"""``make run``: the portal on one machine with its embedded defaults (SQLite, local Redis)."""

from .base import *  # noqa: F403

DEBUG = True
WHITENOISE_USE_FINDERS = True
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
