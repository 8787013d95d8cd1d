from rest_framework import serializers

from ..models import Gpu, Node, NodeEngine


class GpuSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name", read_only=True)
    label = serializers.CharField(read_only=True)

    class Meta:
        model = Gpu
        fields = [
            "id", "node", "index", "label", "name", "memory_total_mb", "memory_used_mb", "utilization_pct",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class NodeEngineSerializer(serializers.ModelSerializer):
    """An engine the node can run; written as a list that replaces the node's (services.node_set_engines)."""

    engine = serializers.CharField(max_length=32)
    selftest_passed = serializers.BooleanField(read_only=True, allow_null=True)

    class Meta:
        model = NodeEngine
        fields = [
            "engine",
            "image",
            "install_dir",
            "environment",
            "selftest_passed",
            "selftest",
            "selftest_at",
        ]
        read_only_fields = ["selftest", "selftest_at"]
        validators = []  # (node, engine) uniqueness is checked by the service, which knows the node


class NodeSerializer(serializers.ModelSerializer):
    """Nodes for staff. Credentials are write-only: the API never returns them, encrypted or not."""

    gpus = GpuSerializer(many=True, read_only=True)
    engines = NodeEngineSerializer(many=True, required=False)
    jump = serializers.SlugRelatedField(
        slug_field="name", queryset=Node.objects.filter(kind=Node.Kind.SSH), required=False, allow_null=True
    )
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, style={"input_type": "password"}
    )
    private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )
    key_passphrase = serializers.CharField(write_only=True, required=False, allow_blank=True)
    host_key_confirmed = serializers.BooleanField(source="host_key_pinned", read_only=True)

    class Meta:
        model = Node
        fields = [
            "id", "name", "kind", "host", "port", "username", "password", "private_key", "key_passphrase",
            "jump", "workdir", "runtime", "docker_image", "environment", "enabled", "status", "last_seen_at",
            "last_error", "facts", "host_key_fingerprint", "host_key_confirmed", "created_at", "gpus",
            "engines",
        ]  # fmt: skip
        read_only_fields = [
            "status",
            "last_seen_at",
            "last_error",
            "facts",
            "host_key_fingerprint",
            "created_at",
        ]


class FingerprintSerializer(serializers.Serializer):
    fingerprint = serializers.CharField(help_text="The SHA256:… fingerprint you checked on the server.")
