"""The one forecaster: what a scope will have spent at the end of a period, with an interval and the
moment it would cross a limit. Budgets (status, alerts, metrics, the daily report) and the dashboard
all forecast through `spend_forecasts`, so one period of one scope has one forecast everywhere.

History: the hourly rollups of the 28 whole UTC days before the forecast's hour (days before the scope
was first seen are not history).

- "hour-of-week", with 14 days of history or more: every remaining hour of the period is expected to
  cost the mean of the same UTC hour of the week in the history, moved along the daily trend (the
  least-squares line through the weekday-corrected daily totals): expected(h) = max(0, mean(hour of
  week of h) + slope x (h - the history's middle)). A quiet night or weekend does not drag a busy
  afternoon down, and a growing spend is not forecast at last month's level.
- "linear", with less: the mean spend per hour since the start of the day the scope was first seen
  continues.

The interval (90 %) is the least-squares prediction interval of the rest: the daily error (a day's
actual total minus what the method expected for it) over the days left, plus the uncertainty of the
level and of the trend carried that far; it never goes below what is spent.
tests/budgets/test_forecast.py backtests it on generated series (README: "How good is the forecast").

Money is exact: amounts are summed as integer nano-units; only the trend's confidence (a probability)
is computed in floats.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property, reduce

from django.db.models import BigIntegerField, ExpressionWrapper, F, Min, Q, Sum
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay

from core.money import ZERO, format_money, from_nanos, to_nanos
from core.periods import hour_floor
from tracking.models import SpendRollup, SpendRollupDay

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK_HOURS = 168
HISTORY_DAYS = 28
SEASONAL_DAYS = 14  # hour-of-week needs two weeks: every hour of the week seen twice
MIN_CONFIDENCE = Decimal("0.90")
MIN_CHANGE = Decimal("0.05")  # of the mean daily spend, over the whole history
INTERVAL = Decimal("0.90")
Z_90 = Decimal("1.6449")
_SCOPES_PER_READ = 200  # an OR per scope: well under SQLite's expression depth of 1,000


@dataclass(frozen=True)
class Forecast:
    """Spend projected at a period's end."""

    amount: Decimal
    low: Decimal
    high: Decimal
    method: str  # "hour-of-week" or "linear"
    exceed_at: datetime | None  # when the projection reaches the limit; None: not in this period (or no limit)
    interval: Decimal = INTERVAL

    def describe(self, currency: str) -> str:
        """ "712.40 USD (hour-of-week; 90 % interval 650.10-780.00)": what every screen shows."""
        cents = Decimal("0.01")
        return (
            f"{format_money(self.amount.quantize(cents), currency)} ({self.method}; {self.interval * 100:.0f} % "
            f"interval {self.low.quantize(cents):,f}-{self.high.quantize(cents):,f})"
        )


@dataclass(frozen=True)
class Question:
    """Forecast `scope`'s spend in `currency` over [start, end), `spent` so far (through the current hour)."""

    scope: str
    currency: str
    start: datetime
    end: datetime
    spent: Decimal
    limit: Decimal | None = None


def _how(moment: datetime) -> int:
    """0..167: the UTC hour of the week (Monday 00:00 is 0)."""
    return moment.weekday() * 24 + moment.hour


@dataclass
class _History:
    """One scope's history: spend per UTC hour of the week, per whole UTC day, and its first hour."""

    by_how: list[int]  # nano-units summed over the history, per hour of the week
    by_day: dict[datetime, int]  # nano-units per whole UTC day
    first: datetime | None  # the first hour with spend in the history
    seen_before: bool = False  # spent in the week before the history: the whole history counts


def _histories(keys: set[tuple[str, str]], *, since: datetime, until: datetime) -> dict[tuple[str, str], _History]:
    """The history of every (scope, currency) in [since, until), in four statements (the hourly one per
    200 scopes): hour-of-week sums of the hourly rollups, the daily rollups, who spent in the week
    before, and the first hour of the scopes first seen inside the history."""
    found = {key: _History([0] * WEEK_HOURS, {}, None) for key in keys}
    if not keys:
        return found
    scopes, currencies = {scope for scope, _ in keys}, {currency for _, currency in keys}
    nanos = BigIntegerField()  # the amounts as the integers of nano-units they are stored as
    window = SpendRollup.objects.filter(currency__in=currencies, bucket__gte=since, bucket__lt=until).order_by()
    ordered = sorted(scopes)
    for first in range(0, len(ordered), _SCOPES_PER_READ):
        # scope = a OR scope = b ...: PostgreSQL reads each scope's range of the (scope, bucket) index;
        # for `scope IN (...)` it scanned the whole window by bucket (2.5x slower at 200 k rows).
        which = reduce(operator.or_, (Q(scope=scope) for scope in ordered[first : first + _SCOPES_PER_READ]))
        hourly = (
            window.filter(which)
            .annotate(weekday=ExtractIsoWeekDay("bucket", tzinfo=UTC), hour=ExtractHour("bucket", tzinfo=UTC))
            .values_list("scope", "currency", "weekday", "hour")
            .annotate(total=Sum("amount", output_field=nanos))
        )
        for scope, currency, weekday, hour, total in hourly:
            if (history := found.get((scope, currency))) is not None:
                history.by_how[(weekday - 1) * 24 + hour] += total
    daily = SpendRollupDay.objects.filter(
        scope__in=scopes, currency__in=currencies, bucket__gte=since, bucket__lt=until
    ).values_list("scope", "currency", "bucket", ExpressionWrapper(F("amount"), output_field=nanos))
    for scope, currency, bucket, amount in daily:
        if (history := found.get((scope, currency))) is not None:
            history.by_day[bucket.astimezone(UTC)] = amount
    earlier = SpendRollupDay.objects.filter(
        scope__in=scopes, currency__in=currencies, bucket__gte=since - 7 * DAY, bucket__lt=since
    )
    for key in earlier.values_list("scope", "currency").distinct():
        if key in found:
            found[key].seen_before = True
    # A scope first seen inside the history: the first hour it spent, read from its first day alone.
    young = {
        key: min(d for d, a in h.by_day.items() if a)
        for key, h in found.items()
        if not h.seen_before and any(h.by_day.values())
    }
    if young:
        first_days = window.filter(
            scope__in={s for s, _ in young}, bucket__gte=min(young.values()), bucket__lt=max(young.values()) + DAY
        )
        rows = first_days.filter(amount__gt=0).values_list("scope", "currency").annotate(Min("bucket"))
        for scope, currency, first in rows:
            if (key := (scope, currency)) in young and young[key] <= first < young[key] + DAY:
                found[key].first = first.astimezone(UTC)
    return found


def spend_forecasts(questions: Sequence[Question], *, at: datetime) -> list[Forecast | None]:
    """The forecast of each question at `at` (None where the period never ends), their histories read
    together in four statements."""
    until = hour_floor(at)
    since = until.replace(hour=0) - HISTORY_DAYS * DAY
    wanted = {(q.scope, q.currency) for q in questions if q.end is not None and at < q.end}
    histories = _histories(wanted, since=since, until=until)
    return [
        None if q.end is None else _forecast(q, at=at, history=histories.get((q.scope, q.currency)), until=until)
        for q in questions
    ]


def _forecast(q: Question, *, at: datetime, history: _History | None, until: datetime) -> Forecast:
    spent = to_nanos(q.spent)
    if history is None or at >= q.end:  # the period is over: what was spent is what it cost
        return Forecast(q.spent, q.spent, q.spent, "linear", None)
    first, hours = until + HOUR, _hours_until(until + HOUR, q.end)
    model = _Model.fit(history, until=until)
    rest = model.total(first, hours)
    total = spent + rest
    half = _half_interval(model, first=first, hours=hours, rest=rest)
    limit = None if q.limit is None else to_nanos(q.limit)
    return Forecast(
        amount=from_nanos(total),
        low=from_nanos(max(spent, total - half)),
        high=from_nanos(total + half),
        method=model.method,
        exceed_at=None if limit is None or not spent < limit <= total else model.crossing(first, limit - spent),
    )


def _hours_until(start: datetime, end: datetime) -> int:
    """How many hour buckets from `start` (an hour) begin before `end`."""
    return max(0, math.ceil((end - start) / HOUR))


@dataclass
class _Model:
    """What one scope is expected to spend per hour, fitted on its history."""

    method: str
    profile: list[int]  # nano-units per hour of the week (hour-of-week), or the same rate 168 times (linear)
    slope_per_hour: int  # what an hour's expected spend grows by per hour from `middle` (nano-units; 0: no trend)
    middle: datetime
    days: list[tuple[datetime, int]]  # whole days of history and what each cost

    @classmethod
    def fit(cls, history: _History, *, until: datetime) -> _Model:
        since = until.replace(hour=0) - HISTORY_DAYS * DAY
        first = since if history.seen_before else (history.first or until)
        # Whole days only for the daily totals: a first day seen from noon is no quiet day.
        first_day = first if first == first.replace(hour=0) else first.replace(hour=0) + DAY
        days = [(day, history.by_day.get(day, 0)) for day in _days(first_day, until.replace(hour=0))]
        if len(days) < SEASONAL_DAYS:
            # From the start of the first day seen: one burst in a scope's first hour is not a rate.
            hours = (until - first.replace(hour=0)) // HOUR
            rate = sum(history.by_how) // hours if hours > 0 else 0
            return cls("linear", [rate] * WEEK_HOURS, 0, until, days)
        counts = _how_counts(first, until)
        profile = [total // count if count else 0 for total, count in zip(history.by_how, counts, strict=True)]
        slope = line_fit(weekday_corrected([Decimal(a) for _, a in days], [d for d, _ in days])).slope
        # The daily total grows by `slope` a day: an hour's share of it by slope / 24 a day, slope / 576 an hour.
        return cls("hour-of-week", profile, round(slope / 576), first + (until - first) / 2, days)

    def expected(self, hour: datetime) -> int:
        base = self.profile[_how(hour)]
        if self.slope_per_hour:
            base += self.slope_per_hour * ((hour - self.middle) // HOUR)
        return max(0, base)

    def total(self, first: datetime, hours: int) -> int:
        """What the `hours` hours from `first` are expected to cost, in closed form: the profile's part
        from its running sums, the trend's as an arithmetic series. Where a trend would take an hour
        below zero, each hour of the week is its own series, clamped at zero: a year costs at most 168
        sums, never 8,760 steps."""
        if hours <= 0:
            return 0
        offset = (first - self.middle) // HOUR  # hours from the middle to the first one
        start, slope = _how(first), self.slope_per_hour
        lowest = offset if slope > 0 else offset + hours - 1  # the hour the trend takes lowest
        if min(self.profile) + slope * lowest >= 0:
            weeks, extra = divmod(hours, WEEK_HOURS)
            running = self.running
            by_hour = weeks * running[WEEK_HOURS] + running[start + extra] - running[start]
            return by_hour + slope * (hours * offset + hours * (hours - 1) // 2)
        total = 0
        for j in range(min(hours, WEEK_HOURS)):
            count = (hours - j + WEEK_HOURS - 1) // WEEK_HOURS  # hours j, j + 168, ... before `hours`
            total += _clamped_series(
                self.profile[(start + j) % WEEK_HOURS] + slope * (offset + j), slope * WEEK_HOURS, count
            )
        return total

    @cached_property
    def running(self) -> list[int]:
        """Running sums of the profile over two weeks: running[i] is the sum of hours 0..i-1."""
        sums = [0]
        for value in self.profile + self.profile:
            sums.append(sums[-1] + value)
        return sums

    def crossing(self, first: datetime, needed: int) -> datetime:
        """When the hours from `first` will have cost `needed` (more than zero, at most their total):
        the day first, then the hour, then linearly within it."""
        day = first
        while (cost := self.total(day, 24)) < needed:
            needed -= cost
            day += DAY
        hour = day
        while (cost := self.expected(hour)) < needed:
            needed -= cost
            hour += HOUR
        return hour + HOUR * (needed / cost)


def _clamped_series(first: int, step: int, count: int) -> int:
    """sum(max(0, first + step * k) for k in range(count)), without the loop."""
    if count <= 0:
        return 0
    if step >= 0:
        skip = 0 if first >= 0 else (-first + step - 1) // step if step else count  # terms below zero
    else:
        skip = 0
        count = 0 if first < 0 else min(count, first // -step + 1)  # terms still at or above zero
    terms = count - skip
    if terms <= 0:
        return 0
    head = first + step * skip
    return terms * head + step * terms * (terms - 1) // 2


def _days(start: datetime, end: datetime) -> list[datetime]:
    return [start + DAY * i for i in range(max(0, (end - start) // DAY))]


def _how_counts(start: datetime, end: datetime) -> list[int]:
    """How many times each hour of the week occurs in the hours of [start, end)."""
    hours = (end - start) // HOUR
    weeks, extra = divmod(hours, WEEK_HOURS)
    counts = [weeks] * WEEK_HOURS
    first = _how(start)
    for i in range(extra):
        counts[(first + i) % WEEK_HOURS] += 1
    return counts


def _half_interval(model: _Model, *, first: datetime, hours: int, rest: int) -> int:
    """z(90 %) x the standard deviation of the rest of the period: the daily error (each day of history
    minus what the method expects for it) summed over the days left, plus the uncertainty of the level
    and, with a trend, of the slope carried that far (the ordinary least-squares prediction interval)."""
    errors = [actual - model.total(day, 24) for day, actual in model.days]
    if len(errors) < 2 or not hours:
        return rest  # a day of history or none: +/- 100 %
    mean = Decimal(sum(errors)) / len(errors)
    sd = (sum((Decimal(e) - mean) ** 2 for e in errors) / (len(errors) - 1)).sqrt()
    days, history = Decimal(hours) / 24, len(errors)
    variance = days + days * days / history
    if model.method == "hour-of-week":
        distance = Decimal((first + HOUR * hours / 2 - model.middle) / DAY)
        variance += (days * distance) ** 2 / (Decimal(history * (history * history - 1)) / 12)
    return int(Z_90 * sd * variance.sqrt())


# --- the daily trend ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineFit:
    slope: Decimal
    intercept: Decimal
    confidence: Decimal  # 1 - the two-sided p of "slope = 0"


def line_fit(values: list[Decimal], *, extra_parameters: int = 0) -> LineFit:
    """Ordinary least squares of values against 0..n-1, in Decimal."""
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
        t = float(slope / (sse / df / sxx).sqrt())
        confidence = Decimal(str(round(1.0 - t_two_sided_p(t, df), 4)))
    return LineFit(slope=slope, intercept=intercept, confidence=confidence)


def weekday_corrected(values: list[Decimal], days: list[datetime]) -> list[Decimal]:
    """Each day minus its weekday's mean deviation from the overall mean (a quiet weekend is no fall)."""
    mean = sum(values, Decimal(0)) / len(values)
    by_weekday: dict[int, list[Decimal]] = {}
    for value, day in zip(values, days, strict=True):
        by_weekday.setdefault(day.weekday(), []).append(value)
    offset = {weekday: sum(v, Decimal(0)) / len(v) - mean for weekday, v in by_weekday.items()}
    return [value - offset[day.weekday()] for value, day in zip(values, days, strict=True)]


@dataclass(frozen=True)
class Trend:
    direction: str  # "rising", "falling", "stable", or "unknown" (fewer than 3 days with spend)
    slope_per_day: Decimal  # money per day
    confidence: Decimal
    change_percent: Decimal | None  # slope x days / mean daily spend
    seasonal: bool  # weekday-corrected (two weeks or more)


def daily_trend(values: list[Decimal], days: list[datetime]) -> Trend:
    """The direction of daily totals (from the first day with spend): a line through them, weekday-
    corrected from two weeks on; rising or falling when it moves at least MIN_CHANGE of the mean over
    the days at MIN_CONFIDENCE or more."""
    first = next((i for i, v in enumerate(values) if v > 0), None)
    observed, observed_days = ([], []) if first is None else (values[first:], days[first:])
    if len(observed) < 3:
        return Trend("unknown", ZERO, Decimal(0), None, False)
    seasonal = len(observed) >= SEASONAL_DAYS
    fitted = weekday_corrected(observed, observed_days) if seasonal else observed
    fit = line_fit(fitted, extra_parameters=6 if seasonal else 0)
    mean = sum(observed, Decimal(0)) / len(observed)
    change = None if mean == 0 else (fit.slope * len(observed) * 100 / mean).quantize(Decimal("0.01"))
    moves = mean > 0 and abs(fit.slope) * len(observed) >= MIN_CHANGE * mean
    direction = "stable"
    if fit.confidence >= MIN_CONFIDENCE and moves:
        direction = "rising" if fit.slope > 0 else "falling"
    return Trend(direction, fit.slope, fit.confidence.quantize(Decimal("0.0001")), change, seasonal)


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
