from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "talkforge.observability"
    label = "observability"
    verbose_name = "Health and metrics"

    def ready(self):
        # Here rather than in settings (which have no side effects): every process that sets Django up —
        # daphne, workers, housekeeping, management commands — reports its errors.
        from .sentry import sentry_init

        sentry_init()
