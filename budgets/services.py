"""The verbs that change budgets' state, one transaction each (keyword-only arguments).

Admission control (budget_reserve) holds under concurrency: it locks the period rows of the
hard-limit budgets involved (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the database write
lock every transaction takes at BEGIN, settings' IMMEDIATE mode), then checks
spent + reserved + amount <= limit and inserts the reservation before the lock is released.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from core.db import fetch_all_prepared
from core.money import format_money, parse_money, to_nanos
from core.periods import period_bounds

from .models import LEVEL_ORDER, Budget, BudgetPeriod, Period, Reservation, level_rank, scope_errors
from .selectors import (
    WINDOW_COLUMNS,
    BudgetStatus,
    budget_positions,
    budget_status_compute,
    carry_into,
    holdings_sql,
    period_limit,
    period_spent,
    periods_holdings,
    utilisation_percent,
    values_rows_sql,
    window_params,
)

logger = logging.getLogger(__name__)


class BudgetExceeded(Exception):
    """A hard-limit budget has no room for the amount asked. Names the budget and what is left."""

    def __init__(self, *, budget: Budget, available: Decimal, requested: Decimal) -> None:
        self.budget = budget
        self.available = available
        self.requested = requested
        super().__init__(
            f"budget {budget.name!r} ({budget.scope}) has {format_money(max(available, Decimal(0)), budget.currency)} "
            f"left this period; {format_money(requested, budget.currency)} requested"
        )


# --- periods ------------------------------------------------------------------------


def budget_period_close(*, period: BudgetPeriod, now: datetime | None = None) -> BudgetPeriod:
    """Freeze a period: its limit, what was spent (from rollups) and its peak level. Idempotent.

    A period that closes before its end (the budget's period kind was changed) counts spend up to now.
    """
    now = now or timezone.now()
    budget = period.budget
    with transaction.atomic():
        # Closed at or after its end: the whole period. Closed early (its kind changed): up to now.
        until = period.end if period.end is not None and period.end <= now else now
        spent = period_spent(budget=budget, start=period.start, end=until)
        limit = period_limit(budget=budget, period=period)
        level = budget.level_for(utilisation_percent(spent=spent, limit=limit), over=spent > limit)
        peak = level if level_rank(level) > level_rank(period.peak_level) else period.peak_level
        # Compare-and-swap: two closers (beat and a writer) freeze the period once.
        BudgetPeriod.objects.filter(pk=period.pk, closed_at__isnull=True).update(
            spent_at_close=spent, limit=limit, peak_level=peak or "", closed_at=now
        )
    period.refresh_from_db()
    return period


def budget_period_current(*, budget: Budget, at: datetime | None = None) -> BudgetPeriod:
    """The period holding `at`, opened on first use; earlier open periods are closed first."""
    at = at or timezone.now()
    start, end = period_bounds(budget.period, at)
    with transaction.atomic():
        current = BudgetPeriod.objects.filter(budget=budget, start=start).first()
        if current is not None:
            return current
        for stale in BudgetPeriod.objects.filter(budget=budget, closed_at__isnull=True, start__lt=start).order_by(
            "start"
        ):
            budget_period_close(period=stale, now=min(at, stale.end) if stale.end else at)
        carried = carry_into(budget=budget, start=start)
        current, _ = BudgetPeriod.objects.get_or_create(
            budget=budget,
            start=start,
            defaults={"end": end, "carried_over": carried, "limit": budget.amount + carried},
        )
        return current


def budget_periods_advance(*, now: datetime | None = None) -> int:
    """Beat: open every active budget's current period (closing finished ones) and record peak levels.

    Returns how many budgets were looked at. One failing budget is logged and skipped.
    """
    now = now or timezone.now()
    count = 0
    for budget in Budget.objects.filter(is_active=True).order_by("pk"):
        try:
            status = budget_status(budget=budget, at=now)
            rank = level_rank(status.level)
            if rank:
                lower = ["", *LEVEL_ORDER[: rank - 1]]
                BudgetPeriod.objects.filter(pk=status.period.pk, peak_level__in=lower).update(peak_level=status.level)
            count += 1
        except Exception:
            logger.exception("advancing budget %s failed; going on with the others", budget.pk)
    return count


# --- status and checks ----------------------------------------------------------------


def budget_status(*, budget: Budget, at: datetime | None = None) -> BudgetStatus:
    """Where a budget stands now (opening its current period if this is the first use)."""
    at = at or timezone.now()
    period = budget_period_current(budget=budget, at=at)
    return budget_status_compute(budget=budget, period=period, at=at)


def budget_check(*, scope: str, amount: Any = Decimal(0), at: datetime | None = None) -> list[BudgetStatus]:
    """Where every active budget of `scope` (and every global one) stands, and whether `amount` fits.

    `allowed` is False only for a hard-limit budget where spent + reserved + amount > limit. One SQL
    statement when the budgets' current periods are open (budget_positions); a period not opened
    yet is opened here, so a missed beat never blocks a reset.
    """
    if problems := scope_errors(scope):
        raise ValidationError({"scope": problems})
    amount = parse_money(amount, field="amount")
    if amount < 0:
        raise ValidationError({"amount": "must be zero or more"})
    at = at or timezone.now()
    results = []
    for position in budget_positions(scopes=(scope, "global"), at=at):
        budget = position.budget
        # A period not opened yet is opened here (budget_period_current), then read.
        period = position.period or budget_period_current(budget=budget, at=at)
        results.append(
            budget_status_compute(
                budget=budget,
                period=period,
                at=at,
                spent=position.spent if position.period is not None else None,
                reserved=position.reserved if position.period is not None else None,
                requested=amount,
            )
        )
    return results


# --- reservations ---------------------------------------------------------------------


def budget_reserve(*, scopes: Sequence[str], amount: Any, ttl: timedelta | None = None) -> list[Reservation]:
    """Hold `amount` on every active hard-limit budget of `scopes` (and the global ones), or on none.

    Raises BudgetExceeded naming the first budget without room. Returns the reservations (empty
    when no hard-limit budget applies). Settle each with reservation_settle once the cost is known.
    """
    for scope in scopes:
        if problems := scope_errors(scope):
            raise ValidationError({"scopes": problems})
    amount = parse_money(amount, field="amount")
    if amount < 0:
        raise ValidationError({"amount": "must be zero or more"})
    ttl = ttl if ttl is not None else timedelta(seconds=settings.BUDGET_RESERVATION_TTL_SECONDS)
    if ttl <= timedelta(0):
        raise ValidationError({"ttl": "must be positive"})
    now = timezone.now()
    with transaction.atomic():
        # 1. Lock the budgets involved (primary-key order: concurrent reservers never deadlock).
        positions = budget_positions(scopes={*scopes, "global"}, at=now, hard_only=True, with_sums=False, lock=True)
        if not positions:
            return []
        periods = [p.period or budget_period_current(budget=p.budget, at=now) for p in positions]
        # 2. Only now check and hold, in one statement: it sees every commit made before the lock.
        held = reservations_hold(positions=positions, periods=periods, amount=amount, at=now, expires_at=now + ttl)
        if held is None:
            holdings = periods_holdings(periods=periods, at=now)
            room = [
                (period_limit(budget=p.budget, period=period) - holdings[period.pk][0] - holdings[period.pk][1], p)
                for p, period in zip(positions, periods, strict=True)
            ]
            available, position = min(room, key=lambda item: item[0])
            raise BudgetExceeded(budget=position.budget, available=available, requested=amount)
        return held


def reservations_hold(
    *,
    positions: Sequence[Any],
    periods: Sequence[BudgetPeriod],
    amount: Decimal,
    at: datetime,
    expires_at: datetime,
) -> list[Reservation] | None:
    """Hold `amount` on every period if each has room (limit - spent - reserved >= amount), or on
    none (None): the check and the insert are one statement. Called by budget_reserve with the
    budgets locked."""
    qn = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    spent_sql, reserved_sql = holdings_sql(connection)
    params: list[Any] = []
    for period in periods:
        params += [period.pk, *window_params(connection, start=period.start, at=at)]
    nanos = to_nanos(amount)
    params += [adapt(at), nanos, adapt(at), adapt(expires_at), nanos]
    sql = (
        f"WITH k(id, {WINDOW_COLUMNS}) AS (VALUES {values_rows_sql(7, len(periods))}),"
        f" h AS (SELECT p.id AS period_id, p.budget_id AS budget_id,"
        f"  CASE WHEN p.closed_at IS NULL THEN b.amount + p.carried_over ELSE p.{qn('limit')} END"
        f"  - {spent_sql} - {reserved_sql} AS available"
        f"  FROM k JOIN {qn(BudgetPeriod._meta.db_table)} p ON p.id = k.id"
        f"  JOIN {qn(Budget._meta.db_table)} b ON b.id = p.budget_id)"
        f" INSERT INTO {qn(Reservation._meta.db_table)} (budget_id, period_id, amount, created_at, expires_at)"
        f" SELECT budget_id, period_id, %s, %s, %s FROM h"
        f" WHERE NOT EXISTS (SELECT 1 FROM h WHERE available < %s)"
        f" RETURNING id, period_id"
    )
    ids = {period_id: pk for pk, period_id in fetch_all_prepared(sql, params)}
    if not ids:
        return None
    held = []
    for position, period in zip(positions, periods, strict=True):
        reservation = Reservation(
            id=ids[period.pk],
            budget=position.budget,
            period=period,
            amount=amount,
            created_at=at,
            expires_at=expires_at,
        )
        reservation._state.adding, reservation._state.db = False, connection.alias
        held.append(reservation)
    return held


def reservation_settle(*, reservation: Reservation, actual: Any) -> Reservation:
    """Mark a reservation settled: its amount stops counting as reserved. Records nothing in the ledger.

    The caller records the real cost with tracking's cost_entry_record. To hand the hold over to the
    ledger without a moment where neither counts, do both in one transaction:
    ``with transaction.atomic(): cost_entry_record(...); reservation_settle(...)``. A concurrent
    budget_reserve reads spent and reserved in one statement, so it sees both changes or neither:
    never the reservation released before its cost is in the rollups.
    """
    actual = parse_money(actual, field="actual")
    if actual < 0:
        raise ValidationError({"actual": "must be zero or more"})
    now = timezone.now()
    sql = (
        f"UPDATE {connection.ops.quote_name(Reservation._meta.db_table)} SET settled_at = %s, actual = %s"
        f" WHERE id = %s AND settled_at IS NULL RETURNING id"
    )
    if not fetch_all_prepared(sql, [connection.ops.adapt_datetimefield_value(now), to_nanos(actual), reservation.pk]):
        raise ValidationError({"reservation": f"reservation #{reservation.pk} is already settled"})
    reservation.settled_at, reservation.actual = now, actual
    return reservation


def reservation_release(*, reservation: Reservation) -> Reservation:
    """Release a reservation whose work did not happen: its amount stops counting as reserved."""
    now = timezone.now()
    changed = Reservation.objects.filter(pk=reservation.pk, settled_at__isnull=True, released_at__isnull=True).update(
        released_at=now
    )
    if not changed:
        raise ValidationError({"reservation": f"reservation #{reservation.pk} is already settled or released"})
    reservation.released_at = now
    return reservation


def reservations_expire(*, now: datetime | None = None) -> int:
    """Release reservations past their expiry that were never settled. Returns how many."""
    now = now or timezone.now()
    with transaction.atomic():
        return Reservation.objects.filter(
            settled_at__isnull=True, released_at__isnull=True, expires_at__lte=now
        ).update(released_at=now)


# --- defaults -------------------------------------------------------------------------


@dataclass(frozen=True)
class DefaultsResult:
    budget: Budget | None
    created: bool


def budget_defaults_ensure() -> DefaultsResult:
    """The seeds' default: a global monthly budget of MONTHLY_BUDGET, if no budget exists at all."""
    with transaction.atomic():
        if Budget.objects.exists():
            return DefaultsResult(budget=None, created=False)
        budget = Budget(
            name="Global monthly",
            scope="global",
            amount=parse_money(settings.MONTHLY_BUDGET, field="MONTHLY_BUDGET"),
            currency="USD",
            period=Period.MONTHLY,
        )
        budget.full_clean()
        budget.save()
        return DefaultsResult(budget=budget, created=True)
