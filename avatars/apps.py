from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"

    def ready(self) -> None:
        from . import job_kinds

        job_kinds.register_kinds()
