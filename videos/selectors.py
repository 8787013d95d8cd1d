from django.db.models import QuerySet

from .models import Video


def videos_visible_to(user) -> QuerySet[Video]:
    """Only the owner sees a video (a person's face and voice); anyone else gets a 404."""
    if not user.is_authenticated:
        return Video.objects.none()
    return Video.objects.filter(owner=user).select_related("avatar", "checkpoint", "job")
