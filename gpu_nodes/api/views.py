from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from ..selectors import gpus_present, nodes_with_gpus
from ..services import node_drain, node_probe, node_set_enabled
from .serializers import GpuSerializer, NodeSerializer


class NodeViewSet(viewsets.ModelViewSet):
    """GPU nodes (staff only): register, change, probe, drain, enable/disable, remove."""

    serializer_class = NodeSerializer
    permission_classes = [IsAdminUser]
    queryset = nodes_with_gpus()

    def perform_create(self, serializer):
        node = serializer.save()
        node_probe(node=node)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def probe(self, request, pk=None):
        return Response(NodeSerializer(node_probe(node=self.get_object())).data)

    @extend_schema(request=None, responses=NodeSerializer)
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        return Response(NodeSerializer(node_drain(node=self.get_object())).data)

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
