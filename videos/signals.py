"""A video's files go with its row, however the row goes: deleted on its own, or with its avatar or owner
(cascades do not call services)."""

import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import Video


@receiver(post_delete, sender=Video)
def video_files_removed(sender, instance: Video, **kwargs) -> None:
    media = Path(settings.MEDIA_ROOT)
    folders = [media / instance.folder] if instance.folder.startswith("videos/") else []
    if instance.job_id:
        folders.append(media / "jobs" / str(instance.job_id))

    def remove() -> None:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    transaction.on_commit(remove)
