"""Refusing a SECRET_KEY that anyone could know or guess (production settings call this at start-up).

The key signs sessions, password-reset links and CSRF tokens: with a placeholder from an example file, a
development key from this repository or a short one, anyone can forge them. Django's own deploy check
(security.W009) only warns; production refuses to start instead.
"""

from django.core.exceptions import ImproperlyConfigured

MIN_LENGTH = 50
MIN_UNIQUE_CHARACTERS = 5
# Words that mark a key published in this repository, never a secret: the placeholder of
# docker/.env.example ("change-me-…", which docker/entrypoint.sh refuses too), and the fixed keys of
# talkforge/settings/dev.py and test.py and of bench/_harness.py.
PUBLIC_KEY_MARKERS = ("change-me", "insecure", "not-for-production", "never-used-in-production")
HOW_TO_MAKE_ONE = (
    "generate one with python3 -c 'import secrets; print(secrets.token_urlsafe(50))' and set it in the "
    "environment (docker/.env for the Docker stack)"
)


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` must not sign anything in production, or None when it may. Never quotes the key."""
    lowered = key.lower()
    if lowered.startswith("django-insecure"):
        return "is a development key from django-admin startproject (django-insecure-…)"
    if marker := next((m for m in PUBLIC_KEY_MARKERS if m in lowered), None):
        return f"is a placeholder or a key published in the repository (it contains {marker!r})"
    if len(key) < MIN_LENGTH:
        return f"is {len(key)} characters long; production needs at least {MIN_LENGTH}"
    if len(set(key)) < MIN_UNIQUE_CHARACTERS:
        return f"has fewer than {MIN_UNIQUE_CHARACTERS} different characters"
    return None


def refuse_weak_secret_key(key: str) -> None:
    if (problem := secret_key_problem(key)) is not None:
        raise ImproperlyConfigured(f"SECRET_KEY {problem}: {HOW_TO_MAKE_ONE}.")
