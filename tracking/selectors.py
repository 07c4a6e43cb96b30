"""Reads shared by the admin, commands, reports, the API and metrics.

"How much in this window" is answered from SpendRollup, never by scanning the ledger.
The only ledger scans are the audit ones (verify_ledger, rebuild_rollups).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, Sum
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import Exact

from core.money import MONEY_QUANTUM, ZERO, MoneyField, from_nanos
from core.scopes import SERVICE_NARROWED, TEAM_SEPARATOR, scope_inner, scope_team, service_narrowed, team_scope

from .events import QUANTITY_FIELDS, UsageEvent, usage_event_clean
from .models import (
    ROLLUP_COUNTERS,
    SERIES_COUNTERS,
    SERIES_KEY,
    TOKEN_FIELDS,
    BilledCost,
    BillingDay,
    CostEntry,
    MetricSeries,
    Price,
    PricingStatus,
    SpendRollup,
    SpendRollupDay,
)
from .pricing import PriceBook, Quote
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


def window_filters(window: RollupWindow) -> tuple[Q, Q]:
    """(which hourly rows, which daily rows) hold `window`: whole UTC days from SpendRollupDay, the
    ragged ends from SpendRollup. The bounds may be values or expressions (OuterRef in a subquery)."""
    hourly = Q(bucket__gte=window.start, bucket__lt=window.head_end) | Q(
        bucket__gte=window.tail_start, bucket__lt=window.end
    )
    daily = Q(bucket__gte=window.days_start, bucket__lt=window.days_end)
    return hourly, daily


def scope_filter(scopes: Iterable[str] | None, prefixes: Sequence[str] | None) -> Q:
    """Rollup rows of the scopes named, or of the scopes starting with a prefix ("model:"; "global").
    "Every service" (a prefix ending in service:) leaves out the services' copies of their subjects
    and jobs (service:S/job:X, core.scopes.service_narrowed): they are not services, and a breakdown
    by service would count their spend twice."""
    condition = Q()
    if scopes is not None:
        condition |= Q(scope__in=sorted(set(scopes)))
    for prefix in prefixes or ():
        if prefix == "global":
            condition |= Q(scope="global")
        elif prefix.endswith("service:"):
            narrowed = [Q(scope__contains=f"/{kind}:") for kind in SERVICE_NARROWED]
            condition |= Q(scope__startswith=prefix) & ~Q(*narrowed, _connector=Q.OR)
        else:
            condition |= Q(scope__startswith=prefix)
    return condition


def team_scopes_filter(team_names: Iterable[str]) -> Q:
    """Rollup rows of these teams' scopes only: `team:NAME` and `team:NAME/...` (none for no team)."""
    names = sorted(set(team_names))
    return scope_filter([team_scope(name) for name in names], [team_scope(name) + TEAM_SEPARATOR for name in names])


def scope_totals(
    *,
    start: datetime,
    end: datetime,
    scopes: Iterable[str] | None = None,
    prefixes: Sequence[str] | None = None,
    counters: Sequence[str] = ("amount",),
    currency: str = "USD",
) -> dict[str, dict[str, Any]]:
    """{scope: {counter: total}} over the hour buckets that start in [start, end), of the scopes named or starting
    with a prefix ("model:"; "global" for the global scope): THE read of "how much in this window",
    two statements whatever the window's length (the hourly and the daily rollups, window_filters).
    Scopes without rollups in the window are absent."""
    hourly, daily = window_filters(rollup_window(start, end))
    sums = {name: Sum(name) for name in counters}
    which = scope_filter(scopes, prefixes)
    totals: dict[str, dict[str, Any]] = {}
    for model, part in ((SpendRollup, hourly), (SpendRollupDay, daily)):
        rows = model.objects.filter(which, part, currency=currency).values("scope").annotate(**sums).order_by()
        for row in rows:
            current = totals.setdefault(row["scope"], dict.fromkeys(counters, 0))
            for name in counters:
                current[name] += row[name] or 0
    if "amount" in counters:
        for values in totals.values():
            values["amount"] = Decimal(values["amount"]).quantize(MONEY_QUANTUM)
    return totals


def spend_total(*, scope: str, start: datetime, end: datetime, currency: str = "USD") -> Decimal:
    """What `scope` spent in `currency` over the hour buckets in [start, end) (scope_totals)."""
    found = scope_totals(start=start, end=end, scopes=[scope], currency=currency).get(scope)
    return found["amount"] if found else ZERO


def spend_totals(windows: Sequence[tuple[str, str, datetime, datetime]]) -> list[Decimal]:
    """spend_total of each (scope, currency, start, end): the windows that share their bounds and
    currency are read together (scope_totals), so a screen's many scopes cost a few statements."""
    groups: dict[tuple[str, datetime, datetime], set[str]] = {}
    for scope, currency, start, end in windows:
        groups.setdefault((currency, start, end), set()).add(scope)
    found = {
        (scope, currency, start, end): values["amount"]
        for (currency, start, end), scopes in groups.items()
        for scope, values in scope_totals(start=start, end=end, scopes=scopes, currency=currency).items()
    }
    return [found.get(window, ZERO) for window in windows]


# What a scope spent over a window, as SQL text: whole UTC days from the daily rollups, the ragged ends
# from the hourly ones (window_filters' rows), each an index range on (scope, bucket, currency).
_WINDOW_SPEND_SQL = """(
    (SELECT COALESCE(SUM(r.amount), 0) FROM {hourly} r WHERE r.scope = {scope} AND r.currency = {currency}
        AND ((r.bucket >= {start} AND r.bucket < {head_end}) OR (r.bucket >= {tail_start} AND r.bucket < {end})))
  + (SELECT COALESCE(SUM(d.amount), 0) FROM {daily} d WHERE d.scope = {scope} AND d.currency = {currency}
        AND d.bucket >= {days_start} AND d.bucket < {days_end}))"""


def window_spend(*, scope: str, currency: str, window: dict[str, tuple[str, list[Any]]]) -> RawSQL:
    """What the row's `scope` spent in `currency` (SQL column references) over a window, as an
    annotation of another model's rows (a MoneyField: a Decimal when read). `window` gives each bound
    of a RollupWindow as SQL text and its parameters (a placeholder, or a CASE choosing per row).

    SQL text rather than ORM subqueries: the budgets' status reads it on every budget check, and
    Django spent ~10 ms building and compiling the equivalent expressions, against ~1 ms for the
    statement itself (`make bench`, budget_check)."""
    order = ("start", "head_end", "tail_start", "end", "days_start", "days_end")
    params = [value for name in order for value in window[name][1]]
    sql = _WINDOW_SPEND_SQL.format(
        hourly=SpendRollup._meta.db_table,
        daily=SpendRollupDay._meta.db_table,
        scope=scope,
        currency=currency,
        **{name: text for name, (text, _) in window.items()},
    )
    return RawSQL(sql, params, output_field=MoneyField())  # noqa: S611 - fixed text; values are parameters


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


# What rollup_deltas and metric_series_deltas read of an entry.
ROLLUP_ENTRY_FIELDS = (
    "occurred_at", "provider", "model", "operation", "service", "subject", "job", "team", "tags", "currency",
    "amount", "outcome", "pricing_status", "duration_ms", "corrects", *TOKEN_FIELDS,
)  # fmt: skip


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
    # Only the columns the rollups read: the migrations that backfill rollups (0015, 0017) run this on a
    # ledger that may not have the columns later migrations add.
    entries = (
        CostEntry.objects.select_related("team")
        .only(*ROLLUP_ENTRY_FIELDS, "team__name")
        .order_by("pk")
        .iterator(chunk_size=chunk_size)
    )
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


# --- pricing usage -------------------------------------------------------------------------------

# What a usage names (no amount, time or attribution): what usage_quote prices.
USAGE_FIELDS = frozenset(
    {"provider", "model", "operation", "variant", "service_tier", "region", "speed", *QUANTITY_FIELDS}
)


def event_quote(event: UsageEvent, book: PriceBook) -> Quote:
    """The price of a validated event with the versions in force at its time: the one pricing
    function of the record path (tracking.services) and of usage_quote."""
    return book.quote(
        provider=event.provider,
        model=event.model,
        operation=event.operation,
        variant=event.variant,
        at=event.occurred_at,
        quantities=event.quantities,
        service_tier=event.service_tier,
        region=event.region,
        speed=event.speed,
    )


def unpriced_reason(prices_used: Mapping[str, Any], *, provider: str, model: str) -> str:
    """Why an amount is unpriced, in words (the missing rule), from a quote's prices_used."""
    if prices_used.get("reason"):
        return str(prices_used["reason"])
    if prices_used.get("missing_units"):
        return f"no price for {', '.join(map(str, prices_used['missing_units']))} of {provider}/{model}"
    if prices_used.get("mixed_currencies"):
        return f"{provider}/{model} is priced in several currencies ({', '.join(prices_used['mixed_currencies'])})"
    return f"no price in force for {provider}/{model}"


def usage_quote(raw: Mapping[str, Any], *, now: datetime | None = None) -> Quote:
    """Price a call's usage now, as recording it would, writing nothing (settle-by-usage).

    `raw` holds provider, model and, optionally, operation, variant, service_tier, region, speed and quantities.
    Raises ValidationError naming the field for a bad usage, and {"usage": <the missing rule>} for
    one the catalog does not price: a reservation is never settled at a silent 0.
    """
    if not isinstance(raw, Mapping):
        raise ValidationError({"usage": "must be an object"})
    unknown = sorted(set(raw) - USAGE_FIELDS)
    if unknown:
        raise ValidationError(
            {
                unknown[0]: "is not a usage field (provider, model, operation, variant, service_tier, region, speed "
                "and the quantities)"
            }
        )
    event = usage_event_clean(raw, now=now)
    quote = event_quote(event, PriceBook.load([(event.provider, event.model)]))
    if quote.status == PricingStatus.UNPRICED:
        raise ValidationError({"usage": unpriced_reason(quote.prices_used, provider=event.provider, model=event.model)})
    return quote


# The entry fields whose value a KIND:VALUE scope names (tags are tag:KEY=VALUE).
ENTRY_FIELD_SCOPES = ("provider", "model", "operation", "service", "subject", "job")


def entry_scope_q(scope: str) -> Q:
    """The ledger entries that count towards `scope`: the inverse of tracking.rollups.entry_scopes, so a
    link from a budget, an alert or a dashboard figure lists exactly the entries the figure adds up
    (over the same window); the alert rules' sub-hour counts read the ledger through it too. The scope
    must be valid (tracking.admin.entry_scope_errors)."""
    team, inner = scope_team(scope), scope_inner(scope)
    condition = Q() if team is None else Q(team__name=team)
    if inner == "global":
        return condition
    if (narrowed := service_narrowed(inner)) is not None:  # service:S/job:X: S's entries of job X
        condition &= Q(service=narrowed[0])
        inner = narrowed[1]
    kind, _, value = inner.partition(":")
    if kind == "tag":
        key, _, tag_value = value.partition("=")
        # The key as one JSON key (a "__" in it is no lookup).
        return condition & Q(Exact(KeyTextTransform(key, "tags"), tag_value))
    if kind not in ENTRY_FIELD_SCOPES:
        raise ValidationError({"scope": f"unknown scope kind {kind!r}"})
    return condition & Q(**{kind: value})


# --- metered against billed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BillDrift:
    """One UTC day of one provider: what the ledger metered and what the provider billed (its imported
    lines), in one currency."""

    day: date
    provider: str
    currency: str
    metered: Decimal
    billed: Decimal

    @property
    def difference(self) -> Decimal:
        """Metered minus billed: negative when the provider billed more than we saw."""
        return self.metered - self.billed

    @property
    def drift_percent(self) -> Decimal:
        """The difference as a share of the bill (of what we metered when nothing was billed), 2 places."""
        base = self.billed or self.metered
        if not base:
            return Decimal(0)
        return (self.difference * 100 / base).quantize(Decimal("0.01"))

    @property
    def coverage_percent(self) -> Decimal | None:
        """The share of the billed spend that we metered (None when nothing was billed), 1 place."""
        if not self.billed:
            return None
        return (self.metered * 100 / self.billed).quantize(Decimal("0.1"))


def bill_drift(*, start: date, end: date, providers: Iterable[str] | None = None) -> list[BillDrift]:
    """Metered against billed per UTC day in [start, end) and provider, for the days a bill of the provider
    was imported (a billing source's day imported at least once; failed re-pulls keep its lines). The
    metered side is the provider's daily rollup, never the ledger. Sorted by day, then provider."""
    imported = BillingDay.objects.filter(day__gte=start, day__lt=end, imported_at__isnull=False)
    if providers is not None:
        imported = imported.filter(source__provider__in=list(providers))
    days = set(imported.values_list("day", "source__provider").distinct())
    if not days:
        return []
    billed: dict[tuple[date, str, str], Decimal] = {}
    lines = (
        BilledCost.objects.filter(day__gte=start, day__lt=end, provider__in={p for _, p in days})
        .values_list("day", "provider", "currency")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for day, provider, currency, total in lines:
        if (day, provider) in days:
            billed[(day, provider, currency)] = from_nanos(total) if isinstance(total, int) else total
    metered: dict[tuple[date, str, str], Decimal] = {}
    rollups = SpendRollupDay.objects.filter(
        bucket__gte=datetime.combine(start, datetime.min.time(), tzinfo=UTC),
        bucket__lt=datetime.combine(end, datetime.min.time(), tzinfo=UTC),
        scope__in={f"provider:{p}" for _, p in days},
    ).values_list("bucket", "scope", "currency", "amount")
    for bucket, scope, currency, amount in rollups:
        key = (bucket.astimezone(UTC).date(), scope.removeprefix("provider:"), currency)
        if key[:2] in days:
            metered[key] = amount
    keys = set(billed) | set(metered)
    for day, provider in days:  # a day billed at nothing and metered at nothing is still a day compared
        if not any(k[:2] == (day, provider) for k in keys):
            keys.add((day, provider, "USD"))
    return [
        BillDrift(day, provider, currency, metered.get(key, ZERO), billed.get(key, ZERO))
        for key in sorted(keys)
        for day, provider, currency in (key,)
    ]


def billed_days(*, scope: str, currency: str, start: datetime, end: datetime) -> list[BillDrift]:
    """The whole UTC days inside [start, end) with an imported bill of `scope` (global or provider:NAME), in
    `currency`. The part-days at the window's ends (today, a period boundary inside a UTC day) are left out."""
    first = start.astimezone(UTC)
    first_day = first.date() if first.time() == datetime.min.time() else first.date() + timedelta(days=1)
    last_day = end.astimezone(UTC).date()  # the day `end` falls in is not whole (or starts at `end`)
    if first_day >= last_day:
        return []
    providers = None if scope == "global" else [scope.removeprefix("provider:")]
    return [row for row in bill_drift(start=first_day, end=last_day, providers=providers) if row.currency == currency]


def billed_adjustment(*, scope: str, currency: str, start: datetime, end: datetime) -> Decimal:
    """What counting the providers' bills changes in the spend of `scope` over [start, end): on each whole UTC
    day billed (billed_days), billed minus metered. Days without a bill stay metered."""
    days = billed_days(scope=scope, currency=currency, start=start, end=end)
    return sum((row.billed - row.metered for row in days), ZERO)
