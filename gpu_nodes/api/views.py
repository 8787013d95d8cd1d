from django.db import transaction
from django.db.models import ProtectedError
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from core.errors import ServiceError

from ..models import Node
from ..selectors import gpus_present, nodes_with_gpus
from ..services import (
    node_confirm_host_key,
    node_drain,
    node_fetch_host_key,
    node_probe,
    node_register_local,
    node_register_ssh,
    node_resume,
    node_set_credentials,
    node_set_enabled,
    node_set_engines,
    node_update,
)
from .serializers import FingerprintSerializer, GpuSerializer, NodeSerializer

CREDENTIALS = ("password", "private_key", "key_passphrase")


class NodeViewSet(viewsets.ModelViewSet):
    """GPU nodes (staff only): register, change, probe, drain/resume, enable/disable, remove.

    An SSH node is registered with its host key fetched but not trusted: confirm its fingerprint with
    ``POST /api/nodes/<id>/confirm_host_key/`` before it takes jobs."""

    serializer_class = NodeSerializer
    permission_classes = [IsAdminUser]
    queryset = nodes_with_gpus()

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("enabled", None)
        engines = data.pop("engines", None)
        with transaction.atomic():  # a node whose engines are refused is not registered either
            if data.pop("kind", Node.Kind.LOCAL) == Node.Kind.SSH:
                node = node_register_ssh(**data)
            else:
                for field in (*CREDENTIALS, "host", "username", "jump"):
                    data.pop(field, None)
                node = node_register_local(**data)
            if engines is not None:
                node_set_engines(node=node, engines=engines)
        return Response(
            NodeSerializer(self.get_queryset().get(pk=node.pk)).data, status=status.HTTP_201_CREATED
        )

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        credentials = {key: data.pop(key) for key in CREDENTIALS if data.get(key)}
        engines = data.pop("engines", None)
        with transaction.atomic():
            node = node_update(node=serializer.instance, **data)
            if engines is not None:
                node_set_engines(node=node, engines=engines)
        if credentials:
            node = node_set_credentials(node=node, **credentials)
        serializer.instance = self.get_queryset().get(pk=node.pk)

    def perform_destroy(self, instance):
        try:
            instance.delete()
        except ProtectedError:
            raise ServiceError(
                f"Node {instance.name} has jobs on record, so it cannot be removed: disable it instead."
            ) from None

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def probe(self, request, pk=None):
        return Response(NodeSerializer(node_probe(node=self.get_object())).data)

    @extend_schema(request=FingerprintSerializer, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def confirm_host_key(self, request, pk=None):
        body = FingerprintSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        node = node_confirm_host_key(node=self.get_object(), fingerprint=body.validated_data["fingerprint"])
        return Response(NodeSerializer(node).data)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def fetch_host_key(self, request, pk=None):
        return Response(NodeSerializer(node_fetch_host_key(node=self.get_object())).data)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        return Response(NodeSerializer(node_drain(node=self.get_object())).data)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return Response(NodeSerializer(node_resume(node=self.get_object())).data)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        return Response(NodeSerializer(node_set_enabled(node=self.get_object(), enabled=True)).data)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        return Response(NodeSerializer(node_set_enabled(node=self.get_object(), enabled=False)).data)


class GpuViewSet(viewsets.ReadOnlyModelViewSet):
    """Every present GPU slot with its memory and utilization (any signed-in user)."""

    serializer_class = GpuSerializer
    queryset = gpus_present()
