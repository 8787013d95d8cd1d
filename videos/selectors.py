from django.db.models import QuerySet

from core import media

from .models import Video


def videos_visible_to(user) -> QuerySet[Video]:
    """Only the owner sees a video (a person's face and voice); anyone else gets a 404."""
    if not user.is_authenticated:
        return Video.objects.none()
    return Video.objects.filter(owner=user).select_related("avatar", "checkpoint", "job")


def videos_storage_bytes(user) -> int:
    """What the person's videos take in the media store (their quota, accounts/quotas.py)."""
    folders = Video.objects.filter(owner=user).exclude(folder="").values_list("folder", flat=True)
    return sum(media.size(folder) for folder in folders)
