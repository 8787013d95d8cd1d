from django.db.models import Prefetch, QuerySet

from .models import Gpu, Node


def nodes_with_gpus() -> QuerySet[Node]:
    """Nodes, their present slots and their engines in three queries. Everyone may see which nodes are
    online and their GPUs' load; connection settings are for staff only (serializers decide which
    fields go out)."""
    return Node.objects.prefetch_related(
        Prefetch("gpus", queryset=Gpu.objects.filter(present=True)), "engines"
    )


def gpus_present() -> QuerySet[Gpu]:
    return Gpu.objects.select_related("node").filter(present=True)
