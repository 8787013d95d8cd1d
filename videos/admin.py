from django.contrib import admin

from .models import Video


@admin.register(Video)
class VideoAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "avatar", "source", "audio_duration", "result_duration", "created_at"]
    list_filter = ["source"]
    raw_id_fields = ["owner", "avatar", "checkpoint", "job"]
    readonly_fields = ["created_at"]
