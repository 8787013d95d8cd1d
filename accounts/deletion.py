"""Deleting an account: the person and everything of theirs, in every app, for good.

Its own module because it reaches every app: avatars (with their files here and on the nodes,
avatars/services.py avatar_erasure), voices (chat/services.py voice_erasure), conversations with their
recordings and clips, videos, jobs with their logs and files, and API tokens. The rows go in one
transaction; the files once it has committed (gpu_nodes/erasure.py).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django.db import transaction
from django.db.models import ProtectedError

from core.errors import ServiceError
from gpu_nodes.erasure import Erasure

from .models import User


def account_delete(*, user: User, confirm_username: str) -> None:
    """Delete ``user`` and all of their data, once they typed their user name to confirm.

    Jobs go too (their logs and results are the person's data; nothing would link them to anyone).
    Refused while any of their jobs is queued or running — cancel them first — and for superusers, whom
    another administrator removes in the admin. Nothing is deleted when it is refused."""
    from avatars.services import avatar_erasure
    from chat.services import voice_erasure
    from jobs.models import Job

    if (confirm_username or "").strip() != user.username:
        raise ServiceError(
            f"Type your user name ({user.username}) to confirm: deleting the account cannot be undone."
        )
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user.pk).first()
        if user is None:
            raise ServiceError("This account was deleted already.")
        if user.is_superuser:
            raise ServiceError("A superuser account is deleted by another administrator, in the admin.")
        if Job.objects.filter(owner=user, status__in=Job.ACTIVE_STATUSES).exists():
            raise ServiceError(
                "Some of your jobs are queued or running: cancel them or wait for them, then delete the "
                "account."
            )
        erasure = Erasure(what=f"account {user.username} (#{user.pk})", by=user.username)
        for avatar in user.avatars.all():
            avatar_erasure(avatar, erasure)
        for voice in user.voices.all():
            voice_erasure(voice, erasure)
        for conversation in user.conversations.all():
            erasure.add_media(conversation.folder)
        for video in user.videos.all():
            erasure.add_media(video.folder if video.folder.startswith("videos/") else "")
        for job in Job.objects.filter(owner=user).select_related("node"):
            erasure.add_media(f"jobs/{job.pk}")
            if job.node is not None:
                erasure.add_node_path(job.node, PurePosixPath(job.node.workdir) / "jobs" / str(job.pk))
        erasure.schedule()
        # Their avatars and voices first: they name the person as the consent giver (PROTECT), which
        # would refuse deleting the person while they exist.
        user.avatars.all().delete()
        user.voices.all().delete()
        try:
            user.delete()
        except ProtectedError as error:
            names = ", ".join(sorted({type(obj)._meta.verbose_name for obj in error.protected_objects}))
            raise ServiceError(
                f"The account cannot be deleted while other records depend on it ({names}): ask the "
                "platform's operators."
            ) from None
        erasure.on_commit()
