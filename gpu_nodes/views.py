from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .selectors import nodes_with_gpus


@login_required
def node_list(request):
    return render(request, "gpu_nodes/node_list.html", {"nodes": nodes_with_gpus()})
