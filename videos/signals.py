"""A video's files go with its row, however the row goes: deleted on its own, or with its avatar or owner
(cascades do not call services)."""

import logging

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from core import media

from .models import Video

logger = logging.getLogger(__name__)


@receiver(post_delete, sender=Video)
def video_files_removed(sender, instance: Video, **kwargs) -> None:
    folders = [instance.folder] if instance.folder.startswith("videos/") else []
    if instance.job_id:
        folders.append(f"jobs/{instance.job_id}")

    def remove() -> None:
        for folder in folders:
            try:
                media.delete(folder)
            except Exception:  # the row is gone; a file left over is logged, never an error to the caller
                logger.warning("could not remove %s", folder, exc_info=True)

    transaction.on_commit(remove)
