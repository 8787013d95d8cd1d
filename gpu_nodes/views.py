from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .engine_catalog import engine_label
from .node_engines import engines_of
from .selectors import nodes_with_gpus


@login_required
def node_list(request):
    nodes = list(nodes_with_gpus())
    for node in nodes:
        node.engine_labels = [engine_label(name) for name in engines_of(node)]
    return render(request, "gpu_nodes/node_list.html", {"nodes": nodes})
