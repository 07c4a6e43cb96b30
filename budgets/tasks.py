"""Thin Celery tasks for budgets: call one service, log."""

from __future__ import annotations

import logging

from celery import shared_task

from .services import budget_periods_advance, reservations_expire

logger = logging.getLogger(__name__)


@shared_task(name="budgets.periods_advance")
def periods_advance() -> int:
    """Open each active budget's current period (closing finished ones) and record peak levels."""
    count = budget_periods_advance()
    logger.info("advanced %d budget(s)", count)
    return count


@shared_task(name="budgets.reservations_expire")
def expire_reservations() -> int:
    """Release reservations that were never settled within their time to live."""
    released = reservations_expire()
    if released:
        logger.info("released %d expired reservation(s)", released)
    return released
