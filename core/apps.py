from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The shared kernel as an app, for its one model (Team) and its admin."""

    name = "core"
    verbose_name = "teams"
