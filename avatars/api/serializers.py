from rest_framework import serializers

from core.params import DEMO_SECONDS, TRAIN_ITERATIONS
from gpu_nodes.models import Node

from ..engines.registry import DEFAULT_ENGINE, engine_choices
from ..models import Avatar, Checkpoint, DatasetCopy, Evaluation


class DatasetSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")

    class Meta:
        model = DatasetCopy
        fields = ["node", "path", "complete", "stages", "updated_at"]
        read_only_fields = fields


class EvaluationSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = [
            "run", "iteration", "checkpoint", "psnr", "ssim", "lpips", "frames", "rendered_frames",
            "reference_frames", "notes", "job", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class EvaluationSerializer(EvaluationSummarySerializer):
    """With the per-frame series ({"img_id": [...], "psnr": [...], "ssim": [...]})."""

    class Meta(EvaluationSummarySerializer.Meta):
        fields = [*EvaluationSummarySerializer.Meta.fields, "per_frame"]
        read_only_fields = fields


class CheckpointSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")

    class Meta:
        model = Checkpoint
        fields = ["id", "run", "node", "stage", "iteration", "path", "size_bytes", "created_at"]
        read_only_fields = fields


class AvatarSerializer(serializers.ModelSerializer):
    video_url = serializers.SerializerMethodField()
    preferred_node = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    datasets = DatasetSerializer(many=True, read_only=True)
    evaluations = EvaluationSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Avatar
        fields = [
            "id", "name", "slug", "engine", "status", "training_settings", "video_info", "quality",
            "quality_override_at", "consent_given_at", "consent_statement", "created_at", "video_url",
            "preferred_node", "datasets", "evaluations",
        ]  # fmt: skip
        read_only_fields = fields

    def get_video_url(self, avatar) -> str:
        return f"/avatars/{avatar.pk}/media/video/"


class AvatarCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    engine = serializers.ChoiceField(choices=engine_choices(), default=DEFAULT_ENGINE)
    video = serializers.FileField()
    au_csv = serializers.FileField(required=False, allow_null=True)
    preferred_node = serializers.SlugRelatedField(
        slug_field="name", queryset=Node.objects.filter(enabled=True), required=False, allow_null=True,
        help_text="Where preprocessing goes first (a node's name); later steps follow the data.",
    )  # fmt: skip
    consent = serializers.BooleanField(
        help_text="true: the person shown agreed that their likeness is trained (see consent_statement)."
    )
    trim_start = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="Keep the clip from this second on."
    )
    trim_end = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="Keep the clip up to this second."
    )


class AvatarTrainSerializer(serializers.Serializer):
    node = serializers.SlugRelatedField(
        slug_field="name", queryset=Node.objects.filter(enabled=True), required=False, allow_null=True,
        help_text="Run on this node (default: one that holds the data, else any free one).",
    )  # fmt: skip
    iterations = TRAIN_ITERATIONS.serializer_field(required=False, allow_null=True)
    seconds = DEMO_SECONDS.serializer_field(
        required=False, allow_null=True, help_text="Demo engine only: run time in seconds."
    )


class AvatarEvaluateSerializer(serializers.Serializer):
    checkpoint = serializers.IntegerField(
        help_text="The id of one of this avatar's checkpoints that can render (GaussianTalker: fine-stage)."
    )
