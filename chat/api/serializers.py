from django.conf import settings
from rest_framework import serializers

from ..models import Chunk, Conversation, Language, Message, Voice


class VoiceSerializer(serializers.ModelSerializer):
    reference_url = serializers.SerializerMethodField()

    class Meta:
        model = Voice
        fields = [
            "id", "name", "language", "reference_info", "reference_url", "consent_given_at",
            "consent_statement", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_reference_url(self, voice) -> str:
        return f"/chat/media/voice/{voice.pk}/"


class VoiceCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    language = serializers.ChoiceField(choices=Language.choices, default=Language.EN)
    recording = serializers.FileField(help_text="3–60 s of the person speaking (any format ffmpeg reads).")
    consent = serializers.BooleanField(
        help_text="true: the person speaking agreed that their voice is cloned (see consent_statement)."
    )


class ConversationSerializer(serializers.ModelSerializer):
    """``llm_api_key`` is write-only: it is stored encrypted and never sent back (``has_own_api_key``
    says whether one is set). Send "" to remove it; leave it out to keep it."""

    llm_api_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500, trim_whitespace=True,
        style={"input_type": "password"},
    )  # fmt: skip
    has_own_api_key = serializers.BooleanField(read_only=True)
    # The limit as the schema shows it; the service enforces CHAT_SYSTEM_PROMPT_MAX_CHARS as it is now.
    system_prompt = serializers.CharField(
        required=False, allow_blank=True, max_length=settings.CHAT_SYSTEM_PROMPT_MAX_CHARS,
        help_text="Who the avatar is and how it answers; sent with every turn.",
    )  # fmt: skip
    llm_base_url = serializers.URLField(
        required=False, allow_blank=True, max_length=300,
        help_text="Empty: the platform's. Your own endpoint needs llm_api_key and the operator's leave "
        "(the administrator allows them or not); it must be a public host.",
    )  # fmt: skip
    avatar = serializers.IntegerField(source="avatar_id")
    voice = serializers.IntegerField(source="voice_id", required=False, allow_null=True)
    language = serializers.ChoiceField(choices=Language.choices, required=False, allow_blank=True)

    class Meta:
        model = Conversation
        fields = [
            "id", "title", "avatar", "voice", "language", "system_prompt", "llm_base_url", "llm_model",
            "llm_api_key", "has_own_api_key", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "has_own_api_key", "created_at", "updated_at"]


class ChunkSerializer(serializers.ModelSerializer):
    audio_url = serializers.SerializerMethodField()
    video_url = serializers.SerializerMethodField()

    class Meta:
        model = Chunk
        fields = [
            "index", "text", "audio_url", "audio_seconds", "video_url", "pose_start", "video_frames",
            "timings",
        ]  # fmt: skip
        read_only_fields = fields

    def get_audio_url(self, chunk) -> str | None:
        return f"/chat/media/chunk/{chunk.pk}/audio/" if chunk.audio else None

    def get_video_url(self, chunk) -> str | None:
        return f"/chat/media/chunk/{chunk.pk}/video/" if chunk.video else None


class MessageSerializer(serializers.ModelSerializer):
    chunks = ChunkSerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = [
            "id", "role", "text", "language", "status", "error", "timings", "voice_engine", "voice_note",
            "video_note", "video_frames", "job", "chunks", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class MessageSendSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    audio = serializers.FileField(required=False, help_text="A spoken turn (any format ffmpeg reads).")


class LLMTestSerializer(serializers.Serializer):
    """The LLM fields of a conversation's form, to try before saving; blank ones are the platform's."""

    llm_base_url = serializers.CharField(required=False, allow_blank=True, max_length=300, default="")
    llm_model = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    llm_api_key = serializers.CharField(
        required=False, allow_blank=True, max_length=500, default="", write_only=True,
        style={"input_type": "password"},
    )  # fmt: skip
    conversation = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, default=None,
        help_text="One of your conversations being edited: its saved API key is used when none is typed.",
    )  # fmt: skip


class LLMTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    model = serializers.CharField()
    own_endpoint = serializers.BooleanField()
    first_token_seconds = serializers.FloatField()
    answer = serializers.CharField()
