"""Thin Celery tasks for alerts: call one service, log."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from .delivery import notification_deliver, notifications_flush
from .evaluation import alerts_evaluate

logger = logging.getLogger(__name__)


@shared_task(name="alerts.evaluate")
def evaluate() -> int:
    """Beat, every minute: evaluate every active budget and every due alert rule."""
    summary = alerts_evaluate()
    if summary.errors:
        logger.warning("alert evaluation: %d error(s): %s", len(summary.errors), "; ".join(summary.errors))
    return summary.firing


@shared_task(name="alerts.evaluate_budgets")
def evaluate_budgets() -> int:
    """Right after writes (debounced): evaluate the budgets only."""
    return alerts_evaluate(budgets_only=True).firing


@shared_task(name="alerts.deliver_notification", bind=True)
def deliver_notification(self: Task, notification_id: int) -> str:
    """Deliver one outbox row (a no-op if it is not due or another worker has it).

    The task id is the claim's token: this message delivered again because its worker died
    mid-send (acks_late) takes over the claim that worker left, instead of waiting out the lease.
    """
    return notification_deliver(notification_id=notification_id, claim_token=self.request.id or "").status


@shared_task(name="alerts.notifications_flush", bind=True)
def flush_notifications(self: Task) -> dict[str, int]:
    """Beat, every minute: deliver whatever is due (retries, digests, anything the broker lost)."""
    counts = notifications_flush(claim_token=self.request.id or "")
    if counts:
        logger.info("notifications: %s", counts)
    return counts


@shared_task(name="alerts.daily_report_send")
def send_daily_report() -> int:
    """Beat, 07:00 in TIME_ZONE: yesterday's cost report to every channel that receives reports."""
    from .report_email import daily_report_send

    return daily_report_send()
