from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from accounts.deletion import AccountEraser, register_eraser
        from accounts.quotas import register_storage_counter
        from jobs.reconcile import register_upkeep

        from . import job_kind, live, selectors, services, speakers

        job_kind.register_kind()
        register_upkeep(live.live_sessions_reconcile)
        speakers.register()
        register_storage_counter("chat", selectors.chat_storage_bytes)
        register_eraser(
            AccountEraser(
                name="chat",
                collect=services.chat_collect_erasure,
                # The voices name the person as the consent giver (PROTECT): they go before the person.
                delete=lambda user: user.voices.all().delete(),
            )
        )
