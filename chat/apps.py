from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from jobs.reconcile import register_upkeep

        from . import job_kind, live

        job_kind.register_kind()
        register_upkeep(live.live_sessions_reconcile)
