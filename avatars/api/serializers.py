from rest_framework import serializers

from gpu_nodes.models import Node

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


class AvatarTrainSerializer(serializers.Serializer):
    node = serializers.SlugRelatedField(
        slug_field="name", queryset=Node.objects.filter(enabled=True), required=False, allow_null=True,
        help_text="Run on this node (default: one that holds the data, else any free one).",
    )  # fmt: skip
    iterations = serializers.IntegerField(required=False, allow_null=True, min_value=10, max_value=500_000)
    seconds = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=86400, help_text="Demo engine only: run time."
    )
