"""What a person locked out by too many failed sign-ins is told (django-axes counts; settings AXES_*)."""

from django.conf import settings
from django.shortcuts import render


def lockout_message() -> str:
    minutes = settings.LOGIN_COOLOFF_MINUTES
    return (
        f"Too many failed sign-ins for this account from your address. Wait {minutes} minutes, then try "
        f"again: each attempt before then restarts the wait."
    )


def retry_after_seconds() -> int:
    return settings.LOGIN_COOLOFF_MINUTES * 60


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out browser gets instead of the login form's generic error (AXES_LOCKOUT_CALLABLE).

    django-axes calls this with (request, response, credentials), or (request, credentials) on its async
    path; neither is needed here."""
    response = render(request, "accounts/locked_out.html", {"message": lockout_message()}, status=429)
    response["Retry-After"] = str(retry_after_seconds())
    return response
