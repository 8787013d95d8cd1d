from rest_framework import serializers

from gpu_nodes.models import Node

from ..kinds import KINDS
from ..models import Job


class JobSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, default=None)
    gpu = serializers.CharField(source="gpu.label", read_only=True, default=None)

    class Meta:
        model = Job
        fields = [
            "id", "kind", "owner", "status", "stage", "progress", "eta_seconds", "metrics", "params",
            "result", "error", "node", "gpu", "attempts", "max_attempts", "timeout_seconds", "parent",
            "avatar",
            "log_line_count",
            "created_at", "placed_at", "started_at", "finished_at", "heartbeat_at", "cancel_requested_at",
        ]  # fmt: skip
        read_only_fields = fields


class JobSubmitSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=list(KINDS))
    params = serializers.DictField(required=False, default=dict)
    timeout_seconds = serializers.IntegerField(
        required=False, allow_null=True, help_text="Stop the job after this many seconds of running."
    )
    node = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Node.objects.all(),
        required=False,
        allow_null=True,
        help_text="Run on this node only (default: any node with a free slot).",
    )


class JobLogSerializer(serializers.Serializer):
    first = serializers.IntegerField()
    lines = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False))
    total = serializers.IntegerField()
