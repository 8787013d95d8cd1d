from django.contrib import admin

from core.admin import ServiceDeleteMixin

from .models import Video
from .services import video_delete


@admin.register(Video)
class VideoAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    delete_service = staticmethod(lambda video: video_delete(video=video))
    list_display = ["id", "owner", "avatar", "source", "audio_duration", "result_duration", "created_at"]
    list_filter = ["source"]
    raw_id_fields = ["owner", "avatar", "checkpoint", "job"]
    readonly_fields = ["created_at"]
