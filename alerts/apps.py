from __future__ import annotations

import logging
import threading
import time
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


_last_enqueued = 0.0
_lock = threading.Lock()


def _evaluate_budgets_soon(sender: Any, entries: Any, **kwargs: Any) -> None:
    """After a committed write: enqueue one budget evaluation, at most one per DEBOUNCE_SECONDS per
    process (a clock read, no I/O, on the record path), so a threshold crossed by this write is
    announced within seconds. The write never waits: the broker is asked once, without retries; if
    it is down, that is logged and the every-minute beat evaluation still runs."""
    global _last_enqueued
    now = time.monotonic()
    with _lock:
        if now - _last_enqueued < DEBOUNCE_SECONDS:
            return
        _last_enqueued = now
    from .tasks import evaluate_budgets

    try:
        evaluate_budgets.apply_async(countdown=1, retry=False)
    except Exception:
        logger.warning("could not enqueue the budget evaluation after a write", exc_info=True)
