from django.contrib import admin

from core.admin import ServiceDeleteMixin

from .models import Avatar, Checkpoint, DatasetCopy
from .services import avatar_delete


@admin.register(Avatar)
class AvatarAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    delete_service = staticmethod(lambda avatar: avatar_delete(avatar=avatar))
    list_display = ("name", "owner", "engine", "status", "created_at")
    list_filter = ("engine", "status")
    search_fields = ("name", "slug", "owner__username")
    readonly_fields = (
        "slug", "video", "video_info", "au_csv", "quality", "quality_override_at", "consent_given_at",
        "consent_given_by", "consent_statement", "created_at", "updated_at",
    )  # fmt: skip


admin.site.register(DatasetCopy)


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("avatar", "run", "stage", "iteration", "node", "size_bytes", "created_at")
    list_filter = ("stage",)
    raw_id_fields = ("run",)
