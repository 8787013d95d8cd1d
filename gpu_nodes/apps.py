from django.apps import AppConfig


class GpuNodesConfig(AppConfig):
    name = "gpu_nodes"
    verbose_name = "GPU nodes"

    def ready(self) -> None:
        from accounts.deletion import register_collector

        from .erasure import Erasure

        register_collector(Erasure)  # an account's files: media and folders on the nodes
