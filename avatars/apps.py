from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"

    def ready(self) -> None:
        from gpu_nodes.engine_catalog import engines_register
        from jobs.stages import register_stage_labels

        from . import demo_kind, job_kinds
        from .engines.console import STAGE_LABELS
        from .engines.registry import ENGINES

        engines_register(ENGINES.values())
        register_stage_labels(STAGE_LABELS)
        for engine in ENGINES.values():
            register_stage_labels({task.stage: task.label for task in engine.preprocess_tasks if task.label})
        demo_kind.register_kind()
        job_kinds.register_kinds()
