from rest_framework import serializers

from ..models import Avatar


class AvatarSerializer(serializers.ModelSerializer):
    video_url = serializers.SerializerMethodField()

    class Meta:
        model = Avatar
        fields = [
            "id", "name", "slug", "engine", "status", "training_settings", "video_info", "quality",
            "quality_override_at", "consent_given_at", "consent_statement", "created_at", "video_url",
        ]  # fmt: skip
        read_only_fields = fields

    def get_video_url(self, avatar) -> str:
        return f"/avatars/{avatar.pk}/media/video/"


class AvatarCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    engine = serializers.ChoiceField(choices=Avatar.Engine.choices, default=Avatar.Engine.GAUSSIANTALKER)
    video = serializers.FileField()
    au_csv = serializers.FileField(required=False, allow_null=True)
    consent = serializers.BooleanField(
        help_text="true: the person shown agreed that their likeness is trained (see consent_statement)."
    )
