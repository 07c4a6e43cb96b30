"""The daily cost report: one local calendar day's spend, where it went, budgets, GPU and alerts.

- daily_report_build(day=...) returns the report as a JSON-ready dict (amounts as decimal
  strings with their currency, times as ISO-8601). Every money figure and counter comes from
  the hourly rollups (SpendRollup), never from the ledger, so a report costs the same whatever
  the ledger's size: it reads the day's rollup rows (the bucket index) and one row per budget.
- alerts.report_email renders it (subject, text, HTML) and sends it: one report notification per
  report channel in the outbox, idempotently.

The day is [local midnight, next local midnight) in settings.TIME_ZONE, found on the calendar
and then converted to UTC (core.periods), so a DST change makes it 23 or 25 hours long.
Rollups are whole UTC hours: in a zone whose midnight is not on a UTC hour (e.g. Asia/Kolkata)
the day is read from the hour that holds its local midnight; the report says so ("window").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from budgets.models import Budget
from budgets.selectors import budget_statuses
from core.money import MONEY_QUANTUM
from core.periods import DAILY, hour_floor, period_bounds
from tracking.batches import cost_per_lead, lead_unit, month_to_date
from tracking.models import ROLLUP_COUNTERS, Batch, BillingSource, CostEntry, GpuSample, SpendRollup
from tracking.rollups import entry_scopes
from tracking.selectors import BillDrift, bill_drift, scope_filter

from .evaluation import BILL_DRIFT_LOOKBACK
from .models import Alert

logger = logging.getLogger(__name__)

REPORT_KIND = "costcontrol.daily_report"
REPORT_VERSION = 1
MAIN_CURRENCY = "USD"
BREAKDOWN_KINDS = ("provider", "service", "model", "operation")
TOP_SUBJECTS = 10
ALERTS_LISTED = 50
GPU_PROVIDER = "gpu"
SHOWN_ROWS = 15  # per breakdown in the email; the JSON has every row

ZERO = Decimal(0).quantize(MONEY_QUANTUM)
_PERCENT = Decimal("0.01")
_CENT = Decimal("0.01")
_HOUR = timedelta(hours=1)
_TOKEN_LABELS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cached_input_tokens": "cached input",
    "cache_write_tokens": "cache write",
    "reasoning_tokens": "reasoning",
    "embedding_tokens": "embedding",
}
_COUNT_FIELDS = ROLLUP_COUNTERS[1:]
_SUMS = {f"sum_{name}": Sum(name) for name in ROLLUP_COUNTERS}


# --- the window -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayWindow:
    day: date
    tz: ZoneInfo
    start: datetime  # local midnight, in UTC
    end: datetime  # the next local midnight, in UTC

    @property
    def bucket_start(self) -> datetime:
        return hour_floor(self.start)

    @property
    def bucket_end(self) -> datetime:
        return hour_floor(self.end)


def day_window(day: date, tz: ZoneInfo | None = None) -> DayWindow:
    """The local calendar day `day` as [start, end) in UTC (the same boundaries as a daily budget)."""
    tz = tz or ZoneInfo(settings.TIME_ZONE)
    start, end = period_bounds(DAILY, datetime.combine(day, time(12), tzinfo=tz), tz)
    assert end is not None
    return DayWindow(day=day, tz=tz, start=start, end=end)


def report_day_default(now: datetime | None = None) -> date:
    """Yesterday in TIME_ZONE: the day a report sent this morning is about."""
    today = timezone.localdate(now or timezone.now(), ZoneInfo(settings.TIME_ZONE))
    return today - timedelta(days=1)


# --- reading the rollups ----------------------------------------------------------------------


def _rollups(window: DayWindow) -> QuerySet[SpendRollup]:
    return SpendRollup.objects.filter(bucket__gte=window.bucket_start, bucket__lt=window.bucket_end)


def _counters(row: Mapping[str, Any]) -> dict[str, Any]:
    """Summed rollup counters of a grouped row (PostgreSQL's SUM of bigint is numeric: made int)."""
    amount = row["sum_amount"]
    counters: dict[str, Any] = {"amount": ZERO if amount is None else amount}
    for name in _COUNT_FIELDS:
        counters[name] = int(row[f"sum_{name}"] or 0)
    return counters


def _zero_counters() -> dict[str, Any]:
    return {"amount": ZERO, **dict.fromkeys(_COUNT_FIELDS, 0)}


def _minus(total: Mapping[str, Any], parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rest = dict(total)
    for part in parts:
        for name in ROLLUP_COUNTERS:
            rest[name] -= part[name]
    return rest


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if whole <= 0:
        return None
    return (part * 100 / whole).quantize(_PERCENT, rounding=ROUND_HALF_EVEN)


def _currency_order(currency: str) -> tuple[bool, str]:
    return (currency != MAIN_CURRENCY, currency)


def _totals_by_currency(window: DayWindow) -> dict[str, dict[str, Any]]:
    rows = _rollups(window).filter(scope="global").values("currency").annotate(**_SUMS).order_by("currency")
    return {row["currency"]: _counters(row) for row in rows}


def _comparison(window: DayWindow, amount: Decimal, base: Decimal) -> dict[str, Any]:
    change = amount - base
    return {
        "day": window.day,
        "start": window.start,
        "end": window.end,
        "amount": base,
        "change": change,
        "change_percent": _percent(change, base),
    }


def _totals(window: DayWindow) -> list[dict[str, Any]]:
    """Per currency: the day's global counters and the change vs the day before and a week before."""
    today = _totals_by_currency(window)
    before_window = day_window(window.day - timedelta(days=1), window.tz)
    week_window = day_window(window.day - timedelta(days=7), window.tz)
    before, week = _totals_by_currency(before_window), _totals_by_currency(week_window)
    currencies = sorted({MAIN_CURRENCY, *today, *before, *week}, key=_currency_order)
    totals = []
    for currency in currencies:
        counters = today.get(currency) or _zero_counters()
        amount = counters["amount"]
        totals.append(
            {
                "currency": currency,
                **counters,
                "previous_day": _comparison(before_window, amount, before.get(currency, {}).get("amount", ZERO)),
                "same_weekday_last_week": _comparison(week_window, amount, week.get(currency, {}).get("amount", ZERO)),
            }
        )
    return totals


def _hourly(window: DayWindow) -> dict[str, Any]:
    """Global spend in the main currency per hour of the day (23, 24 or 25 of them)."""
    amounts = dict(
        _rollups(window).filter(scope="global", currency=MAIN_CURRENCY).values_list("bucket", "amount").order_by()
    )
    hours = []
    bucket = window.bucket_start
    while bucket < window.bucket_end:
        hours.append({"start": bucket.astimezone(window.tz), "amount": amounts.get(bucket, ZERO)})
        bucket += _HOUR
    return {"currency": MAIN_CURRENCY, "hours": hours}


def _row(kind: str, scope: str, currency: str, counters: dict[str, Any], total: Decimal) -> dict[str, Any]:
    return {
        "name": scope.removeprefix(f"{kind}:"),
        "scope": scope,
        "currency": currency,
        **counters,
        "share_percent": _percent(counters["amount"], total),
    }


def _unattributed(totals: list[dict[str, Any]], grouped: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per currency, what the day's total holds beyond the rows (entries without a service/subject)."""
    rest = []
    for total in totals:
        left = _minus({name: total[name] for name in ROLLUP_COUNTERS}, grouped.get(total["currency"], []))
        if any(left[name] for name in ROLLUP_COUNTERS):
            rest.append(
                {"currency": total["currency"], **left, "share_percent": _percent(left["amount"], total["amount"])}
            )
    return rest


def rollups_have_scope(kind: str) -> bool:
    """Whether the write path rolls entries up under `kind:X` scopes (asks entry_scopes itself)."""
    probe = CostEntry(provider="p", model="m", operation="o", service="s", subject="u", job="j")
    return any(scope.startswith(f"{kind}:") for scope in entry_scopes(probe))


def _breakdown(window: DayWindow, kind: str, totals: list[dict[str, Any]]) -> dict[str, Any]:
    if not rollups_have_scope(kind):
        return {
            "available": False,
            "note": f"not available: the hourly rollups have no {kind}:X scope (tracking.rollups.entry_scopes), "
            "and the report does not scan the ledger",
            "rows": [],
            "unattributed": [],
        }
    total_by_currency = {t["currency"]: t["amount"] for t in totals}
    grouped: dict[str, list[dict[str, Any]]] = {}
    rows = []
    rows_of_kind = _rollups(window).filter(scope_filter(None, [f"{kind}:"]))
    for row in rows_of_kind.values("scope", "currency").annotate(**_SUMS):
        counters = _counters(row)
        grouped.setdefault(row["currency"], []).append(counters)
        rows.append(_row(kind, row["scope"], row["currency"], counters, total_by_currency.get(row["currency"], ZERO)))
    rows.sort(key=lambda r: (*_currency_order(r["currency"]), -r["amount"], r["name"]))
    return {"available": True, "note": "", "rows": rows, "unattributed": _unattributed(totals, grouped)}


def _top_subjects(window: DayWindow, totals: list[dict[str, Any]]) -> dict[str, Any]:
    """The TOP_SUBJECTS subjects that cost most, per currency; how many there were; what had none."""
    subjects = _rollups(window).filter(scope__startswith="subject:")
    summary = {
        row["currency"]: row
        for row in subjects.values("currency").annotate(subjects=Count("scope", distinct=True), **_SUMS).order_by()
    }
    total_by_currency = {t["currency"]: t["amount"] for t in totals}
    rows = []
    counts = []
    for currency in sorted(summary, key=_currency_order):
        counts.append({"currency": currency, "subjects": summary[currency]["subjects"]})
        top = (
            subjects.filter(currency=currency)
            .values("scope")
            .annotate(**_SUMS)
            .order_by("-sum_amount", "scope")[:TOP_SUBJECTS]
        )
        rows.extend(
            _row("subject", r["scope"], currency, _counters(r), total_by_currency.get(currency, ZERO)) for r in top
        )
    grouped = {currency: [_counters(row)] for currency, row in summary.items()}
    return {"limit": TOP_SUBJECTS, "counts": counts, "rows": rows, "unattributed": _unattributed(totals, grouped)}


def _budgets(window: DayWindow, now: datetime) -> dict[str, Any]:
    """Every active budget as it stood at the end of the day (or now, for today)."""
    at = min(window.end - timedelta(microseconds=1), now)
    rows = []
    budgets = list(Budget.objects.plain().filter(is_active=True).order_by("name", "pk"))
    for budget, status in zip(budgets, budget_statuses(budgets, at=at, forecasts=True), strict=True):
        rows.append(
            {
                "id": budget.pk,
                "name": budget.name,
                "scope": budget.scope,
                "period": budget.period,
                "period_start": status.period.start,
                "period_end": status.period.end,
                "currency": budget.currency,
                "spent": status.spent,
                "limit": status.limit,
                "remaining": status.remaining,
                "utilisation_percent": status.utilisation,
                "level": status.level_label,
                "forecast": None if status.forecast is None else status.forecast.amount,
                "forecast_text": "-" if status.forecast is None else status.forecast.describe(budget.currency),
                "forecast_label": status.forecast_label,
            }
        )
    return {"at": at, "rows": rows}


def _cost_per_lead(window: DayWindow) -> dict[str, Any]:
    """Cost per lead of the batches that finished in the day (their stored cost and leads), and the
    month to date as it stood at the day's end."""
    batches = list(
        Batch.objects.filter(finished_at__gte=window.start, finished_at__lt=window.end, cost_computed_at__isnull=False)
    )
    cost = sum((b.cost or Decimal(0) for b in batches), Decimal(0))
    leads = sum(b.leads or 0 for b in batches)
    mtd = month_to_date(at=window.end - timedelta(microseconds=1))
    note = ""
    if not batches:
        note = "no batch finished this day"
    elif leads == 0:
        note = f"undefined: {len(batches)} batch(es) produced no {lead_unit()}s"
    return {
        "value": cost_per_lead(cost, leads),
        "currency": MAIN_CURRENCY,
        "cost": cost if batches else None,
        "leads": leads if batches else None,
        "batches": len(batches),
        "unit": lead_unit(),
        "note": note,
        "month_to_date": {"cost": mtd.cost, "leads": mtd.leads, "value": mtd.cost_per_lead},
    }


def _gpu(window: DayWindow) -> dict[str, Any]:
    scope = f"provider:{GPU_PROVIDER}"
    rows = _rollups(window).filter(scope=scope).values("currency").annotate(**_SUMS).order_by()
    cost = sorted(
        ({"currency": r["currency"], **_counters(r)} for r in rows), key=lambda r: _currency_order(r["currency"])
    )
    # GPU time and utilisation come from the NVML samples taken in the day (one per device per
    # interval, hourly by default), utilisation weighted by the time each sample covers.
    samples = GpuSample.objects.filter(sampled_at__gte=window.start, sampled_at__lt=window.end).values_list(
        "busy_gpu_hours", "idle_gpu_hours", "elapsed_seconds", "utilisation_percent"
    )
    busy = idle = seconds = weighted = Decimal(0)
    count = 0
    for sample_busy, sample_idle, elapsed, percent in samples.iterator(chunk_size=2000):
        count += 1
        busy, idle = busy + sample_busy, idle + sample_idle
        if elapsed:
            seconds += elapsed
            weighted += elapsed * percent
    utilisation = None
    if seconds > 0:
        utilisation = (weighted / seconds).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return {
        "scope": scope,
        "cost": cost,
        "hours": (busy + idle) if count else None,
        "idle_hours": idle if count else None,
        "hours_note": "" if count else "no GPU samples in the day",
        "samples": count,
        "utilisation_percent": utilisation,
        "utilisation_note": "" if utilisation is not None else "no GPU samples covering time in the day",
    }


def _bills(day: date) -> dict[str, Any]:
    """Each provider's last day billed up to `day` (UTC days; providers complete a day's costs late):
    metered against billed, as the difference rule and /metrics read them."""
    latest: dict[tuple[str, str], BillDrift] = {}
    for row in bill_drift(start=day - BILL_DRIFT_LOOKBACK, end=day + timedelta(days=1)):
        latest[(row.provider, row.currency)] = row  # sorted by day: the last one stays
    rows = [
        {
            "provider": row.provider,
            "day": row.day,
            "currency": row.currency,
            "metered": row.metered,
            "billed": row.billed,
            "difference": row.difference,
            "drift_percent": row.drift_percent,
            "coverage_percent": row.coverage_percent,
        }
        for _, row in sorted(latest.items())
    ]
    return {"sources": BillingSource.objects.exists(), "rows": rows}


def _alerts(window: DayWindow) -> dict[str, Any]:
    """Alerts that fired (first or again) in the day, in the order they fired."""
    fired = Alert.objects.filter(
        Q(first_fired_at__gte=window.start, first_fired_at__lt=window.end)
        | Q(last_fired_at__gte=window.start, last_fired_at__lt=window.end)
    )
    rows = [
        {
            "id": alert.pk,
            "title": alert.title,
            "level": alert.level,
            "label": alert.label,
            "state": alert.state,
            "source": alert.source,
            "scope": alert.scope,
            "first_fired_at": alert.first_fired_at,
            "last_fired_at": alert.last_fired_at,
            "value": alert.value,
            "threshold": alert.threshold,
            "currency": alert.currency,
        }
        for alert in fired.order_by("last_fired_at", "pk")[:ALERTS_LISTED]
    ]
    return {"count": fired.count() if len(rows) == ALERTS_LISTED else len(rows), "rows": rows}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def daily_report_build(*, day: date, now: datetime | None = None) -> dict[str, Any]:
    """The report of the local calendar day `day`, JSON-ready (see the module docstring)."""
    now = now or timezone.now()
    window = day_window(day)
    totals = _totals(window)
    report = {
        "kind": REPORT_KIND,
        "version": REPORT_VERSION,
        "day": day,
        "time_zone": str(window.tz),
        "start": window.start,
        "end": window.end,
        "window": {
            "bucket_start": window.bucket_start,
            "bucket_end": window.bucket_end,
            "hours": int((window.bucket_end - window.bucket_start) / _HOUR),
            "exact": window.bucket_start == window.start and window.bucket_end == window.end,
        },
        "generated_at": now,
        "complete": now >= window.end,
        "currency": MAIN_CURRENCY,
        "totals": totals,
        "hourly": _hourly(window),
        "breakdowns": {kind: _breakdown(window, kind, totals) for kind in BREAKDOWN_KINDS},
        "top_subjects": _top_subjects(window, totals),
        "budgets": _budgets(window, now),
        "cost_per_lead": _cost_per_lead(window),
        "gpu": _gpu(window),
        "bills": _bills(day),
        "alerts": _alerts(window),
    }
    return _jsonable(report)
