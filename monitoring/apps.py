from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """/metrics: django-prometheus's framework metrics and the business metrics read from the database."""

    name = "monitoring"
    verbose_name = "monitoring"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the deploy check
        from .metrics import register

        register()
