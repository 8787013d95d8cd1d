"""``Authorization: Token <key>`` for the REST API, websockets and the media files the API links to."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.utils.cache import patch_vary_headers
from rest_framework import authentication, exceptions

from .services import user_for_api_key


def key_from_header(value: str) -> str | None:
    parts = value.split()
    if len(parts) == 2 and parts[0].lower() in {"token", "bearer"}:
        return parts[1]
    return None


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        key = key_from_header(header)
        if key is None:
            raise exceptions.AuthenticationFailed("Use the header 'Authorization: Token <your API token>'.")
        user = user_for_api_key(key)
        if user is None:
            raise exceptions.AuthenticationFailed(
                "Invalid or revoked API token: make a new one on your profile page."
            )
        return user, key

    def authenticate_header(self, request):
        return self.keyword


def login_or_token_required(view):
    """For the media views (the API's ``urls``): an integration's ``Authorization: Token <key>`` (or Bearer)
    is accepted like the API accepts it, a bad one is a 401 with the API's message, never the login
    page; without such a header the browser's session is needed, and the anonymous are sent to log in.
    The view then filters by ``request.user`` as ever, so another user's file stays a 404.

    Another Authorization scheme (Basic, sent by browsers to a site behind a password-protected proxy)
    is not ours: the session decides then."""
    for_browsers = login_required(view)

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        scheme = (request.headers.get("Authorization", "").split() or [""])[0].lower()
        if scheme not in {"token", "bearer"}:
            response = for_browsers(request, *args, **kwargs)
        else:
            try:
                request.user, _ = ApiTokenAuthentication().authenticate(request)
            except exceptions.AuthenticationFailed as error:
                response = JsonResponse({"detail": str(error.detail)}, status=401)
                response["WWW-Authenticate"] = ApiTokenAuthentication.keyword
            else:
                response = view(request, *args, **kwargs)
        patch_vary_headers(response, ["Authorization"])
        return response

    return wrapped
