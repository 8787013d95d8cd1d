"""``Authorization: Token <key>`` for the REST API and websockets."""

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
