"""Spend series and totals read from the rollups (never from the ledger).

Hourly series come from SpendRollup (one row per scope and UTC hour). Daily series are local
calendar days in TIME_ZONE: when every day boundary is a UTC midnight (TIME_ZONE=UTC, the
default) they are read from SpendRollupDay, one row per day; otherwise from the hourly rows,
each hour assigned to the local day that holds it. Hours and days without a rollup row spent
nothing and are filled with zero.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import QuerySet

from core.money import ZERO
from core.periods import hour_floor
from core.scopes import scope_inner
from tracking.models import SpendRollup, SpendRollupDay
from tracking.selectors import scope_filter

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Point:
    start: datetime  # the hour's or the local day's start, in UTC
    amount: Decimal


def local_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def hour_buckets(start: datetime, end: datetime) -> list[datetime]:
    """The UTC hour buckets that hold [start, end)."""
    buckets, cursor = [], hour_floor(start)
    while cursor < end:
        buckets.append(cursor)
        cursor += HOUR
    return buckets


def local_midnight(day: date, tz: ZoneInfo | None = None) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz or local_tz()).astimezone(UTC)


def local_days(start: datetime, end: datetime, tz: ZoneInfo | None = None) -> list[date]:
    """The local calendar days that [start, end) touches."""
    tz = tz or local_tz()
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)] if end > start else []


def _rows(
    model: type[SpendRollup] | type[SpendRollupDay],
    *,
    scopes: Iterable[str] | None,
    prefixes: Sequence[str] | None,
    start: datetime,
    end: datetime,
    currency: str,
) -> QuerySet[Any]:
    return model.objects.filter(
        scope_filter(scopes, prefixes), currency=currency, bucket__gte=start, bucket__lt=end
    ).order_by()


def hourly_amounts(
    *,
    start: datetime,
    end: datetime,
    scopes: Iterable[str] | None = None,
    prefixes: Sequence[str] | None = None,
    currency: str = "USD",
) -> dict[str, dict[datetime, Decimal]]:
    """{scope: {hour bucket: amount}} for the rollup rows in [hour_floor(start), end) (no zero rows)."""
    out: dict[str, dict[datetime, Decimal]] = defaultdict(dict)
    rows = _rows(SpendRollup, scopes=scopes, prefixes=prefixes, start=hour_floor(start), end=end, currency=currency)
    for scope, bucket, amount in rows.values_list("scope", "bucket", "amount").iterator(chunk_size=5000):
        out[scope][bucket.astimezone(UTC)] = amount
    return dict(out)


def daily_amounts(
    *,
    days: Sequence[date],
    scopes: Iterable[str] | None = None,
    prefixes: Sequence[str] | None = None,
    currency: str = "USD",
    tz: ZoneInfo | None = None,
) -> dict[str, list[Decimal]]:
    """{scope: [amount of each local day in `days`]} (consecutive days)."""
    if not days:
        return {}
    tz = tz or local_tz()
    bounds = [local_midnight(day, tz) for day in days] + [local_midnight(days[-1] + DAY, tz)]
    out: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * len(days))
    if all(b.hour == 0 for b in bounds):
        rows = _rows(
            SpendRollupDay, scopes=scopes, prefixes=prefixes, start=bounds[0], end=bounds[-1], currency=currency
        )
    else:
        rows = _rows(SpendRollup, scopes=scopes, prefixes=prefixes, start=bounds[0], end=bounds[-1], currency=currency)
    for scope, bucket, amount in rows.values_list("scope", "bucket", "amount").iterator(chunk_size=5000):
        index = bisect_right(bounds, bucket.astimezone(UTC)) - 1
        if 0 <= index < len(days):
            out[scope][index] += amount
    return dict(out)


def spend_series(*, scope: str, start: datetime, end: datetime, step: str, currency: str = "USD") -> list[Point]:
    """One scope's spend per hour ("hour") or per local day ("day") over [start, end), zeros filled."""
    return spend_series_many(scopes=[scope], start=start, end=end, step=step, currency=currency).get(scope) or [
        Point(p, ZERO) for p in _starts(start, end, step)
    ]


def _starts(start: datetime, end: datetime, step: str) -> list[datetime]:
    if step == "hour":
        return hour_buckets(start, end)
    if step == "day":
        return [local_midnight(day) for day in local_days(start, end)]
    raise ValueError(f"step must be 'hour' or 'day', not {step!r}")


def spend_series_many(
    *,
    start: datetime,
    end: datetime,
    step: str,
    scopes: Iterable[str] | None = None,
    prefixes: Sequence[str] | None = None,
    currency: str = "USD",
) -> dict[str, list[Point]]:
    """Series of several scopes (named, or every scope under a prefix such as "provider:"); each
    scope listed in `scopes` gets a series even when it spent nothing."""
    starts = _starts(start, end, step)
    wanted = list(scopes or [])
    if step == "hour":
        amounts = hourly_amounts(start=start, end=end, scopes=scopes, prefixes=prefixes, currency=currency)
        series = {s: [Point(b, by_hour.get(b, ZERO)) for b in starts] for s, by_hour in amounts.items()}
    else:
        days = local_days(start, end)
        by_day = daily_amounts(days=days, scopes=scopes, prefixes=prefixes, currency=currency)
        series = {s: [Point(b, a) for b, a in zip(starts, values, strict=True)] for s, values in by_day.items()}
    for scope in wanted:
        series.setdefault(scope, [Point(b, ZERO) for b in starts])
    return series


def scope_value(scope: str) -> str:
    """ "model:gpt-4o" and a team's copy "team:ml/model:gpt-4o" -> "gpt-4o"; "global" and "team:ml" -> "global"."""
    inner = scope_inner(scope)
    return inner.partition(":")[2] or inner


def scope_kind(scope: str) -> str:
    """The dimension a scope counts, a team's copy like the organisation's: "team:ml/model:x" -> "model",
    "team:ml" -> "global"."""
    return scope_inner(scope).partition(":")[0]
