"""Spend anomalies per dimension, with the child dimension that explains them.

Baseline (per scope and UTC hour h): the spend of the same scope at h - 1 week, h - 2 weeks, ...
h - HISTORY_WEEKS weeks (the same hour of the week), counting only the weeks since the scope was
first seen (its first daily rollup). Expected = their median; spread = 1.4826 x their median
absolute deviation (MAD), floored at REL_FLOOR of the median and ABS_FLOOR, so a scope whose
history is flat is not flagged for a few cents. score = (actual - expected) / spread.

An hour is anomalous when score >= threshold and the scope has at least MIN_SAMPLES weeks of
history (a new scope is never flagged itself, however much it spends: it shows as the root cause
of its parents instead). Consecutive anomalous hours of one scope make one anomaly; its excess
(actual - expected, summed) must reach min_excess. Only spikes are reported: a drop saves money.

Every scope of every dimension (global, provider, model, service, subject) is scored on its own,
so a spike in one model is not hidden by a drop in another.

Root cause. Rollups hold one dimension per row (model:X does not know which service called it),
so an anomaly of scope P is attributed by coincident excess: every scope C of the child dimensions
(see CHILD_DIMENSIONS; e.g. model, subject and operation for a provider) gets its own excess over
the same hours against its own baseline (a scope with no history expects 0). C can be part of P
only if its excess fits in what P spent in those hours; a provider's models are limited to the
models the price catalog lists for that provider (or for none). C's share = min(excess C, excess P) / excess P.
The root cause is, among the children explaining at least the best share minus TIE_MARGIN, the
one that expected to spend least in those hours: the narrowest explanation (a subject that
usually spends 1 USD and now spends 50 beats the model it called, whose baseline is larger; a
model beats its provider; a scope never seen before expects 0 and beats them all). A simultaneous spike
elsewhere can be mistaken for a cause; the top child of each dimension is listed too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db import connection
from django.db.models import Min, Q

from core.db import fetch_all_prepared
from core.money import MONEY_PLACES, MONEY_QUANTUM, from_nanos, round_money
from tracking.models import Price, SpendRollup, SpendRollupDay

from .series import HOUR, ZERO, hour_buckets, scope_kind, scope_value

DIMENSIONS = ("global", "provider", "model", "service", "subject")
CHILD_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "global": ("provider", "service", "model", "subject", "operation"),
    "provider": ("model", "subject", "operation", "service"),
    "model": ("subject", "operation", "service"),
    "service": ("model", "subject", "operation"),
    "subject": ("model", "operation", "service"),
    "operation": ("model", "subject", "service"),
}
HISTORY_WEEKS = 8
MIN_SAMPLES = 3
THRESHOLD = Decimal(5)
MIN_EXCESS = Decimal("0.50")
REL_FLOOR = Decimal("0.10")
ABS_FLOOR = Decimal("0.05")
MAD_SCALE = Decimal("1.4826")
TIE_MARGIN = Decimal("0.05")
MAX_SCOPES_PER_DIMENSION = 200
WEEK = timedelta(weeks=1)
SEVERITY = ((Decimal(15), "critical"), (Decimal(8), "warning"), (Decimal(0), "info"))
_SCORE_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class Contributor:
    scope: str
    actual: Decimal
    expected: Decimal
    excess: Decimal
    share: Decimal  # of the parent's excess, 0..1
    score: Decimal

    @property
    def dimension(self) -> str:
        return scope_kind(self.scope)

    def as_dict(self) -> dict[str, str]:
        return {
            "scope": self.scope,
            "actual": str(self.actual),
            "expected": str(self.expected),
            "excess": str(self.excess),
            "share": str(self.share),
            "score": str(self.score),
        }


@dataclass(frozen=True)
class Anomaly:
    scope: str
    start: datetime  # first anomalous hour (UTC)
    end: datetime  # end of the last one
    actual: Decimal
    expected: Decimal
    excess: Decimal
    score: Decimal  # the highest hourly score
    severity: str  # info / warning / critical
    root_cause: Contributor | None
    contributors: list[Contributor] = field(default_factory=list)  # the top child of each dimension

    @property
    def dimension(self) -> str:
        return scope_kind(self.scope)

    @property
    def currency(self) -> str:
        return "USD"

    def describe(self) -> str:
        text = (
            f"{self.scope}: {self.actual:.2f} USD spent from {self.start:%Y-%m-%d %H:%M} to {self.end:%H:%M} UTC, "
            f"{self.expected:.2f} expected (+{self.excess:.2f}, score {self.score})"
        )
        if self.root_cause is not None:
            rc = self.root_cause
            text += f"; root cause {rc.scope} (+{rc.excess:.2f}, {rc.share * 100:.0f} % of the excess)"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "dimension": self.dimension,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "actual": str(self.actual),
            "expected": str(self.expected),
            "excess": str(self.excess),
            "score": str(self.score),
            "severity": self.severity,
            "root_cause": None if self.root_cause is None else self.root_cause.as_dict(),
            "contributors": [c.as_dict() for c in self.contributors],
            "description": self.describe(),
        }


@dataclass
class _Baseline:
    expected: Decimal
    spread: Decimal
    samples: int


def _median(values: Sequence[Decimal]) -> Decimal:
    return Decimal(statistics.median(values)) if values else Decimal(0)


def baseline(samples: Sequence[Decimal]) -> _Baseline:
    """Median and MAD-based spread of the same-hour-of-week samples."""
    if not samples:
        return _Baseline(Decimal(0), ABS_FLOOR, 0)
    median = _median(samples)
    mad = _median([abs(s - median) for s in samples])
    spread = max(MAD_SCALE * mad, REL_FLOOR * median, ABS_FLOOR)
    return _Baseline(median, spread, len(samples))


def severity_for(score: Decimal) -> str:
    for floor, name in SEVERITY:
        if score >= floor:
            return name
    return "info"


def _prefix_filter(dimensions: Iterable[str]) -> Q:
    condition = Q()
    for dimension in dimensions:
        condition |= Q(scope="global") if dimension == "global" else Q(scope__startswith=f"{dimension}:")
    return condition


# Rows travel as (scope, hours since the epoch, nano-units): integers compare, sort and add exactly
# and cost far less than datetimes and Decimals; a Decimal is made only for what is reported.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WEEK_HOURS = 168


def _epoch_hour(moment: datetime) -> int:
    return (moment - _EPOCH) // HOUR


def _nanos(amount: Decimal) -> int:
    return int(amount.scaleb(MONEY_PLACES))  # exact: a MoneyField holds whole nano-units


def _window_rows(dimensions: set[str], currency: str, start: datetime, end: datetime) -> Iterable[tuple[str, int, int]]:
    """(scope, epoch hour, nano-units) of the hourly rollups of `dimensions` in [start, end)."""
    if connection.vendor != "postgresql":
        rows = SpendRollup.objects.filter(
            _prefix_filter(dimensions), currency=currency, bucket__gte=start, bucket__lt=end
        ).order_by()
        for scope, bucket, amount in rows.values_list("scope", "bucket", "amount").iterator(chunk_size=5000):
            yield scope, _epoch_hour(bucket), _nanos(amount)
        return
    patterns = [f"{dimension}:%" for dimension in sorted(dimensions) if dimension != "global"]
    yield from _raw_rollup_rows(
        "(r.scope = 'global' AND %s) OR r.scope LIKE ANY(%s::text[])",
        ["global" in dimensions, patterns],
        "r.bucket >= %s AND r.bucket < %s",
        [start, end],
        currency,
    )


def _history_rows(scopes: list[str], currency: str, buckets: list[datetime]) -> Iterable[tuple[str, int, int]]:
    """(scope, epoch hour, nano-units) of the hourly rollups of `scopes` at `buckets`."""
    if connection.vendor != "postgresql":
        rows = SpendRollup.objects.filter(scope__in=scopes, currency=currency, bucket__in=buckets).order_by()
        for scope, bucket, amount in rows.values_list("scope", "bucket", "amount").iterator(chunk_size=5000):
            yield scope, _epoch_hour(bucket), _nanos(amount)
        return
    # Thousands of buckets: one array parameter, not a bound parameter each.
    yield from _raw_rollup_rows(
        "r.scope = ANY(%s::text[])", [scopes], "r.bucket = ANY(%s::timestamptz[])", [buckets], currency
    )


def _raw_rollup_rows(
    scopes_sql: str, scopes_params: list[Any], buckets_sql: str, buckets_params: list[Any], currency: str
) -> list[tuple[str, int, int]]:
    """PostgreSQL: the rows as (scope, hours since the epoch, nano-units), read through a prepared
    statement (Django's converters and psycopg's timestamp parsing cost more than the query)."""
    sql = (
        f"SELECT r.scope, (EXTRACT(EPOCH FROM r.bucket) / 3600)::bigint, r.amount"
        f" FROM {SpendRollup._meta.db_table} r"
        f" WHERE ({scopes_sql}) AND r.currency = %s AND {buckets_sql}"
    )
    return fetch_all_prepared(sql, [*scopes_params, currency, *buckets_params])  # type: ignore[return-value]


def _ratio(value: Decimal) -> tuple[int, int]:
    numerator, denominator = value.as_integer_ratio()
    return numerator, denominator


def _spread_factors() -> tuple[int, int, int, int]:
    """(denominator, MAD_SCALE, REL_FLOOR, ABS_FLOOR in quarter nano-units), each x denominator: the
    spread max(MAD_SCALE x mad, REL_FLOOR x median, ABS_FLOOR) as an exact integer."""
    (ms_n, ms_d), (rf_n, rf_d), (af_n, af_d) = _ratio(MAD_SCALE), _ratio(REL_FLOOR), _ratio(ABS_FLOOR * 4 * 10**9)
    denominator = math.lcm(ms_d, rf_d, af_d)
    return denominator, ms_n * (denominator // ms_d), rf_n * (denominator // rf_d), af_n * (denominator // af_d)


def _int_baseline(values: list[int], factors: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """baseline() of nano-unit samples in exact integers: (4 x median, spread, samples), the median
    in quarter nano-units, the spread in quarter nano-units x factors[0] (see _spread_factors)."""
    _, mad_factor, rel_factor, abs_floor = factors
    n = len(values)
    if n == 0:
        return 0, abs_floor, 0
    values = sorted(values)
    middle = n // 2
    # x4: the median of an even count is a half nano-unit, the MAD of one a quarter.
    median4 = 4 * values[middle] if n % 2 else 2 * (values[middle - 1] + values[middle])
    deviations = sorted(abs(4 * v - median4) for v in values)
    mad4 = deviations[middle] if n % 2 else (deviations[middle - 1] + deviations[middle]) // 2
    return median4, max(mad_factor * mad4, rel_factor * median4, abs_floor), n


class _Store:
    """The rollups one window needs, read once and shared by every question asked about that
    window (spend_anomalies, anomaly_summaries): the hourly rows of the window per dimension, the
    same hours 1..weeks weeks before per scope (read only for the scopes a question needs), each
    scope's first day, and the baselines computed from them."""

    def __init__(self, *, hours: list[datetime], currency: str, weeks: int) -> None:
        self.hours = hours
        self.hour_ids = [_epoch_hour(h) for h in hours]
        self.currency = currency
        self.weeks = weeks
        self.dimensions: set[str] = set()
        self.actual: dict[str, dict[int, int]] = {}  # positive amounts only
        self.totals: dict[str, int] = {}
        self.history: dict[str, dict[int, int]] = {}
        self.history_loaded: set[tuple[str, int]] = set()  # (scope, window hour) whose history was read
        self.first_loaded: set[str] = set()
        self.first_hour: dict[str, int] = {}  # epoch hour of the UTC midnight of the scope's first day
        self.negative: set[str] = set()  # scopes with a negative amount in their history
        self._stats: dict[tuple[str, int], tuple[int, int, int]] = {}
        self._baselines: dict[tuple[str, int], _Baseline] = {}
        self._catalog: dict[str, set[str]] | None = None
        self._factors = _spread_factors()
        self._denominator = self._factors[0]

    def catalog_models(self) -> dict[str, set[str]]:
        if self._catalog is None:
            self._catalog = _catalog_models()
        return self._catalog

    def load_dimensions(self, dimensions: set[str]) -> None:
        """Read the window's rows of `dimensions`. More dimensions than were read re-read them all in
        one statement: scopes keep the order of one statement's rows, as when asked alone (a tie
        between two children's shares is broken by that order)."""
        if dimensions <= self.dimensions:
            return
        self.dimensions |= dimensions
        actual: dict[str, dict[int, int]] = {}
        totals: dict[str, int] = {}
        for scope, hour, amount in _window_rows(self.dimensions, self.currency, self.hours[0], self.hours[-1] + HOUR):
            if amount <= 0:
                continue
            by_hour = actual.get(scope)
            if by_hour is None:
                by_hour = actual[scope] = {}
                totals[scope] = 0
            by_hour[hour] = amount
            totals[scope] += amount
        self.actual, self.totals = actual, totals

    def load_history(self, scopes: Iterable[str], hours: Iterable[int] | None = None) -> None:
        """Read the history of `scopes` at `hours` of the window (default: every hour), and their
        first days, unless already read: one statement per 500 scopes, plus one for first days."""
        hours = sorted(set(self.hour_ids if hours is None else hours))
        loaded = self.history_loaded
        missing = sorted({s for s in scopes for h in hours if (s, h) not in loaded})
        if not missing or not hours:
            return
        loaded.update((s, h) for s in missing for h in hours)
        start = self.hours[0]
        buckets = sorted(
            {start + HOUR * (h - self.hour_ids[0]) - WEEK * k for h in hours for k in range(1, self.weeks + 1)}
        )
        history, negative = self.history, self.negative
        for chunk in (missing[i : i + 500] for i in range(0, len(missing), 500)):
            for scope, hour, amount in _history_rows(chunk, self.currency, buckets):
                by_hour = history.get(scope)
                if by_hour is None:
                    by_hour = history[scope] = {}
                by_hour[hour] = amount
                if amount < 0:
                    negative.add(scope)
        first_missing = [s for s in missing if s not in self.first_loaded]
        self.first_loaded.update(first_missing)
        for chunk in (first_missing[i : i + 500] for i in range(0, len(first_missing), 500)):
            rows = (
                SpendRollupDay.objects.filter(scope__in=chunk, currency=self.currency)
                .values("scope")
                .annotate(first=Min("bucket"))
                .order_by()
            )
            for row in rows:
                day = row["first"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                self.first_hour[row["scope"]] = _epoch_hour(day)

    def samples(self, scope: str, hour: int) -> list[int]:
        """The same hour 1..weeks weeks before, since the scope's first day (0 where nothing was spent).
        A scope never seen has no samples (its first day is unknown, as before: no history)."""
        first = self.first_hour.get(scope)
        if first is None:
            return []
        history = self.history.get(scope, {})
        return [
            history.get(hour - _WEEK_HOURS * k, 0) for k in range(1, self.weeks + 1) if hour - _WEEK_HOURS * k >= first
        ]

    def stats(self, scope: str, hour: int) -> tuple[int, int, int]:
        """(4 x median, spread, samples) in exact integers: the median and the spread in units of
        1/4 nano-unit, the spread further multiplied by _denominator. The same figures as
        baseline() on the same samples as Decimals, without rounding anywhere."""
        key = (scope, hour)
        cached = self._stats.get(key)
        if cached is not None:
            return cached
        cached = _int_baseline(self.samples(scope, hour), self._factors)
        self._stats[key] = cached
        return cached

    def baseline(self, scope: str, hour: int) -> _Baseline:
        """The Decimal baseline, from baseline() itself (only for what is reported or scored close
        to the threshold)."""
        key = (scope, hour)
        cached = self._baselines.get(key)
        if cached is None:
            cached = self._baselines[key] = baseline([from_nanos(v) for v in self.samples(scope, hour)])
        return cached

    def actual_at(self, scope: str, hour: int) -> Decimal:
        amount = self.actual.get(scope, {}).get(hour)
        return ZERO if amount is None else from_nanos(amount)

    def keep(self, dimensions: set[str], only: set[str] | None) -> list[str]:
        """The scopes of `dimensions` a question works on, in the order the window's rows showed them:
        the biggest spenders of each dimension (bounded work) and every scope asked for."""
        keep: set[str] = set(only or ()) & set(self.totals)
        by_dimension: dict[str, list[str]] = {}
        for scope in self.totals:
            kind = scope_kind(scope)
            if kind in dimensions:
                by_dimension.setdefault(kind, []).append(scope)
        for scopes in by_dimension.values():
            scopes.sort(key=self.totals.__getitem__, reverse=True)
            keep.update(scopes[:MAX_SCOPES_PER_DIMENSION])
        return [s for s in self.actual if s in keep]


class _Data:
    """One question's view of a _Store: the kept scopes of its dimensions (children included)."""

    def __init__(self, store: _Store, *, wanted: set[str], children: set[str], only: set[str] | None) -> None:
        self.store = store
        store.load_dimensions(wanted | children)
        self.kept = store.keep(wanted | children, only)
        self.scored = [s for s in self.kept if (s in only if only is not None else scope_kind(s) in wanted)]


class AnomalyReads:
    """Rollups read by spend_anomalies, kept for the questions that follow: questions about the same
    window (hours, currency and weeks of history) share one read of the window and read each
    scope's history once, and a baseline is computed once per scope and hour. Holds the rollups as
    they were when read: make one per request or per evaluation pass, never keep one longer."""

    def __init__(self) -> None:
        self._stores: dict[tuple[datetime, datetime, str, int], _Store] = {}

    def store(self, hours: list[datetime], currency: str, weeks: int) -> _Store:
        key = (hours[0], hours[-1], currency, weeks)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = _Store(hours=hours, currency=currency, weeks=weeks)
        return store

    def prepare(
        self,
        *,
        start: datetime,
        end: datetime,
        dimensions: Iterable[str],
        currency: str = "USD",
        weeks: int = HISTORY_WEEKS,
    ) -> None:
        """Read the window's rows of every dimension the coming questions need in one statement."""
        hours = hour_buckets(start, end)
        if hours:
            wanted = set(dimensions)
            wanted |= {c for d in wanted for c in CHILD_DIMENSIONS.get(d, ())}
            self.store(hours, currency, weeks).load_dimensions(wanted)


def spend_anomalies(
    *,
    start: datetime,
    end: datetime,
    dimensions: Sequence[str] = DIMENSIONS,
    scopes: Iterable[str] | None = None,
    threshold: Decimal = THRESHOLD,
    min_excess: Decimal = MIN_EXCESS,
    weeks: int = HISTORY_WEEKS,
    currency: str = "USD",
    reads: AnomalyReads | None = None,
) -> list[Anomaly]:
    """Anomalies in the hours of [start, end) of every scope of `dimensions` (or only `scopes`),
    worst first (see the module docstring for the method). `reads` shares the rollups read with
    other questions of the same request or pass (the results are the same with or without)."""
    hours = hour_buckets(start, end)
    if not hours:
        return []
    only = set(scopes) if scopes is not None else None
    wanted_dimensions = {scope_kind(s) for s in only} if only is not None else set(dimensions)
    children = {c for d in wanted_dimensions for c in CHILD_DIMENSIONS.get(d, ())}
    store = (reads or AnomalyReads()).store(hours, currency, weeks)
    data = _Data(store, wanted=wanted_dimensions, children=children, only=only)
    # score >= threshold is decided on exact integers first: an hour below it by more than the
    # Decimal arithmetic could round (28 digits; a margin of 1e-20 of the threshold) is passed over,
    # any other is scored as before, in Decimal, so the result is the Decimal one.
    t_num, t_den = _ratio(threshold)
    margin_num = t_num * 10**20 - abs(t_num)  # threshold x (1 - 1e-20), over t_den x 10^20
    lhs_factor = store._denominator * t_den * 10**20
    # Hourly rollups are never negative (a correction lands in its entry's hour and a corrected
    # total is >= 0), so a median is >= 0 and a score >= threshold > 0 needs actual >= threshold x
    # ABS_FLOOR (spread >= ABS_FLOOR): the history of other hours is not read. A scope whose history
    # turns out negative anyway is scored in every hour.
    if threshold > 0:
        af_num, af_den = _ratio(ABS_FLOOR)
        floor_lhs, floor_rhs = t_den * af_den * 10**20, margin_num * af_num * 10**MONEY_PLACES
        candidates = {
            scope: [h for h, amount in store.actual[scope].items() if amount * floor_lhs >= floor_rhs]
            for scope in data.scored
        }
    else:
        candidates = {scope: store.hour_ids for scope in data.scored}
    _load_history_by_hours(store, candidates)
    full = {s: store.hour_ids for s in data.scored if s in store.negative}
    _load_history_by_hours(store, full)
    anomalies: list[Anomaly] = []
    for scope in sorted(data.scored):
        by_hour = store.actual.get(scope, {})
        flagged: list[tuple[int, Decimal]] = []
        for hour in sorted(full.get(scope) or candidates[scope]):
            median4, spread, samples = store.stats(scope, hour)
            if samples < MIN_SAMPLES:
                continue
            if (4 * by_hour.get(hour, 0) - median4) * lhs_factor < margin_num * spread:
                continue
            base = store.baseline(scope, hour)
            score = (store.actual_at(scope, hour) - base.expected) / base.spread
            if score >= threshold:
                flagged.append((hour, score))
        for run in _runs(flagged):
            anomaly = _anomaly(data, scope, run, store.catalog_models())
            if anomaly.excess >= min_excess:
                anomalies.append(anomaly)
    anomalies.sort(key=lambda a: (-a.score, -a.excess, a.scope))
    return anomalies


def _load_history_by_hours(store: _Store, hours_by_scope: dict[str, list[int]]) -> None:
    """The history of each scope at its hours, scopes grouped by the same hours (few statements)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for scope, hours in hours_by_scope.items():
        if hours:
            groups.setdefault(tuple(sorted(hours)), []).append(scope)
    # Scopes that need a subset of the window's hours are read with the widest group's hours when
    # that saves statements: the rows of a few extra hours cost less than a statement each.
    if len(groups) > 1:
        union = sorted({h for hours in groups for h in hours})
        store.load_history([s for scopes in groups.values() for s in scopes], union)
    else:
        for hours, scopes in groups.items():
            store.load_history(scopes, hours)


def _runs(flagged: list[tuple[int, Decimal]]) -> list[list[tuple[int, Decimal]]]:
    runs: list[list[tuple[int, Decimal]]] = []
    for hour, score in flagged:
        if runs and runs[-1][-1][0] + 1 == hour:
            runs[-1].append((hour, score))
        else:
            runs.append([(hour, score)])
    return runs


def _anomaly(data: _Data, scope: str, run: list[tuple[int, Decimal]], catalog_models: dict[str, set[str]]) -> Anomaly:
    store = data.store
    hours = [hour for hour, _ in run]
    actual = sum((store.actual_at(scope, h) for h in hours), Decimal(0))
    expected = round_money(sum((store.baseline(scope, h).expected for h in hours), Decimal(0)))
    excess = actual - expected
    score = max(s for _, s in run).quantize(_SCORE_PLACES, ROUND_HALF_EVEN)
    contributors = _contributors(data, scope, hours, actual=actual, excess=excess, catalog_models=catalog_models)
    return Anomaly(
        scope=scope,
        start=_EPOCH + HOUR * hours[0],
        end=_EPOCH + HOUR * (hours[-1] + 1),
        actual=actual.quantize(MONEY_QUANTUM),
        expected=expected,
        excess=excess.quantize(MONEY_QUANTUM),
        score=score,
        severity=severity_for(score),
        root_cause=_root_cause(contributors),
        contributors=_top_per_dimension(contributors),
    )


def _contributors(
    data: _Data,
    parent: str,
    hours: list[int],
    *,
    actual: Decimal,
    excess: Decimal,
    catalog_models: dict[str, set[str]],
) -> list[Contributor]:
    store = data.store
    kind = scope_kind(parent)
    dimensions = CHILD_DIMENSIONS.get(kind, ())
    provider = scope_value(parent) if kind == "provider" else None
    parent_actual4 = 4 * _nanos(actual)
    candidates = []
    for child in data.kept:
        child_kind = scope_kind(child)
        if child_kind not in dimensions or child == parent:
            continue
        if (
            child_kind == "model"
            and provider is not None
            and not _may_belong(scope_value(child), provider, catalog_models)
        ):
            continue
        # A child that spent nothing in these hours has an excess <= 0 (its history is never
        # negative, see spend_anomalies), unless its history read so far says otherwise.
        by_hour = store.actual[child]
        if child in store.negative or any(h in by_hour for h in hours):
            candidates.append(child)
    store.load_history(candidates, hours)
    found = []
    for child in candidates:
        # The same test as below, exactly, in quarter nano-units: most children fail it.
        by_hour = store.actual[child]
        excess4 = sum(4 * by_hour.get(h, 0) - store.stats(child, h)[0] for h in hours)
        if excess4 <= 0 or excess4 > parent_actual4:
            continue
        child_actual = sum((store.actual_at(child, h) for h in hours), Decimal(0))
        bases = [store.baseline(child, h) for h in hours]
        child_expected = sum((b.expected for b in bases), Decimal(0))
        child_excess = child_actual - child_expected
        if child_excess <= 0 or child_excess > actual:
            continue  # no extra spend, or more extra than the parent spent: not (only) inside it
        spread = sum((b.spread**2 for b in bases), Decimal(0)).sqrt()
        share = min(child_excess, excess) / excess if excess > 0 else Decimal(0)
        found.append(
            Contributor(
                scope=child,
                actual=child_actual.quantize(MONEY_QUANTUM),
                expected=round_money(child_expected),
                excess=round_money(child_excess),
                share=share.quantize(Decimal("0.0001"), ROUND_HALF_EVEN),
                score=(child_excess / spread).quantize(_SCORE_PLACES, ROUND_HALF_EVEN),
            )
        )
    return found


def _root_cause(contributors: list[Contributor]) -> Contributor | None:
    if not contributors:
        return None
    best_share = max(c.share for c in contributors)
    close = [c for c in contributors if c.share >= best_share - TIE_MARGIN]
    # The narrowest explanation: the child that expected to spend least in those hours.
    return min(close, key=lambda c: (c.expected, -c.score, c.scope))


def _top_per_dimension(contributors: list[Contributor]) -> list[Contributor]:
    best: dict[str, Contributor] = {}
    for c in contributors:
        current = best.get(c.dimension)
        if current is None or (c.share, c.score) > (current.share, current.score):
            best[c.dimension] = c
    return sorted(best.values(), key=lambda c: (-c.share, -c.score))


def _may_belong(model: str, provider: str, catalog_models: dict[str, set[str]]) -> bool:
    """A model the catalog prices for this provider, or for no provider at all (explicit amounts)."""
    if model in catalog_models.get(provider, ()):
        return True
    return not any(model in models for models in catalog_models.values())


def _catalog_models() -> dict[str, set[str]]:
    """{provider: the models the catalog prices for it} (any version)."""
    models: dict[str, set[str]] = {}
    for provider, model in Price.objects.values_list("provider", "model").distinct().order_by():
        models.setdefault(provider, set()).add(model)
    return models
