import secrets

from django.db import transaction
from django.utils import timezone

from .models import ApiToken, User


@transaction.atomic
def api_token_rotate(*, user: User) -> str:
    """Make a new API token for ``user``, replacing any old one. Returns the key; it is not kept."""
    key = secrets.token_urlsafe(32)
    ApiToken.objects.filter(user=user).delete()
    ApiToken.objects.create(user=user, prefix=key[: ApiToken.PREFIX_LENGTH], key_hash=ApiToken.hash_key(key))
    return key


def api_token_revoke(*, user: User) -> None:
    ApiToken.objects.filter(user=user).delete()


def user_for_api_key(key: str) -> User | None:
    """The active user owning ``key``, or None. Touches ``last_used_at`` at most once a minute."""
    if not key:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(key)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
