from axes.utils import reset as lockout_reset
from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.proxies import client_address
from core.throttling import AnonRateThrottle

from ..deletion import account_delete
from ..lockout import lockout_message, retry_after_seconds
from ..models import User
from ..services import api_token_rotate

WRONG_CREDENTIALS = "Wrong username or password."
# Longer than any password anyone types; hashing megabytes of "password" per request is a denial of service.
MAX_PASSWORD_LENGTH = 4096


def _credential(value, max_length: int) -> str | None:
    """A username or password as sent, or None when it cannot be one (absent, not a string, too long, or
    holding a NUL, which Django's own login form refuses too)."""
    if not isinstance(value, str) or not value or len(value) > max_length or "\x00" in value:
        return None
    return value


class TokenObtainView(APIView):
    """Exchange a username and password for a new personal API token (replaces the old one).

    Every refusal of credentials reads the same, whether the user exists or the request was malformed, so
    the answer never tells which usernames exist. Failed attempts count towards the sign-in lockout
    (django-axes, through ``authenticate``) like the portal's."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [AnonRateThrottle]

    @extend_schema(
        request=inline_serializer(
            "TokenRequest", {"username": serializers.CharField(), "password": serializers.CharField()}
        ),
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
    )
    def post(self, request):
        data = request.data if hasattr(request.data, "get") else {}
        username = _credential(data.get("username"), User._meta.get_field("username").max_length)
        password = _credential(data.get("password"), MAX_PASSWORD_LENGTH)
        if username is None or password is None:
            return Response({"detail": WRONG_CREDENTIALS}, status=status.HTTP_400_BAD_REQUEST)
        user = authenticate(request, username=username, password=password)
        if user is None:
            if getattr(request, "axes_locked_out", False):
                return Response(
                    {"detail": lockout_message()},
                    status=status.HTTP_429_TOO_MANY_REQUESTS,
                    headers={"Retry-After": str(retry_after_seconds())},
                )
            return Response({"detail": WRONG_CREDENTIALS}, status=status.HTTP_400_BAD_REQUEST)
        # Like a portal sign-in (AXES_RESET_ON_SUCCESS): this account's failures from here are forgotten.
        lockout_reset(ip=client_address(request), username=username)
        return Response({"token": api_token_rotate(user=user)}, status=status.HTTP_201_CREATED)


class MeView(APIView):
    """The signed-in person. DELETE deletes the account and all of its data for good (avatars with their
    datasets and models on the nodes, voices, conversations, videos, jobs, the API token), once
    ``confirm`` repeats the user name; refused while a job of theirs is queued or running."""

    @extend_schema(responses=inline_serializer("Me", {"id": serializers.IntegerField(),
                                                      "username": serializers.CharField()}))  # fmt: skip
    def get(self, request):
        return Response({"id": request.user.pk, "username": request.user.username})

    @extend_schema(
        request=inline_serializer("AccountDelete", {"confirm": serializers.CharField()}),
        responses={204: None},
    )
    def delete(self, request):
        confirm = request.data.get("confirm") if hasattr(request.data, "get") else None
        account_delete(user=request.user, confirm_username=str(confirm or ""))
        return Response(status=status.HTTP_204_NO_CONTENT)
