from django.contrib import admin, messages
from django.db import models
from django.utils import timezone

from core.admin import ServiceDeleteMixin

from .live import live_session_end
from .models import Chunk, Conversation, LiveSession, Message, Voice
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
    list_display = ("__str__", "conversation", "role", "status", "withdrawn", "voice_engine", "created_at")
    list_filter = ("role", "status", "withdrawn", "voice_engine")
    readonly_fields = ("timings", "job", "created_at")
    inlines = [ChunkInline]


@admin.register(LiveSession)
class LiveSessionAdmin(admin.ModelAdmin):
    """Live render sessions: what each holds where, how long it has lived, how it served; "End" stops its
    process on the node (a conversation that needs it again starts a new one)."""

    list_display = (
        "__str__",
        "node",
        "gpu",
        "memory_mb",
        "age",
        "turns",
        "last_latency",
        "state",
        "restarts",
    )
    list_filter = ("state", "engine", "node")
    readonly_fields = [field.name for field in LiveSession._meta.fields]
    actions = ["end_sessions"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="Age")
    def age(self, session: LiveSession) -> str:
        end = session.ended_at or timezone.now()
        seconds = int((end - session.started_at).total_seconds())
        return f"{seconds // 3600}h {seconds // 60 % 60:02d}m {seconds % 60:02d}s"

    @admin.action(description="End the selected live sessions")
    def end_sessions(self, request, queryset):
        live = queryset.filter(state__in=LiveSession.LIVE_STATES).select_related("node")
        count = 0
        for session in live:
            live_session_end(session=session, reason=f"Ended by {request.user.get_username()} in the admin.")
            count += 1
        self.message_user(request, f"{count} live session(s) ended.", messages.SUCCESS)
