from django.apps import AppConfig


class VideosConfig(AppConfig):
    name = "videos"

    def ready(self) -> None:
        from accounts.deletion import AccountEraser, register_eraser
        from accounts.quotas import register_storage_counter

        from . import job_kind, selectors, services, signals  # noqa: F401 - signals connect on import

        job_kind.register_kind()
        register_storage_counter("videos", selectors.videos_storage_bytes)
        register_eraser(AccountEraser(name="videos", collect=services.videos_collect_erasure))
