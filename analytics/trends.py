"""Trends and forecasts of a scope's spend, from the rollups.

Direction: an ordinary least-squares line through the daily totals of the last `days` complete
local days. With two weeks or more, each day is first corrected by its weekday's deviation from
the mean (a quiet weekend is not a falling trend). The slope is money per day; its confidence is
1 - p of the two-sided t-test of "slope = 0" (Student's t with the residual degrees of freedom).
rising / falling when the confidence is at least MIN_CONFIDENCE and the line moves at least
MIN_CHANGE of the mean over the window; stable otherwise.

Forecast of the rest of a period (daily, weekly, monthly, ...):
- with HOUR_OF_WEEK_HISTORY (2 weeks) of hourly history: every remaining hour is expected to
  cost the mean of the same hour of the week over the last (up to) 4 weeks, plus the trend's
  slope when the direction is rising or falling ("hour-of-week");
- before that: the mean daily spend so far continues ("linear").
The interval is mean +/- z * sd(daily error) * sqrt(remaining days), z for INTERVAL_LEVEL (90 %),
where the daily error is each past day's total minus what the method would have expected for
it; it never goes below what is already spent.

Money is Decimal throughout; only the confidence (a probability) is computed in floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from core.money import MONEY_QUANTUM, round_money
from core.periods import period_bounds
from tracking.selectors import spend_total

from .series import (
    DAY,
    HOUR,
    ZERO,
    Point,
    hour_buckets,
    hour_floor,
    hourly_amounts,
    local_days,
    local_midnight,
    local_tz,
    spend_series,
)

MIN_CONFIDENCE = Decimal("0.90")
MIN_CHANGE = Decimal("0.05")  # of the mean daily spend, over the whole window
HOUR_OF_WEEK_HISTORY = timedelta(days=14)
PROFILE_WEEKS = 4
INTERVAL_LEVEL = Decimal("0.90")
Z_90 = Decimal("1.6449")
WEEK_HOURS = 168
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Forecast:
    period: str
    start: datetime
    end: datetime
    spent: Decimal  # so far (through the current hour)
    expected_rest: Decimal
    total: Decimal  # spent + expected_rest
    low: Decimal
    high: Decimal
    level: Decimal  # of the interval (0.90)
    method: str  # "hour-of-week" or "linear"


@dataclass(frozen=True)
class Trend:
    scope: str
    at: datetime
    days: int
    daily: list[Point]
    hourly: list[Point]
    direction: str  # "rising", "falling", "stable" or "unknown" (fewer than 3 days of data)
    slope_per_day: Decimal
    confidence: Decimal  # 0..1
    change_percent: Decimal | None  # slope x days / mean daily spend
    seasonal: bool  # weekday correction and hour-of-week forecast in use
    forecast: Forecast | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        f = self.forecast
        return {
            "scope": self.scope,
            "at": self.at.isoformat(),
            "direction": self.direction,
            "slope_per_day": str(self.slope_per_day),
            "confidence": str(self.confidence),
            "change_percent": None if self.change_percent is None else str(self.change_percent),
            "seasonal": self.seasonal,
            "daily": [{"start": p.start.isoformat(), "amount": str(p.amount)} for p in self.daily],
            "hourly": [{"start": p.start.isoformat(), "amount": str(p.amount)} for p in self.hourly],
            "forecast": None
            if f is None
            else {
                "period": f.period,
                "start": f.start.isoformat(),
                "end": f.end.isoformat(),
                "spent": str(f.spent),
                "expected_rest": str(f.expected_rest),
                "total": str(f.total),
                "low": str(f.low),
                "high": str(f.high),
                "level": str(f.level),
                "method": f.method,
            },
            "notes": self.notes,
        }


# --- statistics ------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if df <= 0:
        return 1.0
    if math.isinf(t):
        return 0.0
    return _betai(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class LineFit:
    slope: Decimal
    intercept: Decimal
    confidence: Decimal


def line_fit(values: list[Decimal], *, extra_parameters: int = 0) -> LineFit:
    """OLS of values against 0..n-1 in Decimal; confidence = 1 - two-sided p of the slope."""
    n = len(values)
    xs = [Decimal(i) for i in range(n)]
    mean_x = sum(xs, Decimal(0)) / n
    mean_y = sum(values, Decimal(0)) / n
    sxx = sum(((x - mean_x) ** 2 for x in xs), Decimal(0))
    sxy = sum(((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True)), Decimal(0))
    slope = sxy / sxx if sxx else Decimal(0)
    intercept = mean_y - slope * mean_x
    df = n - 2 - extra_parameters
    sse = sum(((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, values, strict=True)), Decimal(0))
    if df <= 0 or sxx == 0:
        confidence = Decimal(0)
    elif sse == 0:
        confidence = Decimal(1) if slope != 0 else Decimal(0)
    else:
        se = (sse / df / sxx).sqrt()
        t = float(slope / se)
        confidence = Decimal(str(round(1.0 - t_two_sided_p(t, df), 4)))
    return LineFit(slope=slope, intercept=intercept, confidence=confidence)


def _sd(values: list[Decimal]) -> Decimal:
    if len(values) < 2:
        return Decimal(0)
    mean = sum(values, Decimal(0)) / len(values)
    return (sum(((v - mean) ** 2 for v in values), Decimal(0)) / (len(values) - 1)).sqrt()


def _weekday_corrected(points: list[Point]) -> list[Decimal]:
    """Each day minus its weekday's mean deviation from the overall mean (local weekdays)."""
    tz = local_tz()
    values = [p.amount for p in points]
    mean = sum(values, Decimal(0)) / len(values)
    by_weekday: dict[int, list[Decimal]] = {}
    for p in points:
        by_weekday.setdefault(p.start.astimezone(tz).weekday(), []).append(p.amount)
    offset = {wd: sum(v, Decimal(0)) / len(v) - mean for wd, v in by_weekday.items()}
    return [p.amount - offset[p.start.astimezone(tz).weekday()] for p in points]


# --- the selector ------------------------------------------------------------------------------


def spend_trend(
    *,
    scope: str,
    at: datetime,
    days: int = 28,
    period: str = "monthly",
    hourly_hours: int = 168,
    currency: str = "USD",
) -> Trend:
    """Direction, slope and confidence of `scope`'s daily spend over the `days` complete local days
    before `at`, its hourly series over the last `hourly_hours` hours, and a forecast of the
    current `period` (a budget period kind)."""
    tz = local_tz()
    today = at.astimezone(tz).date()
    window_start = local_midnight(today - timedelta(days=days), tz)
    window_end = local_midnight(today, tz)
    daily = spend_series(scope=scope, start=window_start, end=window_end, step="day", currency=currency)
    next_hour = hour_floor(at) + HOUR
    hourly = spend_series(
        scope=scope, start=next_hour - HOUR * hourly_hours, end=next_hour, step="hour", currency=currency
    )
    first = _first_spend_day(daily)
    observed = daily[first:] if first is not None else []
    notes: list[str] = []
    seasonal = len(observed) >= 14
    direction, slope, confidence, change = "unknown", ZERO, Decimal(0), None
    if len(observed) >= 3:
        values = _weekday_corrected(observed) if seasonal else [p.amount for p in observed]
        fit = line_fit(values, extra_parameters=6 if seasonal else 0)
        mean = sum((p.amount for p in observed), Decimal(0)) / len(observed)
        slope, confidence = round_money(fit.slope), fit.confidence.quantize(Decimal("0.0001"))
        change = None if mean == 0 else (fit.slope * len(observed) * 100 / mean).quantize(_CENT, ROUND_HALF_EVEN)
        moves = mean > 0 and abs(fit.slope) * len(observed) >= MIN_CHANGE * mean
        direction = "stable"
        if confidence >= MIN_CONFIDENCE and moves:
            direction = "rising" if fit.slope > 0 else "falling"
    else:
        notes.append("fewer than 3 days with spend: no direction yet")
    forecast = spend_forecast(
        scope=scope,
        at=at,
        period=period,
        currency=currency,
        slope_per_day=slope if direction in ("rising", "falling") else ZERO,
    )
    return Trend(
        scope=scope,
        at=at,
        days=days,
        daily=daily,
        hourly=hourly,
        direction=direction,
        slope_per_day=slope,
        confidence=confidence,
        change_percent=change,
        seasonal=seasonal,
        forecast=forecast,
        notes=notes,
    )


def _first_spend_day(points: list[Point]) -> int | None:
    for index, point in enumerate(points):
        if point.amount > 0:
            return index
    return None


def spend_forecast(
    *, scope: str, at: datetime, period: str = "monthly", currency: str = "USD", slope_per_day: Decimal = ZERO
) -> Forecast | None:
    """Spend of `scope` at the end of the current `period`, with a 90 % interval (see module doc)."""
    start, end = period_bounds(period, at)
    if end is None:
        return None
    next_hour = hour_floor(at) + HOUR
    spent = spend_total(scope=scope, start=start, end=min(next_hour, end), currency=currency).quantize(MONEY_QUANTUM)
    remaining = hour_buckets(next_hour, end) if next_hour < end else []
    history_end = hour_floor(at)
    history_start = history_end - timedelta(weeks=PROFILE_WEEKS)
    by_hour = hourly_amounts(start=history_start, end=history_end, scopes=[scope], currency=currency).get(scope, {})
    first_seen = min(by_hour) if by_hour else None
    if first_seen is not None and history_end - first_seen >= HOUR_OF_WEEK_HISTORY:
        return _hour_of_week_forecast(
            period=period,
            start=start,
            end=end,
            spent=spent,
            remaining=remaining,
            by_hour=by_hour,
            first_seen=first_seen,
            history_end=history_end,
            slope_per_day=slope_per_day,
        )
    return _linear_forecast(period=period, start=start, end=end, spent=spent, remaining=remaining, by_hour=by_hour)


def _interval(
    spent: Decimal, rest: Decimal, daily_errors: list[Decimal], remaining_hours: int
) -> tuple[Decimal, Decimal]:
    if len(daily_errors) >= 2:
        half = Z_90 * _sd(daily_errors) * (Decimal(remaining_hours) / 24).sqrt()
    else:
        half = rest  # one day of history or none: +/- 100 %
    low = max(spent, spent + rest - half)
    return round_money(low), round_money(spent + rest + half)


def _hour_of_week_forecast(
    *,
    period: str,
    start: datetime,
    end: datetime,
    spent: Decimal,
    remaining: list[datetime],
    by_hour: dict[datetime, Decimal],
    first_seen: datetime,
    history_end: datetime,
    slope_per_day: Decimal,
) -> Forecast:
    history = [b for b in hour_buckets(max(first_seen, history_end - timedelta(weeks=PROFILE_WEEKS)), history_end)]
    sums: dict[int, Decimal] = {}
    counts: dict[int, int] = {}
    for bucket in history:
        how = _hour_of_week(bucket)
        sums[how] = sums.get(how, Decimal(0)) + by_hour.get(bucket, ZERO)
        counts[how] = counts.get(how, 0) + 1
    profile = {how: sums[how] / counts[how] for how in sums}
    # The profile is the level around the middle of the history; a trend moves it from there.
    middle = history[0] + (history[-1] - history[0]) / 2
    slope_per_hour = slope_per_day / 24

    def expected(bucket: datetime) -> Decimal:
        base = profile.get(_hour_of_week(bucket), Decimal(0))
        hours_from_middle = Decimal((bucket - middle) // HOUR)
        return max(Decimal(0), base + slope_per_hour * hours_from_middle)

    rest = sum((expected(b) for b in remaining), Decimal(0))
    # The method's error per local day over the history: actual - expected.
    tz = local_tz()
    actual_day: dict[object, Decimal] = {}
    expected_day: dict[object, Decimal] = {}
    for bucket in history:
        day = bucket.astimezone(tz).date()
        actual_day[day] = actual_day.get(day, Decimal(0)) + by_hour.get(bucket, ZERO)
        expected_day[day] = expected_day.get(day, Decimal(0)) + expected(bucket)
    errors = [actual_day[d] - expected_day[d] for d in actual_day]
    low, high = _interval(spent, rest, errors, len(remaining))
    rest = round_money(rest)
    return Forecast(period, start, end, spent, rest, spent + rest, low, high, INTERVAL_LEVEL, "hour-of-week")


def _linear_forecast(
    *,
    period: str,
    start: datetime,
    end: datetime,
    spent: Decimal,
    remaining: list[datetime],
    by_hour: dict[datetime, Decimal],
) -> Forecast:
    tz = local_tz()
    per_day: dict[object, Decimal] = {}
    for bucket, amount in by_hour.items():
        day = bucket.astimezone(tz).date()
        per_day[day] = per_day.get(day, Decimal(0)) + amount
    if by_hour:
        first, last = min(by_hour), max(by_hour)
        days = local_days(first, last + HOUR)
        values = [per_day.get(d, Decimal(0)) for d in days]
        hours = Decimal((last + HOUR - first) // HOUR)
        rate_per_hour = sum(values, Decimal(0)) / hours
    else:
        values, rate_per_hour = [], Decimal(0)
    rest = rate_per_hour * len(remaining)
    mean = sum(values, Decimal(0)) / len(values) if values else Decimal(0)
    low, high = _interval(spent, rest, [v - mean for v in values], len(remaining))
    rest = round_money(rest)
    return Forecast(period, start, end, spent, rest, spent + rest, low, high, INTERVAL_LEVEL, "linear")


def _hour_of_week(bucket: datetime) -> int:
    """0..167 in UTC: history is compared exactly 168 hours apart."""
    return bucket.weekday() * 24 + bucket.hour


__all__ = ["DAY", "Forecast", "Trend", "line_fit", "spend_forecast", "spend_trend", "t_two_sided_p"]
