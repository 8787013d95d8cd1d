from django.db.models import QuerySet, Sum

from core import media

from .models import Avatar, Checkpoint, DatasetCopy


def avatars_visible_to(user) -> QuerySet[Avatar]:
    """Only the owner sees an avatar — these are people's faces and voices; staff use the admin."""
    if not user.is_authenticated:
        return Avatar.objects.none()
    return (
        Avatar.objects.filter(owner=user)
        .select_related("preferred_node")
        .prefetch_related("datasets__node", "evaluations")
    )


def avatars_storage_bytes(user) -> int:
    """What the person's avatars take (their quota, accounts/quotas.py): their uploads in the media store,
    and their datasets and checkpoints on the nodes."""
    slugs = Avatar.objects.filter(owner=user).values_list("slug", flat=True)
    total = sum(media.size(f"avatars/{slug}") for slug in slugs)
    total += Checkpoint.objects.filter(avatar__owner=user).aggregate(n=Sum("size_bytes"))["n"] or 0
    total += DatasetCopy.objects.filter(avatar__owner=user).aggregate(n=Sum("size_bytes"))["n"] or 0
    return total
