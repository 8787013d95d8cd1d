from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"

    def ready(self) -> None:
        from accounts.deletion import AccountEraser, register_eraser
        from accounts.quotas import register_storage_counter
        from gpu_nodes.engine_catalog import engines_register
        from jobs.stages import register_stage_labels

        from . import demo_kind, job_kinds, selectors, services
        from .engines.console import STAGE_LABELS
        from .engines.registry import ENGINES

        engines_register(ENGINES.values())
        register_stage_labels(STAGE_LABELS)
        for engine in ENGINES.values():
            register_stage_labels({task.stage: task.label for task in engine.preprocess_tasks if task.label})
        demo_kind.register_kind()
        job_kinds.register_kinds()
        register_storage_counter("avatars", selectors.avatars_storage_bytes)
        register_eraser(
            AccountEraser(
                name="avatars",
                collect=services.avatars_collect_erasure,
                # The avatars name the person as the consent giver (PROTECT): they go before the person.
                delete=lambda user: user.avatars.all().delete(),
            )
        )
