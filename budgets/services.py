"""The verbs that change budgets' state, one transaction each (keyword-only arguments).

Admission control (budget_reserve) holds under concurrency: it locks the period rows of the
hard-limit budgets involved (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the database write
lock every transaction takes at BEGIN, settings' IMMEDIATE mode), then checks
spent + reserved + amount <= limit and inserts the reservation before the lock is released.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.money import format_money, parse_money
from core.scopes import scope_errors
from tracking.selectors import spend_total, spend_totals, usage_quote

from .levels import LEVEL_ORDER, budget_level, level_rank
from .models import Budget, BudgetPeriod, Period, Reservation
from .selectors import BudgetStatus, budget_billed, budget_statuses, utilisation_percent
from .templates import budgets_of

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
        spent = spend_total(scope=budget.scope, start=period.start, end=until, currency=budget.currency)
        spent += budget_billed(budget, period.start, until)
        limit = period.limit if period.closed_at is not None else budget.amount + period.carried_over
        level = budget_level(utilisation_percent(spent=spent, limit=limit), budget.thresholds, over=spent > limit)
        peak = level if level_rank(level) > level_rank(period.peak_level) else period.peak_level
        # Compare-and-swap: two closers (beat and a writer) freeze the period once.
        BudgetPeriod.objects.filter(pk=period.pk, closed_at__isnull=True).update(
            spent_at_close=spent, limit=limit, peak_level=peak or "", closed_at=now
        )
    period.refresh_from_db()
    return period


def budget_periods_open(*, statuses: Sequence[BudgetStatus]) -> list[BudgetStatus]:
    """The statuses with each period saved: a period shown as it would open (budget_statuses) is opened
    as shown, its carry included, after closing the budget's earlier open periods. One transaction;
    two openers of the same period open it once."""
    missing = [s for s in statuses if s.period.pk is None]
    if not missing:
        return list(statuses)
    with transaction.atomic():
        budgets = {s.budget.pk: s.budget for s in missing}
        starts = {s.budget.pk: s.period.start for s in missing}
        stale = BudgetPeriod.objects.filter(budget__in=list(budgets), closed_at__isnull=True).order_by("start")
        for period in stale:
            if period.start < starts[period.budget_id]:
                period.budget = budgets[period.budget_id]
                budget_period_close(period=period, now=min(missing[0].at, period.end) if period.end else missing[0].at)
        BudgetPeriod.objects.bulk_create(
            [
                BudgetPeriod(
                    budget=s.budget,
                    start=s.period.start,
                    end=s.period.end,
                    carried_over=s.period.carried_over,
                    limit=s.period.limit,
                )
                for s in missing
            ],
            ignore_conflicts=True,  # opened meanwhile by another process: theirs is the same period
        )
        opened = {
            (p.budget_id, p.start): p
            for p in BudgetPeriod.objects.filter(budget__in=list(budgets), start__in=set(starts.values()))
        }
    found = []
    for status in statuses:
        if status.period.pk is None:
            period = opened[(status.budget.pk, status.period.start)]
            period.budget = status.budget
            status = replace(status, period=period)
        found.append(status)
    return found


def budget_period_current(*, budget: Budget, at: datetime | None = None) -> BudgetPeriod:
    """The period holding `at`, opened on first use; earlier open periods are closed first."""
    [status] = budget_periods_open(statuses=budget_statuses([budget], at=at))
    return status.period


def budget_periods_advance(*, now: datetime | None = None) -> int:
    """Beat: open every active plain budget's current period (closing finished ones), record peak
    levels, and close the finished periods of templates' values in batches (a value's next period
    opens when it is next used: budget_value_periods_close). Returns how many budgets were looked at."""
    statuses = budget_periods_open(statuses=budget_statuses(Budget.objects.plain().filter(is_active=True), at=now))
    for status in statuses:
        if rank := level_rank(status.level):
            lower = ["", *LEVEL_ORDER[: rank - 1]]
            BudgetPeriod.objects.filter(pk=status.period.pk, peak_level__in=lower).update(peak_level=status.level)
    return len(statuses) + budget_value_periods_close(now=now)


PERIODS_CHUNK = 5000  # value periods closed per transaction


def budget_value_periods_close(*, now: datetime | None = None, chunk: int = PERIODS_CHUNK) -> int:
    """Close every finished period of the templates' values, `chunk` at a time, each chunk in its own
    transaction: what each spent (the rollups of its window, read for the whole chunk by
    tracking.selectors.spend_totals), its limit and its level at the end, frozen as
    budget_period_close freezes one. Stopped half-way (a worker lost), the next run goes on where it
    stopped: an open period whose end has passed is all it looks for. Returns how many it closed."""
    now = now or timezone.now()
    closed = 0
    fields = ("pk", "start", "end", "carried_over", "peak_level")
    fields += ("budget__scope", "budget__currency", "budget__amount", "budget__thresholds")
    while True:
        with transaction.atomic():
            rows = list(
                BudgetPeriod.objects.filter(closed_at__isnull=True, end__lte=now, budget__template__isnull=False)
                .order_by("pk")
                .values_list(*fields)[:chunk]
            )
            if not rows:
                return closed
            spent = spend_totals([(scope, currency, start, end) for _, start, end, _, _, scope, currency, *_ in rows])
            frozen = []
            for (pk, _, _, carried, peak, _, _, amount, thresholds), total in zip(rows, spent, strict=True):
                limit = amount + carried
                level = budget_level(utilisation_percent(spent=total, limit=limit), thresholds, over=total > limit)
                frozen.append((pk, total, limit, level if level_rank(level) > level_rank(peak) else peak))
            _periods_freeze(frozen, now=now)
            closed += len(rows)


def _periods_freeze(frozen: Sequence[tuple[int, Decimal, Decimal, str]], *, now: datetime) -> None:
    """Close the open periods (pk, spent, limit, peak level) given: one UPDATE ... FROM (VALUES ...) per
    1,000 (SQLite 3.33+ and PostgreSQL). `make bench` (budget_templates): 4.4x the rows/s of Django's
    bulk_update, whose CASE WHEN per row and column is built in Python."""
    connection = transaction.get_connection()
    table = connection.ops.quote_name(BudgetPeriod._meta.db_table)
    money = BudgetPeriod._meta.get_field("limit")
    closed_at = BudgetPeriod._meta.get_field("closed_at").get_db_prep_save(now, connection)
    with connection.cursor() as cursor:
        for start in range(0, len(frozen), 1000):
            part = frozen[start : start + 1000]
            params: list[Any] = [closed_at]
            for pk, spent, limit, peak in part:
                params += [pk, money.get_db_prep_save(spent, connection), money.get_db_prep_save(limit, connection)]
                params.append(peak or "")
            values = ", ".join(["(%s, %s, %s, %s)"] * len(part))
            cursor.execute(
                f'UPDATE {table} SET spent_at_close = v.column2, "limit" = v.column3, peak_level = v.column4, '
                f"closed_at = %s FROM (VALUES {values}) AS v WHERE {table}.id = v.column1 AND {table}.closed_at IS NULL",
                params,
            )


# --- reservations ---------------------------------------------------------------------


def budget_reserve(
    *, scopes: Sequence[str], amount: Any, ttl: timedelta | None = None, service: str = ""
) -> list[Reservation]:
    """Hold `amount` on every active hard-limit budget of `scopes` and of the scopes that enclose them
    (global, and a team's whole spend for a team's scope: core.scopes.enclosing_scopes), or on none.

    `service` owns the reservations (the API key's service): only it may settle or release them.

    Raises BudgetExceeded naming the budget with the least room. Returns the reservations (empty
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
    if not settings.ENABLE_COST_MONITORING:
        return []  # monitoring off: no budget is checked, nothing is held
    now = timezone.now()
    with transaction.atomic():
        # 1. Lock the budgets involved, in primary-key order (concurrent reservers never deadlock); on
        #    SQLite the write lock taken at BEGIN (IMMEDIATE) already serialises writers.
        budgets = budgets_of(scopes=scopes, is_active=True, hard_limit=True)
        budgets = list(Budget.objects.select_for_update().filter(pk__in=[b.pk for b in budgets]).order_by("pk"))
        if not budgets:
            return []
        # 2. Only now read where they stand: every reservation committed before the lock is seen.
        statuses = budget_periods_open(statuses=budget_statuses(budgets, at=now, requested=amount))
        if blocked := [s for s in statuses if not s.allowed]:
            tightest = min(blocked, key=lambda s: s.available)
            raise BudgetExceeded(budget=tightest.budget, available=tightest.available, requested=amount)
        return Reservation.objects.bulk_create(
            Reservation(
                budget=s.budget, period=s.period, amount=amount, created_at=now, expires_at=now + ttl, service=service
            )
            for s in statuses
        )


def reservation_settle(
    *, reservation: Reservation, actual: Any = None, usage: Mapping[str, Any] | None = None
) -> Reservation:
    """Mark a reservation settled: its amount stops counting as reserved. Records nothing in the ledger.

    The real cost is either `actual` (an amount) or `usage` (the call's usage: provider, model,
    quantities, service tier, ...), which is priced now with the price the record path would use
    (tracking.selectors.usage_quote); exactly one of the two. A usage the catalog does not price
    is refused, naming the missing rule: a reservation is never settled at a silent 0.

    The caller records the real cost with tracking's cost_entry_record. To hand the hold over to the
    ledger without a moment where neither counts, do both in one transaction:
    ``with transaction.atomic(): cost_entry_record(...); reservation_settle(...)``. A concurrent
    budget_reserve reads spent and reserved in one statement, so it sees both changes or neither:
    never the reservation released before its cost is in the rollups.
    """
    if (actual is None) == (usage is None):
        raise ValidationError({"actual": "give either the amount (actual) or the call's usage (usage), not both"})
    if usage is not None:
        actual = _usage_amount(usage, currency=reservation.budget.currency)
    actual = parse_money(actual, field="actual")
    if actual < 0:
        raise ValidationError({"actual": "must be zero or more"})
    now = timezone.now()
    # A released reservation (by its caller, or by the expiry sweep) no longer holds anything: the
    # work it was for was given up, so settling it would report a cost nobody held room for.
    held = Reservation.objects.filter(pk=reservation.pk, settled_at__isnull=True, released_at__isnull=True)
    if not held.update(settled_at=now, actual=actual):
        state = Reservation.objects.get(pk=reservation.pk).status_at(now)
        raise ValidationError({"reservation": f"reservation #{reservation.pk} is already {state}"})
    reservation.settled_at, reservation.actual = now, actual
    return reservation


def _usage_amount(usage: Mapping[str, Any], *, currency: str) -> Decimal:
    """What a usage costs now, in the budget's currency; errors name the field as usage.<field>."""
    try:
        quote = usage_quote(usage)
    except ValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"usage": exc.messages}
        raise ValidationError(
            {(name if name == "usage" else f"usage.{name}"): messages for name, messages in errors.items()}
        ) from None
    if quote.currency != currency:
        raise ValidationError({"usage": f"is priced in {quote.currency}; the budget counts {currency}"})
    return quote.amount


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
    budget: Budget | None  # the global monthly budget, when created by this call
    created: bool
    daily_template: Budget | None = None  # "Daily per end user", when created by this call


DAILY_TEMPLATE_SCOPE = "subject:*"


def _setting_amount(name: str) -> Decimal | None:
    """The amount in setting `name` (None when unset or empty); a bad value is a ValidationError naming it."""
    value = getattr(settings, name)
    if value is None or value == "":
        return None
    amount = parse_money(value, field=name)
    if amount < 0:
        raise ValidationError({name: f"{value} must be zero or more"})
    return amount


def _default_budget_create(**fields: Any) -> Budget:
    budget = Budget(currency="USD", **fields)
    budget.full_clean()
    budget.save()
    return budget


def budget_defaults_ensure() -> DefaultsResult:
    """The seeds' default budgets, created once (what the admin changes afterwards is kept):

    - a global monthly budget of MONTHLY_BUDGET, if no budget exists at all;
    - when DEFAULT_DAILY_BUDGET is set, the template "Daily per end user" (subject:*, daily: each end user
      gets a budget of that amount of their own on first use), if no subject:* template exists, active or not.

    Both settings are read before anything is written: a bad value changes nothing.
    """
    monthly = _setting_amount("MONTHLY_BUDGET")
    daily = _setting_amount("DEFAULT_DAILY_BUDGET")
    budget = template = None
    with transaction.atomic():
        if monthly is not None and not Budget.objects.exists():
            budget = _default_budget_create(
                name="Global monthly", scope="global", amount=monthly, period=Period.MONTHLY
            )
        if daily is not None and not Budget.objects.filter(scope=DAILY_TEMPLATE_SCOPE, template__isnull=True).exists():
            template = _default_budget_create(
                name="Daily per end user", scope=DAILY_TEMPLATE_SCOPE, amount=daily, period=Period.DAILY
            )
    return DefaultsResult(budget=budget, created=budget is not None, daily_template=template)
