"""Reads shared by the admin, commands, reports, the API and metrics.

"How much in this window" is answered from SpendRollup, never by scanning the ledger.
The only ledger scans are the audit ones (verify_ledger, rebuild_rollups).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Sum

from core.money import from_nanos

from .models import (
    ROLLUP_COUNTERS,
    SERIES_COUNTERS,
    SERIES_KEY,
    CostEntry,
    MetricSeries,
    Price,
    SpendRollup,
    SpendRollupDay,
)
from .rollups import daily_deltas, metric_series_deltas, rollup_deltas


@dataclass(frozen=True)
class RollupWindow:
    """[start, end) split for the rollups: whole UTC days [days_start, days_end) are read from
    SpendRollupDay, the ragged ends from hourly rows [start, head_end) and [tail_start, end).
    With no whole day inside, days_start >= days_end and the two hourly ranges cover the window."""

    start: datetime
    head_end: datetime
    days_start: datetime
    days_end: datetime
    tail_start: datetime
    end: datetime


def rollup_window(start: datetime, end: datetime) -> RollupWindow:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days_start = midnight if midnight == start else midnight + timedelta(days=1)
    days_end = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return RollupWindow(
        start=start,
        head_end=min(days_start, end),
        days_start=days_start,
        days_end=days_end,
        tail_start=max(days_end, days_start),
        end=end,
    )


# Spend over a window, in SQL, from the rollups: whole UTC days from the daily rows, the ragged
# ends from the hourly ones (rollup_window), bounds read from the row of a `k` relation with
# WINDOW_COLUMNS (window_values). Each part is an index range on (scope, currency, bucket), so the
# cost follows the window's days, never the ledger. Amounts are integer nano-units on both
# databases: the sums are exact.
WINDOW_COLUMNS = "start, head_end, days_start, days_end, tail_start, window_end"
_SPENT_SQL = """(
    (SELECT COALESCE(SUM(r.amount), 0) FROM {hourly} r
      WHERE r.scope = {scope} AND r.currency = {currency} AND r.bucket >= k.start AND r.bucket < k.head_end)
  + (SELECT COALESCE(SUM(r.amount), 0) FROM {hourly} r
      WHERE r.scope = {scope} AND r.currency = {currency} AND r.bucket >= k.tail_start AND r.bucket < k.window_end)
  + (SELECT COALESCE(SUM(d.amount), 0) FROM {daily} d
      WHERE d.scope = {scope} AND d.currency = {currency} AND d.bucket >= k.days_start AND d.bucket < k.days_end))"""


def spent_sql(conn: Any, *, scope: str, currency: str) -> str:
    """The SQL expression of what `scope` spent in `currency` (column expressions) over the window of `k`."""
    qn = conn.ops.quote_name
    return _SPENT_SQL.format(
        hourly=qn(SpendRollup._meta.db_table), daily=qn(SpendRollupDay._meta.db_table), scope=scope, currency=currency
    )


def window_values(conn: Any, window: RollupWindow) -> list[Any]:
    """The WINDOW_COLUMNS parameters of a window, adapted for `conn`."""
    adapt = conn.ops.adapt_datetimefield_value
    return [
        adapt(window.start),
        adapt(window.head_end),
        adapt(window.days_start),
        adapt(window.days_end),
        adapt(window.tail_start),
        adapt(window.end),
    ]


def values_rows_sql(columns: int, rows: int) -> str:
    """`rows` placeholder rows of `columns` parameters, for a VALUES list."""
    row = "(" + ", ".join(["%s"] * columns) + ")"
    return ", ".join([row] * rows)


_TOTALS_CHUNK = 256  # windows per statement: 9 parameters each, far under either database's limit


@cache
def _spend_totals_sql(alias: str, rows: int) -> str:
    spent = spent_sql(connections[alias], scope="k.scope", currency="k.currency")
    return (
        f"WITH k(i, scope, currency, {WINDOW_COLUMNS}) AS (VALUES {values_rows_sql(9, rows)})"
        f" SELECT k.i, {spent} FROM k"
    )


def spend_totals(
    windows: Sequence[tuple[str, str, datetime, datetime]], *, using: str = DEFAULT_DB_ALIAS
) -> list[Decimal]:
    """spend_total of each (scope, currency, start, end), summed by the database: one statement per
    256 windows, whatever their lengths, instead of up to three each."""
    conn = connections[using]
    totals = [from_nanos(0)] * len(windows)
    for first in range(0, len(windows), _TOTALS_CHUNK):
        chunk = windows[first : first + _TOTALS_CHUNK]
        params: list[Any] = []
        for index, (scope, currency, start, end) in enumerate(chunk, start=first):
            params += [index, scope, currency, *window_values(conn, rollup_window(start, end))]
        with conn.cursor() as cursor:
            cursor.execute(_spend_totals_sql(conn.alias, len(chunk)), params)
            for index, nanos in cursor.fetchall():
                totals[index] = from_nanos(int(nanos))
    return totals


def spend_total(*, scope: str, start: datetime, end: datetime, currency: str = "USD") -> Decimal:
    """Spend of a scope over the hourly buckets in [start, end): whole UTC days from the daily
    rollups, the rest from the hourly ones."""
    window = rollup_window(start, end)
    hours = SpendRollup.objects.filter(scope=scope, currency=currency)
    total = Decimal("0E-9")
    for lo, hi in ((window.start, window.head_end), (window.tail_start, window.end)):
        if lo < hi:
            total += hours.filter(bucket__gte=lo, bucket__lt=hi).aggregate(total=Sum("amount"))["total"] or 0
    if window.days_start < window.days_end:
        days = SpendRollupDay.objects.filter(
            scope=scope, currency=currency, bucket__gte=window.days_start, bucket__lt=window.days_end
        )
        total += days.aggregate(total=Sum("amount"))["total"] or 0
    return total


def price_history(price: Price) -> list[Price]:
    """Every version of the same priced thing, newest first."""
    return list(
        Price.objects.filter(
            provider=price.provider,
            model=price.model,
            operation=price.operation,
            unit=price.unit,
            variant=price.variant,
        ).order_by("-valid_from")
    )


def ledger_rollup_totals(
    *,
    chunk_size: int = 5000,
    series: dict[tuple[str, ...], list[Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[tuple[str, datetime, str], list[Any]]:
    """What every rollup row should hold, recomputed from the whole ledger (an audit scan).

    Uses the write path's own scope and counter functions, so it checks bucketing too. A `series`
    dict given is filled, in the same scan, with what every MetricSeries row should hold.
    """
    entries = CostEntry.objects.select_related("team").order_by("pk").iterator(chunk_size=chunk_size)
    totals: dict[tuple[str, datetime, str], list[Any]] = {}
    batch: list[CostEntry] = []

    def flush() -> None:
        for key, counters in rollup_deltas(batch).items():
            current = totals.get(key)
            if current is None:
                totals[key] = counters
            else:
                for i, value in enumerate(counters):
                    current[i] += value
        if series is not None:
            for key, counters in metric_series_deltas(batch).items():
                current = series.get(key)
                if current is None:
                    series[key] = counters
                else:
                    for i, value in enumerate(counters):
                        current[i] += value
        if progress is not None and batch:
            progress(len(batch))  # entries scanned since the last call
        batch.clear()

    for entry in entries:
        batch.append(entry)
        if len(batch) >= chunk_size:
            flush()
    flush()
    return totals


# MetricSeries rows hold lifetime totals, not an hour or a day: their differences carry this bucket.
LIFETIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LedgerDifference:
    scope: str  # for a series row: series:provider=P,service=S,operation=O,model=M
    bucket: datetime  # LIFETIME for a series row
    currency: str
    field: str
    ledger: Any
    rollup: Any
    table: str = "hourly"  # or "daily", or "series" (tracking.MetricSeries)


def _rollup_rows(model: type[SpendRollup] | type[SpendRollupDay]) -> dict[tuple[str, datetime, str], list[Any]]:
    rows: dict[tuple[str, datetime, str], list[Any]] = {}
    for row in model.objects.values_list("scope", "bucket", "currency", *ROLLUP_COUNTERS).iterator(chunk_size=5000):
        scope, bucket, currency, nanos, *counts = row
        rows[(scope, bucket, currency)] = [from_nanos(nanos) if isinstance(nanos, int) else nanos, *counts]
    return rows


def _series_rows() -> dict[tuple[str, ...], list[Any]]:
    rows: dict[tuple[str, ...], list[Any]] = {}
    for row in MetricSeries.objects.values_list(*SERIES_KEY, *SERIES_COUNTERS).iterator(chunk_size=5000):
        key, (nanos, *counts) = row[: len(SERIES_KEY)], row[len(SERIES_KEY) :]
        rows[key] = [from_nanos(nanos) if isinstance(nanos, int) else nanos, *counts]
    return rows


def ledger_differences() -> tuple[list[LedgerDifference], int, int]:
    """Compare the ledger with the hourly and the daily rollups, and with the metric series.

    Returns (differences, ledger-derived hourly rows, hourly rollup rows).
    """
    series: dict[tuple[str, ...], list[Any]] = {}
    expected = ledger_rollup_totals(series=series)
    zero = [Decimal(0)] + [0] * (len(ROLLUP_COUNTERS) - 1)
    differences: list[LedgerDifference] = []
    hourly = _rollup_rows(SpendRollup)
    for table, want_rows, have_rows in (
        ("hourly", expected, hourly),
        ("daily", daily_deltas(expected), _rollup_rows(SpendRollupDay)),
    ):
        for key in sorted(set(want_rows) | set(have_rows)):
            want, have = want_rows.get(key, zero), have_rows.get(key, zero)
            for name, w, h in zip(ROLLUP_COUNTERS, want, have, strict=True):
                if w != h:
                    differences.append(LedgerDifference(*key, field=name, ledger=w, rollup=h, table=table))
    have_series = _series_rows()
    zero_series = [Decimal(0)] + [0] * (len(SERIES_COUNTERS) - 1)
    for key in sorted(set(series) | set(have_series)):
        provider, service, operation, model, currency = key
        scope = f"series:provider={provider},service={service},operation={operation},model={model}"
        want, have = series.get(key, zero_series), have_series.get(key, zero_series)
        for name, w, h in zip(SERIES_COUNTERS, want, have, strict=True):
            if w != h:
                differences.append(
                    LedgerDifference(scope, LIFETIME, currency, field=name, ledger=w, rollup=h, table="series")
                )
    return differences, len(expected), len(hourly)


def ledger_totals_by_currency() -> dict[str, Decimal]:
    """Sum of the ledger per currency (audit only: used by verify_ledger's summary)."""
    return {
        row["currency"]: row["total"]
        for row in CostEntry.objects.values("currency").annotate(total=Sum("amount")).order_by("currency")
    }
