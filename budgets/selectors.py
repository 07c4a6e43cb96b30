"""Where budgets stand: the one status selector that every screen, command, API, metric and alert reads.

`budget_statuses(budgets, at=...)` computes the status of any number of budgets (one budget is a list
of one), writing nothing: spend and reservations of every budget's current period in one statement (the
rollups, never the ledger: the same cost with ten thousand or ten million ledger rows), the periods in a
second, and with `forecasts=True` every forecast from two more (budgets.forecast). A period not opened
yet is shown as it would open (its carry from the last closed period included); the beat task and the
first reservation open it for real.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import Count, DateTimeField, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.utils import timezone

from core.money import ZERO, MoneyField, from_nanos, parse_money, plain_money, to_nanos
from core.periods import hour_floor, period_bounds
from core.scopes import scope_errors
from tracking.models import SpendRollup
from tracking.selectors import RollupWindow, billed_adjustment, rollup_window, spend_total, window_spend

from .forecast import Forecast, Question, spend_forecasts
from .levels import Level, budget_level, forecast_label, level_label
from .models import Budget, BudgetPeriod, Period, Reservation
from .templates import VALUES_CHUNK, budgets_of, template_values_spent

_PERCENT = Decimal("0.01")


@dataclass(frozen=True)
class BudgetStatus:
    """Where a budget stands at `at` in its current period. Everything shown about it derives from the
    fields here, in one place."""

    budget: Budget
    period: BudgetPeriod  # saved, or as it would open (no primary key yet)
    at: datetime
    spent: Decimal
    reserved: Decimal
    forecast: Forecast | None = None  # read with forecasts=True; None for a lifetime budget
    requested: Decimal = ZERO  # what budget_check asked about

    @property
    def currency(self) -> str:
        return self.budget.currency

    @property
    def limit(self) -> Decimal:
        """A closed period keeps its frozen limit; an open one follows the budget's amount (+ carried)."""
        return self.period.limit if self.period.closed_at is not None else self.budget.amount + self.period.carried_over

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.spent

    @property
    def available(self) -> Decimal:
        """What a new reservation may still take: limit - spent - reserved."""
        return self.limit - self.spent - self.reserved

    @property
    def utilisation(self) -> Decimal | None:
        """Percent of the limit spent; None when the limit is zero."""
        return utilisation_percent(spent=self.spent, limit=self.limit)

    @property
    def level(self) -> str | None:
        return budget_level(self.utilisation, self.budget.thresholds, over=self.spent > self.limit)

    @property
    def level_label(self) -> str:
        return level_label(self.level)

    @property
    def forecast_label(self) -> str:
        """ "forecast to exceed on 28 Dec" while the forecast crosses the limit before the period ends."""
        if self.forecast is None or self.forecast.exceed_at is None:
            return ""
        return forecast_label(self.forecast.exceed_at)

    @property
    def days_left(self) -> int | None:
        """Whole or part days until the period ends; None for lifetime."""
        if self.period.end is None:
            return None
        return max(0, math.ceil((self.period.end - self.at) / timedelta(days=1)))

    @property
    def allowed(self) -> bool:
        """budget_check's answer for `requested`: False only for a hard limit without that much room."""
        return not self.budget.hard_limit or self.spent + self.reserved + self.requested <= self.limit


def utilisation_percent(*, spent: Decimal, limit: Decimal) -> Decimal | None:
    if limit <= 0:
        return None
    return (spent * 100 / limit).quantize(_PERCENT, rounding=ROUND_HALF_EVEN)


# --- the current period of every period kind at a moment ------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    start: datetime
    end: datetime | None
    window: RollupWindow  # the rollups of "spent so far": the period's start to the end of at's hour


def _bounds(at: datetime) -> dict[str, _Bounds]:
    """Each period kind's current period at `at`, and its spend window: the whole current hour is
    included (an event at 12:00:00 sits in the bucket that starts at 12:00), capped at the period's end."""
    found = {}
    for kind in Period.values:
        start, end = period_bounds(kind, at)
        until = hour_floor(at) + timedelta(hours=1)
        found[kind] = _Bounds(start, end, rollup_window(start, min(until, end) if end is not None else until))
    return found


_CARRIED_SQL = (
    """COALESCE((SELECT p.carried_over FROM {periods} p WHERE p.budget_id = {budget}.id AND p.start = {start}), 0)"""
)
_HELD_SQL = """(SELECT COALESCE(SUM(x.amount), 0) FROM {reservations} x JOIN {periods} p ON p.id = x.period_id
    WHERE x.budget_id = {budget}.id AND p.start = {start}
      AND x.settled_at IS NULL AND x.released_at IS NULL AND x.expires_at > %s)"""


def with_spend(queryset: QuerySet[Budget], *, at: datetime, kinds: Iterable[str] = Period.values) -> QuerySet[Budget]:
    """`queryset` annotated with each budget's `spent` and `reserved` in its current period at `at`, by
    the database, in the statement that reads the budgets: the rollups of the period's window
    (tracking.selectors.window_spend) and the reservations held at `at`. The window's bounds are the
    current period's of the budget's own period kind: a CASE over `kinds` (the budgets' period kinds;
    the fewer, the shorter the statement), a constant for one."""
    connection = connections[queryset.db]
    adapt = connection.ops.adapt_datetimefield_value
    table = connection.ops.quote_name(Budget._meta.db_table)
    bounds = {kind: b for kind, b in _bounds(at).items() if kind in set(kinds)}

    def per_kind(value: Any) -> tuple[str, list[Any]]:
        if len(bounds) == 1:
            return "%s", [adapt(value(next(iter(bounds.values()))))]
        whens = " ".join("WHEN %s THEN %s" for _ in bounds)
        return f"CASE {table}.{connection.ops.quote_name('period')} {whens} END", [
            param for kind, b in bounds.items() for param in (kind, adapt(value(b)))
        ]

    names = ("start", "head_end", "days_start", "days_end", "tail_start", "end")
    window = {name: per_kind(lambda b, name=name: getattr(b.window, name)) for name in names}
    start_sql, start_params = window["start"]
    held = _HELD_SQL.format(
        reservations=Reservation._meta.db_table, periods=BudgetPeriod._meta.db_table, budget=table, start=start_sql
    )
    carried = _CARRIED_SQL.format(periods=BudgetPeriod._meta.db_table, budget=table, start=start_sql)
    return queryset.annotate(
        spent=window_spend(scope=f"{table}.scope", currency=f"{table}.currency", window=window),
        reserved=RawSQL(held, [*start_params, adapt(at)], output_field=MoneyField()),  # noqa: S611 - fixed text
        carried=RawSQL(carried, start_params, output_field=MoneyField()),  # noqa: S611 - into the open period
        spend_at=Value(at, output_field=DateTimeField()),
    )


def _periods(budgets: list[Budget], at: datetime) -> dict[int, BudgetPeriod]:
    """Each budget's period holding `at`: the saved one, or as it would open, with what the period
    before it carries (one statement reads the current periods and the ones just before them)."""
    bounds = _bounds(at)
    starts = {bounds[b.period].start for b in budgets}
    rows = BudgetPeriod.objects.filter(budget__in=[b.pk for b in budgets]).filter(
        Q(start__in=starts) | Q(end__in=starts)
    )
    current: dict[tuple[int, datetime], BudgetPeriod] = {}
    previous: dict[tuple[int, datetime], BudgetPeriod] = {}
    for row in rows:
        current[(row.budget_id, row.start)] = row
        if row.end is not None:
            previous[(row.budget_id, row.end)] = row
    found = {}
    for budget in budgets:
        b = bounds[budget.period]
        period = current.get((budget.pk, b.start))
        if period is None:
            before = previous.get((budget.pk, b.start))
            carried = _carry(budget, before) if before is not None else ZERO
            period = BudgetPeriod(start=b.start, end=b.end, carried_over=carried, limit=budget.amount + carried)
        period.budget = budget
        found[budget.pk] = period
    return found


def _carry(budget: Budget, previous: BudgetPeriod) -> Decimal:
    """What `previous` carries into the period after it (0 without rollover): its unspent part, capped.
    Not closed yet (the beat closes it at the next hour), it carries what closing it would freeze."""
    if not budget.rollover:
        return ZERO
    if previous.closed_at is not None:
        limit, spent = previous.limit, previous.spent_at_close or ZERO
    else:
        limit = budget.amount + previous.carried_over
        spent = spend_total(scope=budget.scope, start=previous.start, end=previous.end, currency=budget.currency)
        spent += budget_billed(budget, previous.start, previous.end)
    unspent = max(limit - spent, ZERO)
    return unspent if budget.rollover_cap is None else min(unspent, budget.rollover_cap)


def budget_billed(budget: Budget, start: datetime, end: datetime | None) -> Decimal:
    """What a budget that counts the providers' bills adds to its metered spend of [start, end): billed minus
    metered on each whole UTC day billed (tracking.selectors.billed_adjustment); 0 for any other budget."""
    if not budget.count_billed or end is None:
        return ZERO
    return billed_adjustment(scope=budget.scope, currency=budget.currency, start=start, end=end)


def budget_statuses(
    budgets: Iterable[Budget] | QuerySet[Budget],
    *,
    at: datetime | None = None,
    forecasts: bool = False,
    requested: Decimal | None = None,
) -> list[BudgetStatus]:
    """The status of each budget at `at` (default now), in the order given. Writes nothing.

    The budgets' spend and reservations are read in one statement (with_spend, over the period kinds
    among them), unless already read through with_spend at the same moment (an admin change list's
    page); the periods in one more. With `forecasts`,
    each status carries its forecast (budgets.forecast). `requested`: the amount budget_check asks about
    (BudgetStatus.allowed)."""
    at = at or timezone.now()
    budgets = list(budgets)
    if not budgets:
        return []
    sums = {b.pk: (b.spent, b.reserved) for b in budgets if getattr(b, "spend_at", None) == at}
    if missing := [b for b in budgets if b.pk not in sums]:
        kinds = {b.period for b in missing}
        read = with_spend(Budget.objects.filter(pk__in=[b.pk for b in missing]), at=at, kinds=kinds)
        sums.update((pk, (spent, reserved)) for pk, spent, reserved in read.values_list("pk", "spent", "reserved"))
    periods = _periods(budgets, at)
    for budget in budgets:
        if budget.count_billed:  # the bills of the period's closed days instead of the metered spend
            period = periods[budget.pk]
            until = hour_floor(at) + timedelta(hours=1)
            until = min(until, period.end) if period.end is not None else until
            spent, reserved = sums[budget.pk]
            sums[budget.pk] = (spent + budget_billed(budget, period.start, until), reserved)
    statuses = [
        BudgetStatus(
            budget=budget,
            period=periods[budget.pk],
            at=at,
            spent=sums[budget.pk][0],
            reserved=sums[budget.pk][1],
            requested=ZERO if requested is None else requested,
        )
        for budget in budgets
    ]
    return with_forecasts(statuses) if forecasts else statuses


def with_forecasts(statuses: list[BudgetStatus]) -> list[BudgetStatus]:
    """The statuses (read at one moment) with their forecasts (budgets.forecast), read together."""
    if not statuses:
        return statuses
    questions = [Question(s.budget.scope, s.currency, s.period.start, s.period.end, s.spent, s.limit) for s in statuses]
    return [
        replace(status, forecast=forecast)
        for status, forecast in zip(statuses, spend_forecasts(questions, at=statuses[0].at), strict=True)
    ]


def budget_check(*, scope: str, amount: Any = ZERO, at: datetime | None = None) -> list[BudgetStatus]:
    """Where every active budget of `scope` and of the scopes enclosing it (global, a team's whole
    spend: core.scopes.enclosing_scopes) stands, its budget as a value of each template covering it
    included (budgets.templates.budgets_of: created on first use), and whether `amount` fits
    (`allowed` is False only for a hard-limit budget where spent + reserved + amount > limit)."""
    if problems := scope_errors(scope):
        raise ValidationError({"scope": problems})
    amount = parse_money(amount, field="amount")
    if amount < 0:
        raise ValidationError({"amount": "must be zero or more"})
    if not settings.ENABLE_COST_MONITORING:
        return []  # monitoring off: no budget is checked, so everything is allowed
    return budget_statuses(budgets_of(scopes=[scope], is_active=True), at=at, requested=amount)


# --- burn-down of the current period (admin chart) ----------------------------------------------


@dataclass(frozen=True)
class BurnDown:
    """Remaining budget over the current period: one point per step boundary up to now."""

    start: datetime
    end: datetime
    limit: Decimal
    step: str  # "hour" or "day"
    points: list[tuple[datetime, Decimal]]  # (moment, remaining at that moment), the last at `at`
    forecast_end: Decimal | None  # remaining at the period's end if the forecast holds


def budget_burn_down(status: BudgetStatus) -> BurnDown | None:
    """The burn-down of a status's period from the hourly rollups; None for lifetime budgets.

    Steps are local hours for periods of up to a week, local days beyond, so a chart has at most
    a few hundred points. Its last point is the status's remaining.
    """
    period, budget = status.period, status.budget
    if period.end is None:
        return None
    tz = ZoneInfo(settings.TIME_ZONE)
    step = "hour" if period.end - period.start <= timedelta(days=7) else "day"
    end_of_data = min(hour_floor(status.at) + timedelta(hours=1), period.end)
    by_step: dict[datetime, int] = {}
    rollups = SpendRollup.objects.filter(
        scope=budget.scope, currency=budget.currency, bucket__gte=period.start, bucket__lt=end_of_data
    ).values_list("bucket", "amount")
    for bucket, amount in rollups:
        local = bucket.astimezone(tz)
        key = local.replace(minute=0, second=0, microsecond=0)
        if step == "day":
            key = key.replace(hour=0)
        by_step[key] = by_step.get(key, 0) + to_nanos(amount)
    limit_nanos = to_nanos(status.limit)
    points: list[tuple[datetime, Decimal]] = [(period.start, status.limit)]
    spent = 0
    cursor = period.start.astimezone(tz)
    while True:
        key = cursor.replace(minute=0, second=0, microsecond=0)
        if step == "day":
            key = key.replace(hour=0)
            following = datetime.combine(key.date() + timedelta(days=1), key.time(), tzinfo=tz)
        else:
            following = (key.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
        spent += by_step.get(key, 0)
        boundary = min(following.astimezone(UTC), status.at)
        points.append((boundary, from_nanos(limit_nanos - spent)))
        if following.astimezone(UTC) >= status.at or following.astimezone(UTC) >= period.end:
            break
        cursor = following
    forecast = status.forecast
    return BurnDown(
        start=period.start,
        end=period.end,
        limit=status.limit,
        step=step,
        points=points,
        forecast_end=None if forecast is None else status.limit - forecast.amount,
    )


# --- a template's values at a glance (its admin page, /metrics) --------------------------------------


@dataclass(frozen=True)
class TemplateSummary:
    """Where the values of a template stand in their current period."""

    template: Budget
    at: datetime
    values: int  # values with a budget of their own (each value that spent gets one at the next alert pass)
    overrides: int  # of which with an amount of their own
    spending: int  # values with spend in the current period
    levels: dict[str, int]  # level label ("ok", "info", ... "exceeded") -> values with spend at it
    top: list[BudgetStatus]  # the highest utilisation first (matching `search`, if given)

    def as_json(self) -> dict[str, Any]:
        """The template and where its values stand, as GET /api/v1/budgets and `budget_status --json`
        write it (amounts as plain decimal strings); no status of its own."""
        template = self.template
        return {
            "id": template.pk,
            "name": template.name,
            "scope": template.scope,
            "period": template.period,
            "currency": template.currency,
            "amount": plain_money(template.amount),
            "hard_limit": template.hard_limit,
            "template": True,
            "summary": {
                "values": self.values,
                "overrides": self.overrides,
                "spending": self.spending,
                "levels": self.levels,
            },
        }


def template_summary(
    template: Budget, *, at: datetime | None = None, search: str = "", top: int = 20
) -> TemplateSummary:
    """How many values a template covers, how many are at each level, and the `top` values by
    utilisation (their value containing `search`). Writes nothing. The values that spent this period
    are read from the rollups in two statements (budgets.templates.template_values_spent) and ranked
    with the status's own functions (utilisation_percent, budget_level) on their limits; the `top`
    shown are read whole (budget_statuses), so they are what each value's own page says. A template
    with rollover reads the status of every spending value that has a budget (a limit depends on each
    one's carry); a value that spent before its budget was created (the next alert pass creates it)
    has never carried anything, and is ranked on the template's amount but not shown in `top`."""
    at = at or timezone.now()
    start, end = period_bounds(template.period, at)
    until = hour_floor(at) + timedelta(hours=1)
    spent = template_values_spent(template=template, start=start, end=min(until, end) if end else until)
    values = Budget.objects.filter(template=template)
    counts = values.aggregate(values=Count("pk"), overrides=Count("pk", filter=Q(override=True)))
    own = dict(values.filter(override=True).values_list("scope", "amount"))  # overrides are few
    ranked: dict[str, tuple[Decimal | None, Decimal]] = {}
    if template.rollover:
        scopes = sorted(spent)
        for chunk in (scopes[i : i + VALUES_CHUNK] for i in range(0, len(scopes), VALUES_CHUNK)):
            for status in budget_statuses(list(values.filter(scope__in=chunk)), at=at):
                ranked[status.budget.scope] = (status.utilisation, status.spent)
    levels = dict.fromkeys([level_label(None), *(level_label(v) for v in Level.values)], 0)
    for scope, amount in spent.items():
        if scope not in ranked:
            ranked[scope] = (utilisation_percent(spent=amount, limit=own.get(scope, template.amount)), amount)
        utilisation, amount = ranked[scope]
        limit = own.get(scope, template.amount) if utilisation is None else None
        over = limit is not None and amount > limit
        levels[level_label(budget_level(utilisation, template.thresholds, over=over))] += 1
    prefix = len(template.scope) - 1

    def matches(scope: str) -> bool:
        return search.lower() in scope[prefix:].lower()

    order = sorted(ranked, key=lambda s: (ranked[s][0] is None and ranked[s][1] > 0, ranked[s][0] or 0, ranked[s][1]))
    candidates = [scope for scope in reversed(order) if matches(scope)][: top * 5]
    if search:  # a value without spend this period is still found by its value
        more = values.filter(scope__icontains=search).exclude(scope__in=candidates).order_by("scope")
        candidates += [scope for scope in more.values_list("scope", flat=True)[: top * 5] if matches(scope)]
    chosen = {b.scope: b for b in values.filter(scope__in=candidates)}
    shown = [chosen[scope] for scope in candidates if scope in chosen][:top]
    return TemplateSummary(
        template=template,
        at=at,
        values=counts["values"],
        overrides=counts["overrides"],
        spending=len(spent),
        levels=levels,
        top=budget_statuses(shown, at=at),
    )
