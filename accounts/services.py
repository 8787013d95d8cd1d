import logging
import secrets

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from core.errors import ServiceError
from core.statements import Slot, Statement

from .models import ApiToken, InviteCode, User

logger = logging.getLogger(__name__)


@transaction.atomic
def api_token_rotate(*, user: User) -> str:
    """Make a new API token for ``user``, replacing any old one. Returns the key; it is not kept."""
    key = secrets.token_urlsafe(32)
    ApiToken.objects.filter(user=user).delete()
    ApiToken.objects.create(user=user, prefix=key[: ApiToken.PREFIX_LENGTH], key_hash=ApiToken.hash_key(key))
    return key


def api_token_revoke(*, user: User) -> None:
    ApiToken.objects.filter(user=user).delete()


USER_FIELDS = tuple(field.attname for field in User._meta.concrete_fields)


def _token_owner() -> QuerySet:
    """The user whose token has the hash ``key_hash``: their columns, and the token's id and last use."""
    key_hash = Slot("key_hash", ApiToken._meta.get_field("key_hash"))
    return User.objects.filter(api_token__key_hash=key_hash).values(
        *USER_FIELDS, token_id=F("api_token__id"), token_last_used_at=F("api_token__last_used_at")
    )


# Every API request asks it: compiled once per process (core/statements.py).
TOKEN_OWNER = Statement(_token_owner)


def user_for_api_key(key: str) -> User | None:
    """The active user owning ``key``, or None. Touches ``last_used_at`` at most once a minute."""
    if not key:
        return None
    rows = TOKEN_OWNER.rows(values={"key_hash": ApiToken.hash_key(key)})
    if not rows:
        return None
    row = rows[0]
    token_id, last_used_at = row.pop("token_id"), row.pop("token_last_used_at")
    user = User.from_db(DEFAULT_DB_ALIAS, USER_FIELDS, tuple(row.values()))
    if not user.is_active:
        return None
    now = timezone.now()
    if last_used_at is None or (now - last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token_id).update(last_used_at=now)
    return user


@transaction.atomic
def user_sign_up(*, form, invite_code: str = "") -> User:
    """Create an account from a valid sign-up form, as SIGNUP_POLICY says: open (active at once), invite
    (one use of a valid code), approval (inactive until staff activate it in the admin) or closed."""
    policy = settings.SIGNUP_POLICY
    if policy == "closed":
        raise ServiceError("Sign-up is closed on this platform: ask its operators for an account.")
    if policy == "invite":
        code = (invite_code or "").strip()
        used = InviteCode.objects.filter(code=code, uses_left__gt=0).exclude(expires_at__lt=timezone.now())
        if not code or not used.update(uses_left=F("uses_left") - 1):
            raise ServiceError("That invite code is not valid (or used up, or expired): ask for a new one.")
    user = form.save(commit=False)
    user.is_active = policy != "approval"
    user.save()
    logger.info(
        "signed up: %s (policy %s, %s)", user.username, policy, "active" if user.is_active else "waiting"
    )
    return user


def invite_code_create(*, created_by, uses: int = 1, note: str = "", expires_at=None) -> InviteCode:
    return InviteCode.objects.create(
        code=secrets.token_urlsafe(16),
        uses_left=uses,
        note=note,
        expires_at=expires_at,
        created_by=created_by,
    )
