from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"

    def ready(self) -> None:
        from gpu_nodes.engine_catalog import engines_register

        from . import demo_kind, job_kinds
        from .engines.registry import ENGINES

        engines_register(ENGINES.values())
        demo_kind.register_kind()
        job_kinds.register_kinds()
