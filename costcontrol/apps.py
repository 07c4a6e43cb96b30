from django.apps import AppConfig


class CostcontrolConfig(AppConfig):
    """The project package is also an app, for project-wide commands (bootstrap, setup_periodic_tasks)."""

    name = "costcontrol"
    verbose_name = "costcontrol"
