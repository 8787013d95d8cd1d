from django.db.models import QuerySet

from .models import Avatar


def avatars_visible_to(user) -> QuerySet[Avatar]:
    """Only the owner sees an avatar — these are people's faces and voices; staff use the admin."""
    if not user.is_authenticated:
        return Avatar.objects.none()
    return (
        Avatar.objects.filter(owner=user)
        .select_related("preferred_node")
        .prefetch_related("datasets__node", "evaluations")
    )
