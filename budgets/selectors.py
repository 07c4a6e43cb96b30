"""Reads about budgets shared by services, the command, the admin, reports and metrics.

Spend comes from tracking's hourly rollups (spend_total), never from the ledger, so a status
costs the same with ten thousand or ten million ledger rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from django.db.models import Q, Sum

from costcontrol.money import MONEY_QUANTUM, round_money
from tracking.selectors import spend_total

from .models import Budget, BudgetPeriod, Reservation

ZERO = Decimal(0).quantize(MONEY_QUANTUM)
_PERCENT = Decimal("0.01")
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    period: BudgetPeriod
    at: datetime
    spent: Decimal
    limit: Decimal
    remaining: Decimal
    utilisation: Decimal | None  # percent of the limit; None when the limit is zero
    level: str | None
    reserved: Decimal
    days_left: int | None  # whole or part days until the period ends; None for lifetime
    forecast: Decimal | None  # projected spend at period end; None for lifetime
    projected_exceed_at: datetime | None
    allowed: bool = True  # budget_check's answer for the amount asked about
    requested: Decimal = ZERO

    @property
    def currency(self) -> str:
        return self.budget.currency

    @property
    def available(self) -> Decimal:
        """What a new reservation may still take: limit - spent - reserved."""
        return self.limit - self.spent - self.reserved


def spend_window_end(*, period: BudgetPeriod, at: datetime) -> datetime:
    """The end of the rollup window for "spent so far at `at`": the whole current hour is included
    (rollups are hourly, so an event at 12:00:00 sits in the bucket that starts at `at`), capped at the
    period's end."""
    end = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return min(end, period.end) if period.end is not None else end


def period_spent(*, budget: Budget, start: datetime, end: datetime) -> Decimal:
    return spend_total(scope=budget.scope, start=start, end=end, currency=budget.currency)


def reserved_total(*, period: BudgetPeriod, at: datetime) -> Decimal:
    """Amount held by reservations of a period that are neither settled, released nor expired at `at`."""
    total = (
        Reservation.objects.filter(period=period, settled_at__isnull=True, released_at__isnull=True)
        .filter(Q(expires_at__gt=at))
        .aggregate(total=Sum("amount"))["total"]
    )
    return total if total is not None else ZERO


def period_limit(*, budget: Budget, period: BudgetPeriod) -> Decimal:
    """The limit in force: a closed period keeps its frozen limit; an open one follows the budget's amount."""
    if period.closed_at is not None:
        return period.limit
    return budget.amount + period.carried_over


def utilisation_percent(*, spent: Decimal, limit: Decimal) -> Decimal | None:
    if limit <= 0:
        return None
    return (spent * 100 / limit).quantize(_PERCENT, rounding=ROUND_HALF_EVEN)


def budget_status_compute(*, budget: Budget, period: BudgetPeriod, at: datetime) -> BudgetStatus:
    """Where a budget stands at `at` in the given (open) period. Reads only; see services.budget_status."""
    spent = period_spent(budget=budget, start=period.start, end=spend_window_end(period=period, at=at))
    limit = period_limit(budget=budget, period=period)
    utilisation = utilisation_percent(spent=spent, limit=limit)
    level = budget.level_for(utilisation, over=spent > limit)
    forecast: Decimal | None = None
    projected: datetime | None = None
    days_left: int | None = None
    if period.end is not None:
        days_left = max(0, math.ceil((period.end - at) / timedelta(days=1)))
        elapsed = (at - period.start) // _MICROSECOND
        total = (period.end - period.start) // _MICROSECOND
        if elapsed <= 0:
            forecast = spent
        else:
            # Linear run-rate over the elapsed part of the period.
            forecast = round_money(spent * total / elapsed) if elapsed < total else spent
            if spent > 0 and spent < limit:
                crossing = period.start + _MICROSECOND * int(limit * elapsed / spent)
                projected = crossing if crossing < period.end else None
    return BudgetStatus(
        budget=budget,
        period=period,
        at=at,
        spent=spent,
        limit=limit,
        remaining=limit - spent,
        utilisation=utilisation,
        level=level,
        reserved=reserved_total(period=period, at=at),
        days_left=days_left,
        forecast=forecast,
        projected_exceed_at=projected,
    )


def forecast_thresholds_crossed(status: BudgetStatus) -> list[int | float | str]:
    """The budget's thresholds that the forecast at period end reaches (for forecast alerts)."""
    if status.forecast is None or not status.budget.forecast_alerts:
        return []
    utilisation = utilisation_percent(spent=status.forecast, limit=status.limit)
    if utilisation is None:
        return list(status.budget.thresholds) if status.forecast > 0 else []
    return [t for t in status.budget.thresholds if utilisation >= Decimal(str(t))]


def budgets_for_scope(scope: str) -> list[Budget]:
    """Active budgets of a scope, and the global ones (which every event counts towards)."""
    return list(Budget.objects.filter(is_active=True, scope__in={scope, "global"}).order_by("pk"))


def budget_period_history(budget: Budget) -> list[BudgetPeriod]:
    return list(budget.periods.order_by("-start"))
