"""`manage.py check --deploy`: /metrics should not be open to anyone who can reach the app."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register

from .views import allowed_networks


@register(Tags.security, deploy=True)
def metrics_protected(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    problems = []
    try:
        allowed_networks()
    except ValueError as exc:
        problems.append(Warning(f"METRICS_ALLOWED_IPS: {exc}", id="monitoring.W002"))
    if not settings.METRICS_BEARER_TOKEN and not settings.METRICS_ALLOWED_IPS:
        problems.append(
            Warning(
                "/metrics is open: anyone who can reach the app reads spend, budgets and model names.",
                hint="Set METRICS_BEARER_TOKEN (or METRICS_BEARER_TOKEN_FILE) and/or METRICS_ALLOWED_IPS.",
                id="monitoring.W001",
            )
        )
    return problems
