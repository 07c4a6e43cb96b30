"""Savings recommendations from the user's own rollups and the price catalog.

Every figure is over the last `days` days (hour buckets [now - days, now)) and scaled to a 30-day
month (x 30 / days). Prices are the catalog's versions in force at `at`, quoted through the same
PriceBook the record path uses (unit fallbacks included), so "would have cost" means "these
tokens at today's prices".

- cheaper_model: per model with token usage, the cheapest other model of the same provider and
  mode (the catalog's operation, e.g. chat or embedding) that prices every unit used. saving =
  quote(model, tokens) - quote(alternative, tokens). Dated snapshots (name-2024-08-06) and
  fine-tunes (ft:...) are not proposed: they duplicate an alias or are not generally available.
- cached_input: a model with a cache-read price below its input price, whose usage is mostly
  input (>= HEAVY_INPUT_SHARE of its tokens) and barely cached (< LOW_CACHE_SHARE). Rollups cannot
  see repeated prompts, so CACHEABLE_SHARE (half) of the uncached input is assumed to be a
  repeated prefix: saving = quote(input I) - quote(input I - k, cached k), k = I x share.
  Cache-write surcharges (Anthropic's 1.25x) are not counted: they are paid once per prefix.
- idle_gpu: while burst mode is on (the setting, or the latest sample was billed), GPU samples whose idle share (idle / (busy + idle) GPU-hours)
  is above GPU_IDLE_THRESHOLD: saving = the idle GPU-hours' cost (operation:gpu_idle rollups).
- budget_amount: a budget whose last complete periods (14 days, 4 weeks, 3 months, 2 quarters)
  were all under UNDER_USE of its amount, or all over it: suggest max(spent) x 1.25 (under) or
  x 1.10 (over), rounded up to two significant figures. Not a saving (monthly_saving is None).
- failed_calls: rollups count failed calls (errors + rate limited) but do not split the amount
  by outcome, so their cost is estimated as failed calls x the model's mean cost per call (an
  upper estimate where failures are billed less than successes).

A team's recommendations (team=NAME) read its copies of the scopes (team:NAME/model:X ...,
core.scopes) and its own budgets, and carry those scopes; GPU samples belong to no team, so idle
GPUs are the organisation's recommendation only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db.models import Min, Q, Sum

from budgets.models import Budget
from core.money import MONEY_QUANTUM, round_money
from core.periods import period_bounds
from core.scopes import scope_inner, team_scope
from tracking.gpu import OPERATION_IDLE, gpu_burst_enabled
from tracking.models import TOKEN_FIELDS, GpuSample, Price, PricingStatus, SpendRollupDay
from tracking.pricing import PriceBook
from tracking.selectors import scope_totals, spend_total, spend_totals

from .series import HOUR, hour_floor, scope_value

MONTH_DAYS = 30
MIN_MONTHLY_SAVING = Decimal("1.00")
HEAVY_INPUT_SHARE = Decimal("0.75")
LOW_CACHE_SHARE = Decimal("0.10")
CACHEABLE_SHARE = Decimal("0.5")
GPU_IDLE_THRESHOLD = Decimal("0.5")
UNDER_USE = Decimal("0.5")
FAILED_SHARE = Decimal("0.01")
BUDGET_HISTORY = {"daily": 14, "weekly": 4, "monthly": 3, "quarterly": 2}
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")
_COUNTERS = ("amount", "events", "errors", "rate_limited", *TOKEN_FIELDS)


@dataclass(frozen=True)
class Recommendation:
    kind: str  # cheaper_model, cached_input, idle_gpu, budget_amount, failed_calls
    scope: str
    title: str
    detail: str
    monthly_saving: Decimal | None
    provider: str = ""
    currency: str = "USD"
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "provider": self.provider,
            "title": self.title,
            "detail": self.detail,
            "monthly_saving": None if self.monthly_saving is None else str(self.monthly_saving),
            "currency": self.currency,
            "data": {k: str(v) if isinstance(v, Decimal) else v for k, v in self.data.items()},
        }


def _in_force(at: datetime) -> Q:
    return Q(valid_from__lte=at) & (Q(valid_until__isnull=True) | Q(valid_until__gt=at))


def _usd(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), ROUND_HALF_EVEN):,} USD"


def savings_recommendations(
    *, at: datetime, days: int = 30, provider: str | None = None, currency: str = "USD", team: str | None = None
) -> list[Recommendation]:
    """Every recommendation, biggest monthly saving first (budget suggestions last): the
    organisation's, or with `team` that team's (its scopes' usage, its budgets)."""

    def within(scope: str) -> str:
        return scope if team is None else team_scope(team, scope)

    end = hour_floor(at)
    start = end - timedelta(days=days)
    scale = Decimal(MONTH_DAYS) / Decimal(days)
    # Models' and providers' usage in one read (the providers' amounts only are used).
    totals = scope_totals(
        start=start, end=end, prefixes=[within("model:"), within("provider:")], counters=_COUNTERS, currency=currency
    )
    totals = {scope_inner(s): v for s, v in totals.items()}
    usage = {s: v for s, v in totals.items() if s.startswith("model:")}
    providers_spending = {scope_value(s) for s, v in totals.items() if s.startswith("provider:") and v["amount"] > 0}
    found: list[Recommendation] = []
    found += [
        dataclasses.replace(r, scope=within(r.scope))
        for r in model_recommendations(
            usage=usage, at=at, scale=scale, providers_spending=providers_spending, days=days, only_provider=provider
        )
    ]
    if provider in (None, "gpu") and team is None:
        found += gpu_recommendations(start=start, end=end, scale=scale, days=days, currency=currency)
    found += budget_recommendations(
        at=at, scope=None if provider is None else within(f"provider:{provider}"), team=team
    )
    found.sort(key=lambda r: (r.monthly_saving is None, -(r.monthly_saving or 0), r.kind, r.scope))
    return found


def _model_provider(model: str, prices: Sequence[Price], providers_spending: set[str]) -> str | None:
    providers = {p.provider for p in prices}
    if len(providers) == 1:
        return next(iter(providers))
    spending = providers & providers_spending
    return next(iter(spending)) if len(spending) == 1 else None  # ambiguous: model rollups mix providers


def model_recommendations(
    *,
    usage: dict[str, dict[str, Any]],
    at: datetime,
    scale: Decimal,
    providers_spending: set[str],
    days: int,
    only_provider: str | None = None,
) -> list[Recommendation]:
    models = {scope_value(s): v for s, v in usage.items() if s.startswith("model:")}
    if not models:
        return []
    prices_by_model: dict[str, list[Price]] = {}
    for price in Price.objects.filter(_in_force(at), model__in=list(models)).order_by():
        prices_by_model.setdefault(price.model, []).append(price)
    # Everything the candidates need, in one query per provider and operation.
    wanted: dict[str, tuple[str, str]] = {}
    for model, prices in prices_by_model.items():
        provider = _model_provider(model, prices, providers_spending)
        operations = {p.operation for p in prices if p.provider == provider}
        if provider is None or len(operations) != 1:
            continue
        if only_provider is not None and provider != only_provider:
            continue
        wanted[model] = (provider, next(iter(operations)))
    pairs_condition = Q()
    for provider, operation in set(wanted.values()):
        pairs_condition |= Q(provider=provider, operation=operation)
    candidates: dict[tuple[str, str], set[str]] = {}
    if wanted:
        for provider, operation, model in (
            Price.objects.filter(_in_force(at))
            .filter(pairs_condition)
            .values_list("provider", "operation", "model")
            .distinct()
            .order_by()
        ):
            if ":" in model or _SNAPSHOT.search(model):
                continue
            candidates.setdefault((provider, operation), set()).add(model)
    pairs = {(p, m) for (p, _), ms in candidates.items() for m in ms} | {(p, m) for m, (p, _) in wanted.items()}
    book = PriceBook.load(pairs)
    found: list[Recommendation] = []
    for model, (provider, operation) in sorted(wanted.items()):
        counters = models[model]
        quantities = {name: int(counters[name] or 0) for name in TOKEN_FIELDS}
        if not any(quantities.values()):
            continue

        def quote(name: str, q: dict[str, int], _provider: str = provider, _operation: str = operation) -> Any:
            return book.quote(provider=_provider, model=name, operation=_operation, variant="", at=at, quantities=q)

        current = quote(model, quantities)
        if current.status != PricingStatus.PRICED:
            continue
        best: tuple[Decimal, str] | None = None
        for alternative in sorted(candidates.get((provider, operation), set()) - {model}):
            alt = quote(alternative, quantities)
            # A zero quote is a free preview or an unknown price, not a cheaper model.
            if alt.status != PricingStatus.PRICED or alt.currency != current.currency or alt.amount <= 0:
                continue
            if alt.amount < current.amount:
                if best is None or alt.amount < best[0]:
                    best = (alt.amount, alternative)
        if best is not None:
            saving = round_money((current.amount - best[0]) * scale)
            if saving >= MIN_MONTHLY_SAVING:
                found.append(
                    Recommendation(
                        kind="cheaper_model",
                        scope=f"model:{model}",
                        provider=provider,
                        title=f"{model} -> {best[1]}: save {_usd(saving)} a month",
                        detail=(
                            f"The {_tokens(quantities)} tokens {model} used in the last {days} days would have cost "
                            f"{_usd(best[0])} with {best[1]} ({provider} {operation}) instead of {_usd(current.amount)} "
                            f"at today's catalog prices. Check its quality for your prompts first."
                        ),
                        monthly_saving=saving,
                        currency=current.currency,
                        data={
                            "model": model,
                            "alternative": best[1],
                            "operation": operation,
                            "current_cost": current.amount,
                            "alternative_cost": best[0],
                            "days": days,
                            **quantities,
                        },
                    )
                )
        found += _cached_input(model, provider, operation, quantities, quote, scale, days)
        found += _failed_calls(model, provider, counters, scale, days)
    return found


def _tokens(quantities: dict[str, int]) -> str:
    return f"{sum(quantities.values()):,}"


def _cached_input(
    model: str, provider: str, operation: str, quantities: dict[str, int], quote: Any, scale: Decimal, days: int
) -> list[Recommendation]:
    uncached, cached = quantities["input_tokens"], quantities["cached_input_tokens"]
    total = sum(quantities.values())
    if not uncached or not total:
        return []
    if (
        Decimal(uncached + cached) / total < HEAVY_INPUT_SHARE
        or Decimal(cached) / (uncached + cached) >= LOW_CACHE_SHARE
    ):
        return []
    cacheable = int(Decimal(uncached) * CACHEABLE_SHARE)
    full = quote(model, {"input_tokens": uncached})
    with_cache = quote(model, {"input_tokens": uncached - cacheable, "cached_input_tokens": cacheable})
    if full.status != PricingStatus.PRICED or with_cache.status != PricingStatus.PRICED:
        return []
    if "cached_input_token" not in with_cache.prices_used:
        return []  # no cache-read price of its own: it falls back to the input price
    saving = round_money((full.amount - with_cache.amount) * scale)
    if saving < MIN_MONTHLY_SAVING:
        return []
    return [
        Recommendation(
            kind="cached_input",
            scope=f"model:{model}",
            provider=provider,
            title=f"Prompt caching on {model}: save about {_usd(saving)} a month",
            detail=(
                f"{model} read {uncached:,} uncached input tokens in the last {days} days "
                f"({(Decimal(uncached + cached) * 100 / total).quantize(Decimal(1))} % of its tokens are input, "
                f"{(Decimal(cached) * 100 / (uncached + cached)).quantize(Decimal(1))} % cached). If half of that "
                f"input is a repeated prefix (system prompt, documents), cache reads at the cached-input price "
                f"would save about {_usd(saving)} a month."
            ),
            monthly_saving=saving,
            currency=full.currency,
            data={
                "model": model,
                "input_tokens": uncached,
                "cacheable_tokens": cacheable,
                "cacheable_share": CACHEABLE_SHARE,
                "days": days,
            },
        )
    ]


def _failed_calls(
    model: str, provider: str, counters: dict[str, Any], scale: Decimal, days: int
) -> list[Recommendation]:
    events, amount = int(counters["events"] or 0), counters["amount"]
    failed = int(counters["errors"] or 0) + int(counters["rate_limited"] or 0)
    if not events or not failed or amount <= 0 or Decimal(failed) / events < FAILED_SHARE:
        return []
    cost = amount * failed / events
    saving = round_money(cost * scale)
    if saving < MIN_MONTHLY_SAVING:
        return []
    return [
        Recommendation(
            kind="failed_calls",
            scope=f"model:{model}",
            provider=provider,
            title=f"Failed calls on {model}: up to {_usd(saving)} a month",
            detail=(
                f"{failed:,} of {events:,} calls to {model} failed in the last {days} days "
                f"({(Decimal(failed) * 100 / events).quantize(Decimal('0.1'))} %: errors and rate limits). At its mean "
                f"cost per call they cost up to {_usd(round_money(cost))}; retry with backoff, check inputs "
                f"before calling and stay under the rate limits."
            ),
            monthly_saving=saving,
            data={"model": model, "failed": failed, "events": events, "amount": amount, "days": days},
        )
    ]


def gpu_recommendations(
    *, start: datetime, end: datetime, scale: Decimal, days: int, currency: str = "USD"
) -> list[Recommendation]:
    latest = GpuSample.objects.filter(sampled_at__lt=end).order_by("-sampled_at").first()
    if not gpu_burst_enabled() and (latest is None or not latest.billed):
        return []  # burst mode is off (the latest sample billed nothing): idle GPUs cost nothing now
    hours = GpuSample.objects.filter(sampled_at__gte=start, sampled_at__lt=end, billed=True).aggregate(
        busy=Sum("busy_gpu_hours"), idle=Sum("idle_gpu_hours")
    )
    # Sums of decimals are floats on SQLite: back to the column's 9 places.
    busy, idle = (Decimal(hours[k] or 0).quantize(Decimal("1E-9")) for k in ("busy", "idle"))
    if busy + idle <= 0:
        return []
    share = idle / (busy + idle)
    if share <= GPU_IDLE_THRESHOLD:
        return []
    idle_cost = spend_total(scope=f"operation:{OPERATION_IDLE}", start=start, end=end, currency=currency)
    saving = round_money(idle_cost * scale)
    if saving < MIN_MONTHLY_SAVING:
        return []
    percent = (share * 100).quantize(Decimal(1))
    return [
        Recommendation(
            kind="idle_gpu",
            scope=f"operation:{OPERATION_IDLE}",
            provider="gpu",
            title=f"GPUs idle {percent} % of the billed time: save {_usd(saving)} a month",
            detail=(
                f"Burst mode is on and the GPUs were idle for {idle.quantize(Decimal('0.1'))} of "
                f"{(busy + idle).quantize(Decimal('0.1'))} billed GPU-hours in the last {days} days "
                f"(threshold {(GPU_IDLE_THRESHOLD * 100).quantize(Decimal(1))} %). Release the GPUs (burst mode "
                f"off) between jobs: the idle hours cost {_usd(round_money(idle_cost))}."
            ),
            monthly_saving=saving,
            data={"busy_gpu_hours": busy, "idle_gpu_hours": idle, "idle_cost": idle_cost, "days": days},
        )
    ]


def _nice_ceiling(value: Decimal) -> Decimal:
    """Rounded up to two significant figures: 123.4 -> 130, 0.0123 -> 0.013."""
    if value <= 0:
        return Decimal(0)
    exponent = math.floor(math.log10(value)) - 1
    step = Decimal(1).scaleb(exponent)
    return (value / step).to_integral_value(ROUND_CEILING) * step


def budget_recommendations(*, at: datetime, scope: str | None = None, team: str | None = None) -> list[Recommendation]:
    budgets = Budget.objects.plain().filter(is_active=True, period__in=list(BUDGET_HISTORY)).order_by("pk")
    if team is not None:
        budgets = budgets.filter(team__name=team)
    if scope is not None:
        budgets = budgets.filter(scope=scope)
    plans: list[tuple[Budget, list[tuple[datetime, datetime]]]] = []
    for budget in budgets:
        periods: list[tuple[datetime, datetime]] = []
        cursor = at
        for _ in range(BUDGET_HISTORY[budget.period]):
            start, _end = period_bounds(budget.period, cursor)
            previous_start, previous_end = period_bounds(budget.period, start - HOUR)
            assert previous_end is not None
            periods.append((previous_start, previous_end))
            cursor = previous_start
        plans.append((budget, periods))
    if not plans:
        return []
    # Every budget's first day and every period's spend in three statements, not up to 43 each.
    firsts = {
        (row["scope"], row["currency"]): row["first"]
        for row in SpendRollupDay.objects.filter(
            scope__in={b.scope for b, _ in plans}, currency__in={b.currency for b, _ in plans}
        )
        .values("scope", "currency")
        .annotate(first=Min("bucket"))
        .order_by()
    }
    wanted = [
        (budget, periods)
        for budget, periods in plans
        if (first := firsts.get((budget.scope, budget.currency))) is not None
        and first <= periods[-1][0]
        and budget.amount > 0
    ]  # the others: history does not cover every period
    totals = iter(spend_totals([(b.scope, b.currency, s, e) for b, periods in wanted for s, e in periods]))
    found: list[Recommendation] = []
    for budget, periods in wanted:
        spent = [next(totals).quantize(MONEY_QUANTUM) for _ in periods]
        highest = max(spent)
        if all(s < budget.amount * UNDER_USE for s in spent):
            suggested, way = _nice_ceiling(highest * Decimal("1.25")), "under"
        elif all(s > budget.amount for s in spent):
            suggested, way = _nice_ceiling(highest * Decimal("1.10")), "over"
        else:
            continue
        if suggested <= 0 or suggested == budget.amount:
            continue
        shown = ", ".join(_usd(s) for s in reversed(spent))
        found.append(
            Recommendation(
                kind="budget_amount",
                scope=budget.scope,
                provider=scope_value(budget.scope) if scope_inner(budget.scope).startswith("provider:") else "",
                title=f"Budget '{budget.name}': {_usd(budget.amount)} -> {_usd(suggested)}",
                detail=(
                    f"The last {len(spent)} {budget.period} periods spent {shown}: always "
                    + (f"under half of {_usd(budget.amount)}" if way == "under" else f"over {_usd(budget.amount)}")
                    + f". A limit of {_usd(suggested)} keeps its alerts meaningful."
                ),
                monthly_saving=None,
                currency=budget.currency,
                data={
                    "budget_id": budget.pk,
                    "amount": budget.amount,
                    "suggested_amount": suggested,
                    "spent": [str(s) for s in spent],
                    "way": way,
                },
            )
        )
    return found
