from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from accounts.deletion import AccountEraser, register_eraser
        from accounts.quotas import register_job_counter, register_storage_counter

        from . import selectors, services

        register_job_counter("jobs", selectors.jobs_usage)
        register_storage_counter("jobs", selectors.jobs_storage_bytes)

        register_eraser(
            AccountEraser(
                name="jobs", refuse=services.jobs_refuse_erasure, collect=services.jobs_collect_erasure
            )
        )
