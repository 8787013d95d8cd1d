from rest_framework import serializers

from ..models import Gpu, Node


class GpuSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name", read_only=True)
    label = serializers.CharField(read_only=True)

    class Meta:
        model = Gpu
        fields = [
            "id",
            "node",
            "index",
            "label",
            "name",
            "memory_total_mb",
            "memory_used_mb",
            "utilization_pct",
            "updated_at",
        ]
        read_only_fields = fields


class NodeSerializer(serializers.ModelSerializer):
    gpus = GpuSerializer(many=True, read_only=True)

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "kind",
            "host",
            "port",
            "username",
            "workdir",
            "runtime",
            "docker_image",
            "environment",
            "enabled",
            "status",
            "last_seen_at",
            "last_error",
            "created_at",
            "gpus",
        ]
        read_only_fields = ["status", "last_seen_at", "last_error", "created_at", "gpus"]
