from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares (parameters, parsers, query helpers) and the operator's commands: backup and
    restore."""

    name = "core"
