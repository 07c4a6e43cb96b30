"""The reference implementation of analytics.anomalies as of commit a44cca5 (Decimal baselines per
scope and hour, every kept scope's history read): the fast path must give exactly its results.
Kept verbatim apart from this paragraph and its imports; not used by the application.

Spend anomalies per dimension, with the child dimension that explains them.

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

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db import connection
from django.db.models import Min, Q

from analytics.series import HOUR, ZERO, hour_buckets, scope_kind, scope_value
from core.db import fetch_all_prepared
from core.money import MONEY_QUANTUM, round_money
from tracking.models import Price, SpendRollup, SpendRollupDay

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


def _window_rows(
    dimensions: set[str], currency: str, start: datetime, end: datetime
) -> Iterable[tuple[str, datetime, Decimal]]:
    """(scope, UTC hour, amount) of the hourly rollups of `dimensions` in [start, end)."""
    if connection.vendor != "postgresql":
        rows = SpendRollup.objects.filter(
            _prefix_filter(dimensions), currency=currency, bucket__gte=start, bucket__lt=end
        ).order_by()
        for scope, bucket, amount in rows.values_list("scope", "bucket", "amount").iterator(chunk_size=5000):
            yield scope, bucket.astimezone(UTC), amount
        return
    patterns = [f"{dimension}:%" for dimension in sorted(dimensions) if dimension != "global"]
    yield from _raw_rollup_rows(
        "(r.scope = 'global' AND %s) OR r.scope LIKE ANY(%s::text[])",
        ["global" in dimensions, patterns],
        "r.bucket >= %s AND r.bucket < %s",
        [start, end],
        currency,
    )


def _history_rows(scopes: list[str], currency: str, buckets: list[datetime]) -> Iterable[tuple[str, datetime, Decimal]]:
    """(scope, UTC hour, amount) of the hourly rollups of `scopes` at `buckets`."""
    if connection.vendor != "postgresql":
        rows = SpendRollup.objects.filter(scope__in=scopes, currency=currency, bucket__in=buckets).order_by()
        for scope, bucket, amount in rows.values_list("scope", "bucket", "amount").iterator(chunk_size=5000):
            yield scope, bucket.astimezone(UTC), amount
        return
    # Thousands of buckets: one array parameter, not a bound parameter each.
    yield from _raw_rollup_rows(
        "r.scope = ANY(%s::text[])", [scopes], "r.bucket = ANY(%s::timestamptz[])", [buckets], currency
    )


def _raw_rollup_rows(
    scopes_sql: str, scopes_params: list[Any], buckets_sql: str, buckets_params: list[Any], currency: str
) -> Iterable[tuple[str, datetime, Decimal]]:
    """PostgreSQL: the rows as (scope, hours since the epoch, nano-units), turned into datetimes and
    Decimals here (Django's converters and psycopg's timestamp parsing cost more than the query)."""
    money = SpendRollup._meta.get_field("amount").from_db_value
    sql = (
        f"SELECT r.scope, (EXTRACT(EPOCH FROM r.bucket) / 3600)::bigint, r.amount"
        f" FROM {SpendRollup._meta.db_table} r"
        f" WHERE ({scopes_sql}) AND r.currency = %s AND {buckets_sql}"
    )
    hours: dict[int, datetime] = {}
    for scope, epoch_hour, amount in fetch_all_prepared(sql, [*scopes_params, currency, *buckets_params]):
        bucket = hours.get(epoch_hour)
        if bucket is None:
            bucket = hours[epoch_hour] = _EPOCH + HOUR * epoch_hour
        yield scope, bucket, money(amount, None, connection)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Data:
    """Window and history rollups of the scopes that spent in the window."""

    def __init__(
        self, *, hours: list[datetime], dimensions: set[str], only: set[str] | None, currency: str, weeks: int
    ) -> None:
        self.hours = hours
        self.weeks = weeks
        self.actual: dict[str, dict[datetime, Decimal]] = {}
        totals: dict[str, Decimal] = {}
        for scope, bucket, amount in _window_rows(dimensions, currency, hours[0], hours[-1] + HOUR):
            if amount <= 0:
                continue
            self.actual.setdefault(scope, {})[bucket] = amount
            totals[scope] = totals.get(scope, Decimal(0)) + amount
        # Bounded work: the biggest spenders of each dimension (and every scope asked for).
        keep: set[str] = set(only or ()) & set(totals)
        by_dimension: dict[str, list[str]] = {}
        for scope in totals:
            by_dimension.setdefault(scope_kind(scope), []).append(scope)
        for scopes in by_dimension.values():
            scopes.sort(key=lambda s: totals[s], reverse=True)
            keep.update(scopes[:MAX_SCOPES_PER_DIMENSION])
        self.actual = {s: v for s, v in self.actual.items() if s in keep}
        self.totals = {s: totals[s] for s in keep}
        history_buckets = sorted({h - WEEK * k for h in hours for k in range(1, weeks + 1)})
        self.history: dict[str, dict[datetime, Decimal]] = {}
        self.first_seen: dict[str, datetime] = {}
        scopes = sorted(keep)
        for chunk in (scopes[i : i + 500] for i in range(0, len(scopes), 500)):
            for scope, bucket, amount in _history_rows(chunk, currency, history_buckets):
                self.history.setdefault(scope, {})[bucket] = amount
            first = (
                SpendRollupDay.objects.filter(scope__in=chunk, currency=currency)
                .values("scope")
                .annotate(first=Min("bucket"))
                .order_by()
            )
            for row in first:
                self.first_seen[row["scope"]] = row["first"].astimezone(UTC)
        self._baselines: dict[tuple[str, datetime], _Baseline] = {}

    def baseline(self, scope: str, hour: datetime) -> _Baseline:
        key = (scope, hour)
        cached = self._baselines.get(key)
        if cached is None:
            first = self.first_seen.get(scope, hour)
            history = self.history.get(scope, {})
            samples = [
                history.get(hour - WEEK * k, ZERO)
                for k in range(1, self.weeks + 1)
                if hour - WEEK * k >= first.replace(hour=0, minute=0, second=0, microsecond=0)
            ]
            cached = self._baselines[key] = baseline(samples)
        return cached

    def actual_at(self, scope: str, hour: datetime) -> Decimal:
        return self.actual.get(scope, {}).get(hour, ZERO)


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
) -> list[Anomaly]:
    """Anomalies in the hours of [start, end) of every scope of `dimensions` (or only `scopes`),
    worst first (see the module docstring for the method)."""
    hours = hour_buckets(start, end)
    if not hours:
        return []
    only = set(scopes) if scopes is not None else None
    wanted_dimensions = {scope_kind(s) for s in only} if only is not None else set(dimensions)
    children = {c for d in wanted_dimensions for c in CHILD_DIMENSIONS.get(d, ())}
    data = _Data(hours=hours, dimensions=wanted_dimensions | children, only=only, currency=currency, weeks=weeks)
    catalog_models = _catalog_models()
    anomalies: list[Anomaly] = []
    for scope in sorted(data.actual):
        if only is not None and scope not in only:
            continue
        if only is None and scope_kind(scope) not in wanted_dimensions:
            continue
        flagged: list[tuple[datetime, Decimal]] = []
        for hour in hours:
            base = data.baseline(scope, hour)
            if base.samples < MIN_SAMPLES:
                continue
            actual = data.actual_at(scope, hour)
            score = (actual - base.expected) / base.spread
            if score >= threshold:
                flagged.append((hour, score))
        for run in _runs(flagged):
            anomaly = _anomaly(data, scope, run, catalog_models)
            if anomaly.excess >= min_excess:
                anomalies.append(anomaly)
    anomalies.sort(key=lambda a: (-a.score, -a.excess, a.scope))
    return anomalies


def _runs(flagged: list[tuple[datetime, Decimal]]) -> list[list[tuple[datetime, Decimal]]]:
    runs: list[list[tuple[datetime, Decimal]]] = []
    for hour, score in flagged:
        if runs and runs[-1][-1][0] + HOUR == hour:
            runs[-1].append((hour, score))
        else:
            runs.append([(hour, score)])
    return runs


def _anomaly(
    data: _Data, scope: str, run: list[tuple[datetime, Decimal]], catalog_models: dict[str, set[str]]
) -> Anomaly:
    hours = [hour for hour, _ in run]
    actual = sum((data.actual_at(scope, h) for h in hours), Decimal(0))
    expected = round_money(sum((data.baseline(scope, h).expected for h in hours), Decimal(0)))
    excess = actual - expected
    score = max(s for _, s in run).quantize(_SCORE_PLACES, ROUND_HALF_EVEN)
    contributors = _contributors(data, scope, hours, actual=actual, excess=excess, catalog_models=catalog_models)
    return Anomaly(
        scope=scope,
        start=hours[0],
        end=hours[-1] + HOUR,
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
    hours: list[datetime],
    *,
    actual: Decimal,
    excess: Decimal,
    catalog_models: dict[str, set[str]],
) -> list[Contributor]:
    kind = scope_kind(parent)
    dimensions = CHILD_DIMENSIONS.get(kind, ())
    provider = scope_value(parent) if kind == "provider" else None
    found = []
    for child in data.actual:
        child_kind = scope_kind(child)
        if child_kind not in dimensions or child == parent:
            continue
        if (
            child_kind == "model"
            and provider is not None
            and not _may_belong(scope_value(child), provider, catalog_models)
        ):
            continue
        child_actual = sum((data.actual_at(child, h) for h in hours), Decimal(0))
        bases = [data.baseline(child, h) for h in hours]
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
