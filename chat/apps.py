from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from . import job_kind, speakers

        job_kind.register_kind()
        speakers.register()
