from django.apps import AppConfig


class VideosConfig(AppConfig):
    name = "videos"

    def ready(self) -> None:
        from . import job_kind, signals  # noqa: F401 - signals connect on import

        job_kind.register_kind()
