"""``make run``: the portal on one machine with its embedded defaults (SQLite, local Redis)."""

import os

# Development only: a fixed key so manage.py works on a fresh checkout (make run generates a real one).
os.environ.setdefault("SECRET_KEY", "dev-only-insecure-key-never-used-in-production-0123456789")

from .base import *  # noqa: E402, F403
from .env import env_bool  # noqa: E402

DEBUG = True
WHITENOISE_USE_FINDERS = True
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
# On your own machine, a conversation may try any public LLM endpoint (with its own key) unless you say no.
CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS = env_bool("CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS", True)
