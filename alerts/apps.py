from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger(__name__)

# At most one "evaluate budgets" task per this many seconds per process after writes.
DEBOUNCE_SECONDS = 10


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from tracking.models import CostEntry
        from tracking.signals import usage_recorded

        usage_recorded.connect(_evaluate_budgets_soon, sender=CostEntry, dispatch_uid="alerts.evaluate_budgets_soon")


def _evaluate_budgets_soon(sender: Any, entries: Any, **kwargs: Any) -> None:
    """After a committed write: enqueue one budget evaluation, debounced through the cache, so a
    threshold crossed by this write is announced within seconds. The write never waits: a broker
    that is down is logged, and the every-minute beat evaluation still runs."""
    from django.core.cache import cache

    from .tasks import evaluate_budgets

    try:
        if cache.add("alerts:evaluate-budgets", 1, timeout=DEBOUNCE_SECONDS):
            evaluate_budgets.apply_async(countdown=1)
    except Exception:
        logger.warning("could not enqueue the budget evaluation after a write", exc_info=True)
