from django.apps import AppConfig


class GpuNodesConfig(AppConfig):
    name = "gpu_nodes"
    verbose_name = "GPU nodes"
