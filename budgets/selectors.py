"""Reads about budgets shared by services, the command, the admin, reports and metrics.

Spend comes from tracking's hourly rollups (spend_total), never from the ledger, so a status
costs the same with ten thousand or ten million ledger rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache, cached_property
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Model, Q, Sum
from django.db.models.base import ModelState

from core.db import fetch_all_prepared
from core.money import MONEY_QUANTUM, MoneyField, from_nanos, round_money, to_nanos
from core.periods import period_bounds
from tracking.models import SpendRollup
from tracking.selectors import (
    WINDOW_COLUMNS,
    rollup_window,
    spend_total,
    spend_totals,
    spent_sql,
    values_rows_sql,
    window_values,
)

from .models import Budget, BudgetPeriod, Period, Reservation

ZERO = Decimal(0).quantize(MONEY_QUANTUM)
_PERCENT = Decimal("0.01")
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Forecast:
    """Projected spend at the end of a period and when the limit would be crossed."""

    amount: Decimal
    projected_exceed_at: datetime | None  # None: not within this period (or already exceeded)
    method: str  # "linear" or "hour-of-day"


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
    allowed: bool = True  # budget_check's answer for the amount asked about
    requested: Decimal = ZERO

    @property
    def currency(self) -> str:
        return self.budget.currency

    @property
    def available(self) -> Decimal:
        """What a new reservation may still take: limit - spent - reserved."""
        return self.limit - self.spent - self.reserved

    @cached_property
    def forecast_result(self) -> Forecast | None:
        """Computed on first use (it reads a week of rollups): budget_check does not pay for it."""
        return budget_forecast(budget=self.budget, period=self.period, at=self.at, spent=self.spent, limit=self.limit)

    @property
    def forecast(self) -> Decimal | None:
        """Projected spend at period end; None for a lifetime budget."""
        return self.forecast_result.amount if self.forecast_result else None

    @property
    def projected_exceed_at(self) -> datetime | None:
        return self.forecast_result.projected_exceed_at if self.forecast_result else None

    @property
    def forecast_method(self) -> str | None:
        return self.forecast_result.method if self.forecast_result else None


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


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def budget_status_compute(
    *,
    budget: Budget,
    period: BudgetPeriod,
    at: datetime,
    spent: Decimal | None = None,
    reserved: Decimal | None = None,
    requested: Decimal | None = None,
) -> BudgetStatus:
    """Where a budget stands at `at` in the given period. Reads only; see services.budget_status.

    With `requested`, `allowed` says whether it fits (budget_check's answer): False only for a
    hard-limit budget where spent + reserved + requested > limit.

    `spent` and `reserved` may be passed when already read (budget_positions); otherwise they are
    read from the rollups and the reservations.
    """
    if spent is None:
        spent = period_spent(budget=budget, start=period.start, end=spend_window_end(period=period, at=at))
    if reserved is None:
        reserved = reserved_total(period=period, at=at) if period.pk is not None else ZERO
    limit = period_limit(budget=budget, period=period)
    utilisation = utilisation_percent(spent=spent, limit=limit)
    days_left = None if period.end is None else max(0, math.ceil((period.end - at) / timedelta(days=1)))
    return BudgetStatus(
        budget=budget,
        period=period,
        at=at,
        spent=spent,
        limit=limit,
        remaining=limit - spent,
        utilisation=utilisation,
        level=budget.level_for(utilisation, over=spent > limit),
        reserved=reserved,
        days_left=days_left,
        allowed=requested is None or not budget.hard_limit or spent + reserved + requested <= limit,
        requested=ZERO if requested is None else requested,
    )


def budget_status_peek(*, budget: Budget, at: datetime) -> BudgetStatus:
    """Like services.budget_status, but writes nothing: a period not opened yet is shown as it would
    open (for the admin and reports, which must not write on a read)."""
    start, _ = period_bounds(budget.period, at)
    period = BudgetPeriod.objects.filter(budget=budget, start=start).first() or period_unopened(budget=budget, at=at)
    return budget_status_compute(budget=budget, period=period, at=at)


def period_unopened(*, budget: Budget, at: datetime) -> BudgetPeriod:
    """The period holding `at` as it would open (not saved): its bounds, carry and limit."""
    start, end = period_bounds(budget.period, at)
    carried = carry_into(budget=budget, start=start)
    return BudgetPeriod(budget=budget, start=start, end=end, carried_over=carried, limit=budget.amount + carried)


def budget_statuses_peek(*, budgets: Sequence[Budget], at: datetime, forecasts: bool = True) -> list[BudgetStatus]:
    """budget_status_peek of each budget, in a few statements whatever their number (the
    dashboard's budgets at risk, the daily report, the admin's change list, the API): every period,
    spend and reservation in one (budget_positions); the periods not opened yet as
    budget_statuses_unopened reads them; with `forecasts`, the forecasts' week of history in two
    (budget_forecasts_prefetch; without, status.forecast reads its own when asked). Writes nothing."""
    budgets = list(budgets)
    if not budgets:
        return []
    positions = {p.budget.pk: p for p in budget_positions(scopes={b.scope for b in budgets}, at=at)}
    unopened = [b for b in budgets if (p := positions.get(b.pk)) is not None and p.period is None]
    found = {status.budget.pk: status for status in budget_statuses_unopened(budgets=unopened, at=at)}
    statuses = []
    for budget in budgets:
        position = positions.get(budget.pk)
        if position is not None and position.period is not None:
            status = budget_status_compute(
                budget=budget, period=position.period, at=at, spent=position.spent, reserved=position.reserved
            )
        elif budget.pk in found:
            status = found[budget.pk]
        else:  # not among the active budgets budget_positions reads (an inactive one passed in)
            status = budget_status_peek(budget=budget, at=at)
        statuses.append(status)
    if forecasts:
        budget_forecasts_prefetch(statuses)
    return statuses


def budget_statuses_unopened(*, budgets: Sequence[Budget], at: datetime) -> list[BudgetStatus]:
    """The status at `at` of budgets whose period holding `at` is not opened yet, each period built
    as it would open (period_unopened) and their spend read in one statement (spend_totals), not a
    period lookup and up to three statements each. Writes nothing; nothing is reserved on a period
    that does not exist."""
    periods = [period_unopened(budget=budget, at=at) for budget in budgets]
    windows = [(p.budget.scope, p.budget.currency, p.start, spend_window_end(period=p, at=at)) for p in periods]
    return [
        budget_status_compute(budget=budget, period=period, at=at, spent=spent)
        for budget, period, spent in zip(budgets, periods, spend_totals(windows), strict=True)
    ]


def carry_into(*, budget: Budget, start: datetime) -> Decimal:
    """What the period ending at `start` carries into the one starting there (0 without rollover)."""
    if not budget.rollover:
        return ZERO
    previous = BudgetPeriod.objects.filter(budget=budget, end=start, closed_at__isnull=False).first()
    if previous is None or previous.spent_at_close is None:
        return ZERO
    unspent = max(previous.limit - previous.spent_at_close, ZERO)
    if budget.rollover_cap is not None:
        unspent = min(unspent, budget.rollover_cap)
    return unspent


# --- the hot path: every budget of some scopes with its current period, in one statement -------


@dataclass(frozen=True)
class Position:
    budget: Budget
    period: BudgetPeriod | None  # None: the current period is not opened yet
    spent: Decimal | None  # None when not read (with_sums=False) or no period
    reserved: Decimal | None


# The columns a position needs: bookkeeping timestamps are left deferred (loaded if ever read),
# which spares parsing four timestamps per call on the hot path.
_SKIPPED = {"created_at", "updated_at"}
_BUDGET_FIELDS = tuple(f for f in Budget._meta.concrete_fields if f.name not in _SKIPPED)
_PERIOD_FIELDS = tuple(f for f in BudgetPeriod._meta.concrete_fields if f.name not in _SKIPPED)
_BUDGET_NAMES = tuple(f.attname for f in _BUDGET_FIELDS)
_PERIOD_NAMES = tuple(f.attname for f in _PERIOD_FIELDS)
_FIELDS = {"budget": _BUDGET_FIELDS, "period": _PERIOD_FIELDS}
_MONEY_OUTPUT = MoneyField()


@cache
def _conversion_plan(kind: str, vendor: str, alias: str) -> tuple[tuple[int, Any, tuple[Any, ...]], ...]:
    """(column index, column, converters) of each column of `kind` ("budget" or "period") that
    Django's compiler would convert (SQLite dates, JSON, money): found once per backend."""
    conn = connections[alias]
    plan = []
    for index, field in enumerate(_FIELDS[kind]):
        converters = (*conn.ops.get_db_converters(field.cached_col), *field.get_db_converters(conn))
        if converters:
            plan.append((index, field.cached_col, converters))
    return tuple(plan)


# Budgets and periods change rarely and are checked on every call: the instance built from a row
# is kept, keyed by the row's raw values (any changed column is another key), and each call gets
# its own copy, JSON values included, so a caller that changes one changes nothing shared.
_TEMPLATES: dict[tuple[Any, ...], Model] = {}
_TEMPLATES_MAX = 4096
_MODELS = {"budget": Budget, "period": BudgetPeriod}
_NAMES = {"budget": _BUDGET_NAMES, "period": _PERIOD_NAMES}
_MUTABLE = {
    kind: tuple(f.attname for f in fields if f.get_internal_type() == "JSONField") for kind, fields in _FIELDS.items()
}


def _instance(kind: str, raw: tuple[Any, ...], conn: Any) -> Any:
    """The Budget or BudgetPeriod of a row of budget_positions (columns of _FIELDS[kind])."""
    key = (kind, conn.alias, raw)
    try:
        template = _TEMPLATES.get(key)
    except TypeError:  # an unhashable value: no template
        return _MODELS[kind].from_db(conn.alias, _NAMES[kind], _convert(raw, kind, conn))
    if template is None:
        template = _MODELS[kind].from_db(conn.alias, _NAMES[kind], _convert(raw, kind, conn))
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        _TEMPLATES[key] = template
    return _copy(kind, template, conn.alias)


def _copy(kind: str, template: Any, alias: str) -> Any:
    """A caller's own copy of a kept Budget or BudgetPeriod (JSON values included)."""
    instance = template.__class__.__new__(template.__class__)
    instance.__dict__.update(template.__dict__)
    instance._state = state = ModelState()
    state.db, state.adding = alias, False
    for attname in _MUTABLE[kind]:
        instance.__dict__[attname] = _json_copy(template.__dict__[attname])
    return instance


def _json_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value  # str, int, float, bool, None, Decimal: immutable


# On PostgreSQL the timestamps of a position come as microseconds since the epoch (a bigint):
# psycopg parses a timestamptz in ~5 us, and a row that maps to a kept template never needs them.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATETIMES = {
    kind: {i for i, f in enumerate(fields) if f.get_internal_type() == "DateTimeField"}
    for kind, fields in _FIELDS.items()
}


def _column_sql(conn: Any, alias: str, kind: str, index: int) -> str:
    column = f"{alias}.{conn.ops.quote_name(_FIELDS[kind][index].column)}"
    if conn.vendor == "postgresql" and index in _DATETIMES[kind]:
        return f"(EXTRACT(EPOCH FROM {column}) * 1000000)::bigint"
    return column


def _convert(values: Sequence[Any], kind: str, conn: Any) -> list[Any]:
    out = list(values)
    if conn.vendor == "postgresql":
        for index in _DATETIMES[kind]:
            if out[index] is not None:
                out[index] = _EPOCH + timedelta(microseconds=out[index])
    for index, column, converters in _conversion_plan(kind, conn.vendor, conn.alias):
        value = out[index]
        for converter in converters:
            value = converter(value, column, conn)
        out[index] = value
    return out


# Spent so far in a budget's period: tracking.selectors' window SQL over the row of `k` joined to
# the budget. Rollup buckets are whole UTC hours and `at` lies inside the period, so "buckets before
# the end of at's hour" never reaches past the period's end.
_RESERVED_SQL = """(SELECT COALESCE(SUM(x.amount), 0) FROM {reservations} x
      WHERE x.period_id = {period} AND x.settled_at IS NULL AND x.released_at IS NULL AND x.expires_at > %s)"""


def holdings_sql(
    conn: Any, *, scope: str = "b.scope", currency: str = "b.currency", period: str = "p.id"
) -> tuple[str, str]:
    """(spent, reserved) SQL expressions over the window columns of `k`, for the budget whose
    scope and currency and the period whose id are the given column expressions."""
    return (
        spent_sql(conn, scope=scope, currency=currency),
        _RESERVED_SQL.format(reservations=conn.ops.quote_name(Reservation._meta.db_table), period=period),
    )


def window_params(conn: Any, *, start: datetime, at: datetime) -> list[Any]:
    """The `k` columns (WINDOW_COLUMNS) for a period starting at `start`, read at `at`."""
    return window_values(conn, rollup_window(start, hour_floor(at) + timedelta(hours=1)))


_kinds_params_cache: dict[tuple[str, str, datetime], list[Any]] = {}


def _kinds_params(conn: Any, at: datetime) -> list[Any]:
    """The `k` rows of every period kind at `at`. They change only at a period boundary or an hour,
    both on a whole minute, so they are kept for the minute (one entry per connection vendor)."""
    key = (conn.vendor, settings.TIME_ZONE, at.astimezone(UTC).replace(second=0, microsecond=0))
    params = _kinds_params_cache.get(key)
    if params is None:
        params = []
        for kind in Period.values:
            params += [kind, *window_params(conn, start=period_bounds(kind, at)[0], at=at)]
        _kinds_params_cache.clear()
        _kinds_params_cache[key] = params
    return params


# Budgets and their current periods are read by budget_check on every call and change rarely.
# What one read found is kept, per process, with the generation token read in the same statement
# (a table kept by triggers: budgets/migrations/0003_definitions_generation.py). A later check
# whose moment its periods still hold asks only for the sums and the token, in one statement, and
# uses what it kept when the token is unchanged. A changed token (any committed change to a budget,
# to a period or its closing; or one made earlier in the caller's own transaction) means reading
# everything again. The statement's snapshot holds the token and the sums together, so a kept
# position is never older than the sums it is returned with.
_GENERATION_SQL = "(SELECT g.token FROM budgets_generation g WHERE g.id = 1)"


@dataclass
class _Known:
    token: int
    budgets: tuple[Budget, ...]  # templates: each call gets copies (_copy)
    periods: tuple[BudgetPeriod, ...]
    since: datetime  # the moments every kept period holds: since <= at < until
    until: datetime | None  # None: lifetime periods only
    # (minute, the VALUES parameters of _known_sql for that minute): one attribute, so a thread
    # never sees the minute of one and the parameters of another.
    minute_params: tuple[datetime, list[Any]] | None = None

    def holds(self, at: datetime) -> bool:
        return self.since <= at and (self.until is None or at < self.until)


_KNOWN: dict[tuple[Any, ...], _Known] = {}
_KNOWN_MAX = 256  # sets of scopes kept; emptied when full
_KNOWN_POSITIONS_MAX = 64  # larger reads (metrics, alert passes, the dashboard) run a minute apart: not kept


def _known_keep(key: tuple[Any, ...], token: Any, positions: Sequence[Position], alias: str) -> None:
    if token is None or not positions or len(positions) > _KNOWN_POSITIONS_MAX:
        return  # no token (the table was emptied by hand), nothing to keep, or too much
    if any(p.period is None for p in positions):
        return  # a period still to open: read again once it is
    periods = [p.period for p in positions]
    ends = [period.end for period in periods if period.end is not None]
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    _KNOWN[key] = _Known(
        token=token,
        budgets=tuple(_copy("budget", p.budget, alias) for p in positions),
        periods=tuple(_copy("period", period, alias) for period in periods),
        since=max(period.start for period in periods),
        until=min(ends) if ends else None,
    )


@cache
def _known_sql(alias: str, rows: int) -> str:
    """The sums of kept positions and the token: (period id, spent, reserved, token) per row."""
    conn = connections[alias]
    spent_sql, reserved_sql = holdings_sql(conn, scope="k.scope", currency="k.currency", period="k.id")
    return (
        f"WITH k(id, scope, currency, {WINDOW_COLUMNS}) AS (VALUES {values_rows_sql(9, rows)})"
        f" SELECT k.id, {spent_sql}, {reserved_sql}, {_GENERATION_SQL} FROM k"
    )


def _known_positions(known: _Known, conn: Any, at: datetime) -> list[Position] | None:
    """The kept positions with their sums at `at`, or None when the token has changed."""
    minute = at.replace(second=0, microsecond=0)
    cached = known.minute_params
    if cached is not None and cached[0] == minute:
        params = cached[1]
    else:
        # Windows change only on a whole hour, so they are kept for the minute.
        params = []
        for budget, period in zip(known.budgets, known.periods, strict=True):
            params += [period.pk, budget.scope, budget.currency, *window_params(conn, start=period.start, at=at)]
        known.minute_params = (minute, params)
    rows = fetch_all_prepared(
        _known_sql(conn.alias, len(known.periods)), [*params, conn.ops.adapt_datetimefield_value(at)]
    )
    if len(rows) != len(known.periods) or rows[0][3] != known.token:
        return None
    money = _MONEY_OUTPUT.from_db_value
    sums = {row[0]: row for row in rows}
    positions = []
    for template_budget, template_period in zip(known.budgets, known.periods, strict=True):
        budget = _copy("budget", template_budget, conn.alias)
        period = _copy("period", template_period, conn.alias)
        period._state.fields_cache["budget"] = budget
        row = sums[period.pk]
        positions.append(
            Position(budget=budget, period=period, spent=money(row[1], None, conn), reserved=money(row[2], None, conn))
        )
    return positions


@cache
def _positions_sql(
    alias: str, scopes: int, *, hard_only: bool, with_sums: bool, lock: bool, token: bool = False
) -> str:
    """budget_positions' statement (built once per shape: its text is the prepared statement's key)."""
    conn = connections[alias]
    qn = conn.ops.quote_name
    budget_cols = ", ".join(_column_sql(conn, "b", "budget", i) for i in range(len(_BUDGET_FIELDS)))
    period_cols = ", ".join(_column_sql(conn, "p", "period", i) for i in range(len(_PERIOD_FIELDS)))
    sums = ""
    if with_sums:
        spent_sql, reserved_sql = holdings_sql(conn)
        sums = f", {spent_sql}, {reserved_sql}"
    if token:
        sums += f", {_GENERATION_SQL}"
    sql = (
        f"WITH k(period, {WINDOW_COLUMNS}) AS (VALUES {values_rows_sql(7, len(Period.values))})"
        f" SELECT {budget_cols}, {period_cols}{sums}"
        f" FROM {qn(Budget._meta.db_table)} b"
        f" JOIN k ON k.period = b.period"
        f" LEFT JOIN {qn(BudgetPeriod._meta.db_table)} p ON p.budget_id = b.id AND p.start = k.start"
        f" WHERE b.is_active AND b.scope IN ({', '.join(['%s'] * scopes)})"
        f"{' AND b.hard_limit' if hard_only else ''}"
        f" ORDER BY b.id"
    )
    if lock and conn.vendor == "postgresql":
        sql += " FOR UPDATE OF b"
    return sql


def budget_positions(
    *,
    scopes: Iterable[str],
    at: datetime,
    hard_only: bool = False,
    with_sums: bool = True,
    lock: bool = False,
) -> list[Position]:
    """Every active budget of `scopes` with its period holding `at` (if opened), what was spent in it
    so far (rollups) and what is reserved on it: one SQL statement, whatever the ledger's size,
    prepared once per connection on PostgreSQL (core.db.fetch_all_prepared).

    lock=True (inside a transaction) locks the budget rows, in primary-key order, on PostgreSQL
    (SQLite's write lock, taken at BEGIN IMMEDIATE, already serialises writers).

    With sums and no lock (budget_check), the budgets and periods read are kept and later calls
    read only the sums while the definitions' generation token is unchanged (_Known).
    """
    conn = connections[DEFAULT_DB_ALIAS]
    scopes = sorted(set(scopes))
    keep = with_sums and not lock
    if keep:
        key = (conn.alias, settings.TIME_ZONE, tuple(scopes), hard_only)
        known = _KNOWN.get(key)
        if known is not None and known.holds(at):
            kept = _known_positions(known, conn, at)
            if kept is not None:
                return kept
    params = list(_kinds_params(conn, at))
    if with_sums:
        params.append(conn.ops.adapt_datetimefield_value(at))
    params += scopes
    sql = _positions_sql(conn.alias, len(scopes), hard_only=hard_only, with_sums=with_sums, lock=lock, token=keep)
    rows = fetch_all_prepared(sql, params)
    if not rows:
        return []
    nb, np_ = len(_BUDGET_FIELDS), len(_PERIOD_FIELDS)
    money = _MONEY_OUTPUT.from_db_value
    positions = []
    for row in rows:
        budget = _instance("budget", row[:nb], conn)
        period = None
        spent = reserved = None
        if row[nb] is not None:
            period = _instance("period", row[nb : nb + np_], conn)
            period._state.fields_cache["budget"] = budget  # budget_id is already its id
            if with_sums:
                spent, reserved = money(row[nb + np_], None, conn), money(row[nb + np_ + 1], None, conn)
        positions.append(Position(budget=budget, period=period, spent=spent, reserved=reserved))
    if keep:
        _known_keep(key, rows[0][-1], positions, conn.alias)
    return positions


def periods_holdings(*, periods: Sequence[BudgetPeriod], at: datetime) -> dict[int, tuple[Decimal, Decimal]]:
    """{period id: (spent so far, reserved)} for periods holding `at`, in one statement.

    budget_reserve calls it right after taking its locks: under PostgreSQL's READ COMMITTED a new
    statement sees everything committed before the lock was granted.
    """
    if not periods:
        return {}
    conn = connections[DEFAULT_DB_ALIAS]
    qn = conn.ops.quote_name
    params: list[Any] = []
    for period in periods:
        params += [period.pk, *window_params(conn, start=period.start, at=at)]
    spent_sql, reserved_sql = holdings_sql(conn)
    params.append(conn.ops.adapt_datetimefield_value(at))
    sql = (
        f"WITH k(id, {WINDOW_COLUMNS}) AS (VALUES {values_rows_sql(7, len(periods))})"
        f" SELECT p.id, {spent_sql}, {reserved_sql}"
        f" FROM k JOIN {qn(BudgetPeriod._meta.db_table)} p ON p.id = k.id"
        f" JOIN {qn(Budget._meta.db_table)} b ON b.id = p.budget_id"
    )
    money = _MONEY_OUTPUT.from_db_value
    return {row[0]: (money(row[1], None, conn), money(row[2], None, conn)) for row in fetch_all_prepared(sql, params)}


# --- forecast ---------------------------------------------------------------------------------

SEASONAL_HISTORY = timedelta(days=7)


def _hour_of_day_profile(*, budget: Budget, at: datetime, tz: ZoneInfo) -> list[int] | None:
    """Mean spend (nano-units) at each local hour of the day over the 7 days before at's hour, or
    None while the scope has less than a week of history."""
    return _hour_of_day_profiles({(budget.scope, budget.currency)}, at=at, tz=tz)[(budget.scope, budget.currency)]


def _hour_of_day_profiles(
    keys: set[tuple[str, str]], *, at: datetime, tz: ZoneInfo
) -> dict[tuple[str, str], list[int] | None]:
    """_hour_of_day_profile of many (scope, currency) at once: two statements on PostgreSQL."""
    until = hour_floor(at)
    since = until - SEASONAL_HISTORY
    profiles: dict[tuple[str, str], list[int] | None] = dict.fromkeys(keys)
    if not keys:
        return profiles
    if connection.vendor == "postgresql":
        scopes, currencies = zip(*sorted(keys), strict=True)
        # One index probe per key: does the scope have a rollup a week before `at`?
        rows = fetch_all_prepared(
            f"SELECT k.scope, k.currency FROM unnest(%s::text[], %s::text[]) AS k(scope, currency)"
            f" WHERE EXISTS (SELECT 1 FROM {SpendRollup._meta.db_table} r"
            f" WHERE r.scope = k.scope AND r.currency = k.currency AND r.bucket <= %s)",
            [list(scopes), list(currencies), since],
        )
        with_history = {(scope, currency) for scope, currency in rows}
    else:
        with_history = {
            key for key in keys if SpendRollup.objects.filter(scope=key[0], currency=key[1], bucket__lte=since).exists()
        }
    if not with_history:
        return profiles
    totals = {key: [0] * 24 for key in with_history}
    if connection.vendor == "postgresql":
        # Summed by local hour on the server: at most 24 rows a scope, not 168.
        week = fetch_all_prepared(
            f"SELECT r.scope, r.currency, EXTRACT(HOUR FROM r.bucket AT TIME ZONE %s)::int, SUM(r.amount)"
            f" FROM {SpendRollup._meta.db_table} r WHERE r.scope = ANY(%s::text[])"
            f" AND r.bucket >= %s AND r.bucket < %s GROUP BY 1, 2, 3",
            [str(tz), sorted({scope for scope, _ in with_history}), since, until],
        )
        for scope, currency, local_hour, nanos in week:
            if (hours := totals.get((scope, currency))) is not None:
                hours[local_hour] += int(nanos)
    else:
        rows = SpendRollup.objects.filter(
            scope__in={scope for scope, _ in with_history}, bucket__gte=since, bucket__lt=until
        ).values_list("scope", "currency", "bucket", "amount")
        for scope, currency, bucket, amount in rows:
            if (hours := totals.get((scope, currency))) is not None:
                hours[bucket.astimezone(tz).hour] += to_nanos(amount)
    days = SEASONAL_HISTORY.days
    for key, hours in totals.items():
        profiles[key] = [total // days for total in hours]
    return profiles


def budget_forecasts_prefetch(statuses: Sequence[BudgetStatus]) -> None:
    """Compute the forecasts of many statuses together (their week of history read in two
    statements, not two per budget), so status.forecast costs nothing afterwards."""
    pending = [s for s in statuses if "forecast_result" not in s.__dict__]
    by_moment: dict[datetime, list[BudgetStatus]] = {}
    for status in pending:
        by_moment.setdefault(status.at, []).append(status)
    tz = ZoneInfo(settings.TIME_ZONE)
    for at, group in by_moment.items():
        keys = {(s.budget.scope, s.budget.currency) for s in group if s.period.end is not None and at < s.period.end}
        profiles = _hour_of_day_profiles(keys, at=at, tz=tz)
        for status in group:
            key = (status.budget.scope, status.budget.currency)
            status.__dict__["forecast_result"] = budget_forecast(
                budget=status.budget,
                period=status.period,
                at=at,
                spent=status.spent,
                limit=status.limit,
                profile=profiles.get(key, _NO_PROFILE),
            )


_NO_PROFILE: Any = object()  # budget_forecast reads the profile itself


def budget_forecast(
    *,
    budget: Budget,
    period: BudgetPeriod,
    at: datetime,
    spent: Decimal,
    limit: Decimal,
    profile: list[int] | None = _NO_PROFILE,
) -> Forecast | None:
    """Spend projected at the period's end, and when it would cross the limit.

    Once the scope has a week of hourly history, the rest of the period is projected hour by hour
    from the mean spend at that hour of the day (local time) over the last 7 days, so a quiet night
    does not drag down a busy afternoon (method "hour-of-day"). Before that, the run-rate of the
    elapsed part of the period continues linearly (method "linear"). None for lifetime budgets.
    """
    if period.end is None:
        return None
    if at >= period.end:
        return Forecast(amount=spent, projected_exceed_at=None, method="linear")
    tz = ZoneInfo(settings.TIME_ZONE)
    if profile is _NO_PROFILE:
        profile = _hour_of_day_profile(budget=budget, at=at, tz=tz)
    if profile is None:
        return _linear_forecast(period=period, at=at, spent=spent, limit=limit)
    spent_nanos, limit_nanos = to_nanos(spent), to_nanos(limit)
    projected, crossing = spent_nanos, None
    cursor = at
    hour, day = timedelta(hours=1), timedelta(days=1)
    per_day = sum(profile)
    while cursor < period.end:
        # A whole day of whole hours with no change of UTC offset holds each local hour once: it
        # adds the profile's sum, exactly what 24 hourly steps add. Unless the limit is crossed in
        # it (then the hourly steps find when).
        if (
            cursor.minute == cursor.second == cursor.microsecond == 0
            and cursor + day <= period.end
            and (crossing is not None or projected >= limit_nanos or projected + per_day < limit_nanos)
            and cursor.astimezone(tz).utcoffset() == (cursor + day).astimezone(tz).utcoffset()
        ):
            projected += per_day
            cursor += day
            continue
        step_end = min(hour_floor(cursor) + hour, period.end)
        rate = profile[cursor.astimezone(tz).hour]  # nanos per hour
        added = rate * ((step_end - cursor) // _MICROSECOND) // (hour // _MICROSECOND)
        if crossing is None and projected < limit_nanos <= projected + added and rate > 0:
            needed = limit_nanos - projected
            crossing = cursor + _MICROSECOND * ((hour // _MICROSECOND) * needed // rate)
        projected += added
        cursor = step_end
    return Forecast(amount=from_nanos(projected), projected_exceed_at=crossing, method="hour-of-day")


def _linear_forecast(*, period: BudgetPeriod, at: datetime, spent: Decimal, limit: Decimal) -> Forecast:
    assert period.end is not None
    elapsed = (at - period.start) // _MICROSECOND
    total = (period.end - period.start) // _MICROSECOND
    if elapsed <= 0:
        return Forecast(amount=spent, projected_exceed_at=None, method="linear")
    amount = round_money(spent * total / elapsed)
    projected = None
    if 0 < spent < limit:
        crossing = period.start + _MICROSECOND * int(limit * elapsed / spent)
        projected = crossing if crossing < period.end else None
    return Forecast(amount=amount, projected_exceed_at=projected, method="linear")


def forecast_thresholds_crossed(status: BudgetStatus) -> list[int | float | str]:
    """The budget's thresholds that the forecast at period end reaches (for forecast alerts)."""
    if status.forecast is None or not status.budget.forecast_alerts:
        return []
    utilisation = utilisation_percent(spent=status.forecast, limit=status.limit)
    if utilisation is None:
        return list(status.budget.thresholds) if status.forecast > 0 else []
    return [t for t in status.budget.thresholds if utilisation >= Decimal(str(t))]


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
    a few hundred points.
    """
    period, budget = status.period, status.budget
    if period.end is None:
        return None
    tz = ZoneInfo(settings.TIME_ZONE)
    step = "hour" if period.end - period.start <= timedelta(days=7) else "day"
    end_of_data = min(spend_window_end(period=period, at=status.at), period.end)
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
        forecast_end=None if forecast is None else status.limit - forecast,
    )
