from django.contrib import admin
from django.db import models

from core.admin import ServiceDeleteMixin

from .models import Chunk, Conversation, Message, Voice
from .services import conversation_delete, voice_delete


@admin.register(Voice)
class VoiceAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    delete_service = staticmethod(lambda voice: voice_delete(voice=voice))
    list_display = ("name", "owner", "language", "created_at")
    list_filter = ("language",)
    search_fields = ("name", "slug", "owner__username")
    readonly_fields = (
        "slug", "reference", "reference_info", "latents", "consent_given_at", "consent_given_by",
        "consent_statement", "created_at",
    )  # fmt: skip


@admin.register(Conversation)
class ConversationAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    """The API key stays encrypted and out of the form (the model field is not editable)."""

    delete_service = staticmethod(lambda conversation: conversation_delete(conversation=conversation))

    list_display = ("__str__", "owner", "avatar", "voice", "language", "has_own_api_key", "updated_at")
    list_filter = ("language",)
    search_fields = ("title", "owner__username", "avatar__name")
    readonly_fields = ("created_at", "updated_at")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(boolean=True, description="Own API key")
    def has_own_api_key(self, conversation: Conversation) -> bool:
        return conversation.has_own_api_key


class ChunkInline(admin.TabularInline):
    model = Chunk
    extra = 0
    readonly_fields = ("index", "text", "audio", "audio_seconds", "video", "timings", "created_at")
    can_delete = False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "conversation", "role", "status", "voice_engine", "created_at")
    list_filter = ("role", "status", "voice_engine")
    readonly_fields = ("timings", "job", "created_at")
    inlines = [ChunkInline]
