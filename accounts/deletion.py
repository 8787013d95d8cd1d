"""Deleting an account: the person and everything of theirs, in every app, for good.

Accounts sit below every app whose rows and files a person has, so each of those apps says what deleting
an account means for it: an ``AccountEraser`` registered from its ``AppConfig.ready()`` (avatars, chat,
videos, jobs: each ``apps.py``), like the job kinds in jobs/kinds.py. The erasers collect the person's
files into one erasure, made by the collector gpu_nodes registers (gpu_nodes/erasure.py ``Erasure``: media
files and folders on the nodes). The rows go in one transaction; the files once it has committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from django.db import transaction
from django.db.models import ProtectedError

from core.errors import ServiceError

from .models import User


class Collector(Protocol):
    """What a deletion removes besides rows (gpu_nodes/erasure.py ``Erasure`` is the one used)."""

    def schedule(self) -> None: ...  # inside the deleting transaction

    def on_commit(self) -> None: ...  # the files go once that transaction has committed


@dataclass(frozen=True)
class AccountEraser:
    """One app's part in deleting an account. ``refuse(user)``: why the account cannot go now (a message
    saying what to do), or None. ``collect(user, collector)``: add the person's files (media, folders on
    nodes) while the rows still exist. ``delete(user)``: rows that must go before the person's own row
    (those that name the person with PROTECT); the rest go with it (CASCADE)."""

    name: str
    collect: Callable[[User, Collector], None]
    refuse: Callable[[User], str | None] | None = None
    delete: Callable[[User], None] | None = None


ERASERS: dict[str, AccountEraser] = {}
_collectors: list[Callable[..., Collector]] = []


def register_eraser(eraser: AccountEraser) -> None:
    """Apps add their part from ``AppConfig.ready()``; they run in the order the apps are installed."""
    ERASERS[eraser.name] = eraser


def register_collector(factory: Callable[..., Collector]) -> None:
    """``factory(what=..., by=...)`` makes the erasure the erasers fill (gpu_nodes registers it)."""
    _collectors[:] = [factory]


def account_delete(*, user: User, confirm_username: str) -> None:
    """Delete ``user`` and all of their data, once they typed their user name to confirm.

    Jobs go too (their logs and results are the person's data; nothing would link them to anyone).
    Refused while an app refuses (any of their jobs queued or running: cancel them first) and for
    superusers, whom another administrator removes in the admin. Nothing is deleted when it is refused."""
    if (confirm_username or "").strip() != user.username:
        raise ServiceError(
            f"Type your user name ({user.username}) to confirm: deleting the account cannot be undone."
        )
    if not _collectors:
        raise RuntimeError("No erasure collector is registered: is gpu_nodes installed?")
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user.pk).first()
        if user is None:
            raise ServiceError("This account was deleted already.")
        if user.is_superuser:
            raise ServiceError("A superuser account is deleted by another administrator, in the admin.")
        for eraser in ERASERS.values():
            if eraser.refuse is not None and (reason := eraser.refuse(user)):
                raise ServiceError(reason)
        erasure = _collectors[0](what=f"account {user.username} (#{user.pk})", by=user.username)
        for eraser in ERASERS.values():
            eraser.collect(user, erasure)
        erasure.schedule()
        for eraser in ERASERS.values():
            if eraser.delete is not None:
                eraser.delete(user)
        try:
            user.delete()
        except ProtectedError as error:
            names = ", ".join(sorted({type(obj)._meta.verbose_name for obj in error.protected_objects}))
            raise ServiceError(
                f"The account cannot be deleted while other records depend on it ({names}): ask the "
                "platform's operators."
            ) from None
        erasure.on_commit()
