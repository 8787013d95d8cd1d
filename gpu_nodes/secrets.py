"""Node credentials encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from ``NODE_SECRETS_KEY`` (a Fernet key, 32 url-safe base64 bytes). Without it, a key is
derived from SECRET_KEY with HKDF, so ``make run`` works out of the box; production should set its own,
so that rotating SECRET_KEY (sessions) and the node credentials are separate decisions. Decryption
failures name the setting to check instead of surfacing as a bare InvalidToken.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    pass


@functools.cache
def _fernet() -> Fernet:
    if settings.NODE_SECRETS_KEY:
        try:
            return Fernet(settings.NODE_SECRETS_KEY)
        except ValueError:
            raise ImproperlyConfigured(
                "NODE_SECRETS_KEY is not a Fernet key: make one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"talkforge-node-secrets", info=b"v1").derive(
        settings.SECRET_KEY.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "A stored node credential cannot be decrypted: NODE_SECRETS_KEY (or SECRET_KEY, if that key is "
            "unset) changed since it was saved. Restore the old key or enter the credential again."
        ) from None
