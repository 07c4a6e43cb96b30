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
so a spike in one model is not hidden by a drop in another. A team's view scores its team's copies
of the scopes (team:NAME, team:NAME/model:X, ... core.scopes) instead of the organisation's; the
children of a scope are always of its own team (or of the organisation's for its scopes), so one
team's anomaly is never explained by, and never shows, another team's spend.

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
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from django.db.models import Min, Q, QuerySet, Sum

from core.money import MONEY_QUANTUM, ZERO, round_money
from core.scopes import scope_team, team_scope
from tracking.models import Price, SpendRollup, SpendRollupDay
from tracking.selectors import scope_filter

from .series import HOUR, hour_buckets, scope_kind, scope_value

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


class _Rollups:
    """The hourly rollups one question reads, and no more: the window's totals per scope (to keep the
    biggest spenders), the amounts of the scored scopes in the hours that may score, those of the
    children in a spike's hours, and the history (the same hour 1..weeks weeks before, and the first
    day) of only those scopes and hours; with the baselines computed from them."""

    def __init__(self, *, hours: list[datetime], currency: str, weeks: int) -> None:
        self.start, self.end = hours[0], hours[-1] + HOUR
        self.currency = currency
        self.weeks = weeks
        self.window: dict[str, dict[datetime, Decimal]] = {}  # the window's amounts read so far (> 0)
        self.history: dict[str, dict[datetime, Decimal]] = {}
        self.first_day: dict[str, datetime | None] = {}  # UTC midnight of the first daily rollup
        self._baselines: dict[tuple[str, datetime], _Baseline] = {}

    def _spent(self, condition: Q) -> QuerySet[SpendRollup]:
        return SpendRollup.objects.filter(
            condition, currency=self.currency, bucket__gte=self.start, bucket__lt=self.end, amount__gt=0
        ).order_by()

    def kept(self, *, dimensions: set[str], scopes: set[str], teams: set[str | None]) -> list[str]:
        """The scopes worked on, among those that spent in the window: each of `scopes`, and the
        biggest spenders of each of `dimensions` of each of `teams` (None: the organisation's
        scopes; a name: that team's copies of them), bounded work."""
        named, prefixes = set(scopes), []
        for team in teams:
            for d in sorted(dimensions):
                if team is None:
                    prefixes.append("global" if d == "global" else f"{d}:")
                elif d == "global":
                    named.add(team_scope(team))
                else:
                    prefixes.append(team_scope(team, f"{d}:"))
        totals = self._spent(scope_filter(named, prefixes)).values("scope").annotate(total=Sum("amount"))
        kept: set[str] = set()
        spenders: dict[tuple[str | None, str], list[tuple[Decimal, str]]] = {}
        for row in totals:
            scope = row["scope"]
            if scope in scopes:
                kept.add(scope)
            if scope_kind(scope) in dimensions and scope_team(scope) in teams:
                spenders.setdefault((scope_team(scope), scope_kind(scope)), []).append((row["total"], scope))
        for biggest in spenders.values():
            biggest.sort(key=lambda total_scope: (-total_scope[0], total_scope[1]))
            kept.update(scope for _, scope in biggest[:MAX_SCOPES_PER_DIMENSION])
        return sorted(kept)

    def read_window(
        self, scopes: list[str], *, hours: set[datetime] | None = None, floor: Decimal | None = None
    ) -> None:
        """Read the window's amounts of `scopes` (only at `hours`, only those of at least `floor`)."""
        condition = Q(scope__in=scopes)
        if hours is not None:
            condition &= Q(bucket__in=sorted(hours))
        if floor is not None:
            condition &= Q(amount__gte=floor)
        for scope, bucket, amount in self._spent(condition).values_list("scope", "bucket", "amount"):
            self.window.setdefault(scope, {})[bucket.astimezone(UTC)] = amount

    def read_history(self, hours_by_scope: dict[str, set[datetime]]) -> None:
        """Read the history of each scope at its hours, and the first days of the scopes not read
        yet: two statements for all (the scopes x the union of their hours)."""
        scopes = sorted(scope for scope, hours in hours_by_scope.items() if hours)
        if not scopes:
            return
        hours = set().union(*(hours_by_scope[scope] for scope in scopes))
        buckets = sorted({hour - WEEK * k for hour in hours for k in range(1, self.weeks + 1)})
        rows = SpendRollup.objects.filter(scope__in=scopes, currency=self.currency, bucket__in=buckets).order_by()
        for scope, bucket, amount in rows.values_list("scope", "bucket", "amount"):
            self.history.setdefault(scope, {})[bucket.astimezone(UTC)] = amount
        unknown = [scope for scope in scopes if scope not in self.first_day]
        self.first_day.update(dict.fromkeys(unknown))
        first_days = (
            SpendRollupDay.objects.filter(scope__in=unknown, currency=self.currency)
            .values("scope")
            .annotate(first=Min("bucket"))
            .order_by()
        )
        for row in first_days:
            self.first_day[row["scope"]] = (
                row["first"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            )

    def actual(self, scope: str, hour: datetime) -> Decimal:
        """What `scope` spent in `hour` (its window amounts at that hour must have been read)."""
        return self.window.get(scope, {}).get(hour, ZERO)

    def baseline(self, scope: str, hour: datetime) -> _Baseline:
        """The baseline of `scope` at `hour` (its history at that hour must have been read): the same
        hour 1..weeks weeks before since the scope was first seen; a scope never seen has none."""
        key = (scope, hour)
        if key not in self._baselines:
            first = self.first_day.get(scope)
            history = self.history.get(scope, {})
            earlier = (hour - WEEK * k for k in range(1, self.weeks + 1))
            samples = [] if first is None else [history.get(h, ZERO) for h in earlier if h >= first]
            self._baselines[key] = baseline(samples)
        return self._baselines[key]

    def spent(self, scope: str, hours: list[datetime]) -> tuple[Decimal, Decimal]:
        """(actual, expected) of `scope` over `hours`."""
        actual = sum((self.actual(scope, hour) for hour in hours), Decimal(0))
        expected = round_money(sum((self.baseline(scope, hour).expected for hour in hours), Decimal(0)))
        return actual, expected


def spend_anomalies(
    *,
    start: datetime,
    end: datetime,
    dimensions: Sequence[str] = DIMENSIONS,
    scopes: Iterable[str] | None = None,
    team: str | None = None,
    threshold: Decimal = THRESHOLD,
    min_excess: Decimal = MIN_EXCESS,
    weeks: int = HISTORY_WEEKS,
    currency: str = "USD",
) -> list[Anomaly]:
    """Anomalies in the hours of [start, end) of every scope of `dimensions` (or only `scopes`),
    worst first (see the module docstring for the method). With `team`, of that team's copies of
    the scopes (team:NAME for global, team:NAME/model:X ...) rather than the organisation's."""
    hours = hour_buckets(start, end)
    if not hours:
        return []
    only = set(scopes) if scopes is not None else None
    teams = {scope_team(s) for s in only} if only is not None else {team}
    wanted = {scope_kind(s) for s in only} if only is not None else set(dimensions)
    children = {child for d in wanted for child in CHILD_DIMENSIONS.get(d, ())}
    rollups = _Rollups(hours=hours, currency=currency, weeks=weeks)
    scored = sorted(only) if only is not None else rollups.kept(dimensions=wanted, scopes=set(), teams=teams)
    if threshold > 0:
        # Hourly rollups are never negative (a correction lands in its entry's hour and leaves a
        # total >= 0), so an expected spend is >= 0 and, the spread being at least ABS_FLOOR, a
        # score >= threshold needs actual >= threshold x ABS_FLOOR: only those hours are scored.
        rollups.read_window(scored, floor=(threshold * ABS_FLOOR).quantize(MONEY_QUANTUM, ROUND_CEILING))
        candidates = {s: set(rollups.window.get(s, ())) for s in scored}
    else:
        rollups.read_window(scored)
        candidates = {s: set(hours) for s in scored if s in rollups.window}
    rollups.read_history(candidates)
    spikes: list[tuple[str, list[tuple[datetime, Decimal]]]] = []
    for scope, scope_hours in candidates.items():
        flagged = []
        for hour in sorted(scope_hours):
            base = rollups.baseline(scope, hour)
            if base.samples < MIN_SAMPLES:
                continue
            score = (rollups.actual(scope, hour) - base.expected) / base.spread
            if score >= threshold:
                flagged.append((hour, score))
        for run in _runs(flagged):
            actual, expected = rollups.spent(scope, [hour for hour, _ in run])
            if actual - expected >= min_excess:
                spikes.append((scope, run))
    if not spikes:
        return []
    # The children that spent in a spike's hours may explain it: their amounts and history then.
    kept = rollups.kept(dimensions=children, scopes=only or set(), teams=teams)
    rollups.read_window(kept, hours={hour for _, run in spikes for hour, _ in run})
    catalog_models = _catalog_models()
    with_children = [
        (scope, run, _children(rollups, kept, scope, [hour for hour, _ in run], catalog_models))
        for scope, run in spikes
    ]
    hours_by_child: dict[str, set[datetime]] = {}
    for _, run, found in with_children:
        for child in found:
            hours_by_child.setdefault(child, set()).update(hour for hour, _ in run)
    rollups.read_history(hours_by_child)
    anomalies = [_anomaly(rollups, scope, run, found) for scope, run, found in with_children]
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


def _children(
    rollups: _Rollups, kept: list[str], parent: str, hours: list[datetime], catalog_models: dict[str, set[str]]
) -> list[str]:
    """The kept scopes of the parent's child dimensions, of its own team, that spent in `hours` (one
    that spent nothing has no excess: its history is never negative) and may be part of it."""
    kind = scope_kind(parent)
    dimensions = CHILD_DIMENSIONS.get(kind, ())
    provider = scope_value(parent) if kind == "provider" else None
    found = []
    for child in kept:
        child_kind = scope_kind(child)
        if child_kind not in dimensions or child == parent or scope_team(child) != scope_team(parent):
            continue
        if (
            child_kind == "model"
            and provider is not None
            and not _may_belong(scope_value(child), provider, catalog_models)
        ):
            continue
        if any(hour in rollups.window.get(child, ()) for hour in hours):
            found.append(child)
    return found


def _anomaly(rollups: _Rollups, scope: str, run: list[tuple[datetime, Decimal]], children: list[str]) -> Anomaly:
    hours = [hour for hour, _ in run]
    actual, expected = rollups.spent(scope, hours)
    excess = actual - expected
    score = max(s for _, s in run).quantize(_SCORE_PLACES, ROUND_HALF_EVEN)
    contributors = _contributors(rollups, children, hours, actual=actual, excess=excess)
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
    rollups: _Rollups, children: list[str], hours: list[datetime], *, actual: Decimal, excess: Decimal
) -> list[Contributor]:
    found = []
    for child in children:
        child_actual = sum((rollups.actual(child, h) for h in hours), Decimal(0))
        bases = [rollups.baseline(child, h) for h in hours]
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
    for c in sorted(contributors, key=lambda c: (-c.share, -c.score, c.scope)):
        best.setdefault(c.dimension, c)
    return list(best.values())


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
