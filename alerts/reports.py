"""The daily cost report: one local calendar day's spend, where it went, budgets, GPU and alerts.

- daily_report_build(day=...) returns the report as a JSON-ready dict (amounts as decimal
  strings with their currency, times as ISO-8601). Every money figure and counter comes from
  the hourly rollups (SpendRollup), never from the ledger, so a report costs the same whatever
  the ledger's size: it reads the day's rollup rows (the bucket index) and one row per budget.
- daily_report_subject / daily_report_text / daily_report_html render it for the email.
- daily_report_send(day=...) puts one report notification per report channel in the outbox,
  idempotently (the dedup key names the day and the channel: two beat ticks send once).

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
from django.template.loader import render_to_string
from django.utils import timezone

from budgets.levels import FORECAST_COLOUR, LEVEL_COLOURS, OK
from budgets.models import Budget
from budgets.selectors import budget_statuses
from core.money import MONEY_QUANTUM, format_money
from core.periods import DAILY, hour_floor, period_bounds
from tracking.batches import cost_per_lead, lead_unit, month_to_date
from tracking.models import ROLLUP_COUNTERS, Batch, BillingSource, CostEntry, GpuSample, SpendRollup
from tracking.rollups import entry_scopes
from tracking.selectors import BillDrift, bill_drift, scope_filter

from .evaluation import BILL_DRIFT_LOOKBACK
from .models import Alert, AlertSource, Channel, Notification, NotificationKind
from .services import channel_default_email_ensure, notification_enqueue

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


# --- rendering -----------------------------------------------------------------------------------


def _d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _money(value: str | Decimal, currency: str) -> str:
    """Cents for people; an amount that would show as 0.00 keeps its own digits (0.0031 USD)."""
    amount = Decimal(value)
    rounded = amount.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    if rounded == 0 and amount != 0:
        return format_money(amount.normalize(), currency, places=2)
    return format_money(rounded, currency)


def _signed_money(value: str, currency: str) -> str:
    text = _money(value, currency)
    return text if text.startswith("-") else f"+{text}"


def _signed_percent(value: str | None) -> str:
    """A change in percent to one place, as the title and the body both show it."""
    if value is None:
        return "n/a"
    rounded = Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    if rounded == 0:
        return f"{abs(rounded)} %"  # neither "+-0" nor "-0.0" for a change that rounds to nothing
    return f"{'+' if rounded > 0 else ''}{rounded} %"


def _percent_text(value: str | None) -> str:
    return "" if value is None else f"{Decimal(value).quantize(Decimal('0.1'), rounding=ROUND_HALF_EVEN)} %"


def _day_label(day: date, *, year: bool = True) -> str:
    return f"{day:%a} {day.day} {day:%b}" + (f" {day:%Y}" if year else "")


def _count(value: int) -> str:
    return f"{value:,}"


def _breakdown_view(
    title: str, section: Mapping[str, Any], *, empty: str, none_label: str, subtitle: str = ""
) -> dict[str, Any]:
    rows = section["rows"]
    biggest: dict[str, Decimal] = {}
    for row in rows:
        biggest[row["currency"]] = max(biggest.get(row["currency"], Decimal(0)), Decimal(row["amount"]))
    shown = []
    for row in rows[:SHOWN_ROWS]:
        top = biggest[row["currency"]]
        amount = Decimal(row["amount"])
        shown.append(
            {
                "name": row["name"],
                "currency": row["currency"],
                "amount": _money(row["amount"], row["currency"]),
                "share": _percent_text(row["share_percent"]),
                "events": _count(row["events"]),
                "errors": _count(row["errors"] + row["rate_limited"]),
                "bar": int(amount * 100 / top) if top > 0 and amount > 0 else 0,
            }
        )
    hidden = rows[SHOWN_ROWS:]
    more = ""
    if hidden:
        sums: dict[str, Decimal] = {}
        for row in hidden:
            sums[row["currency"]] = sums.get(row["currency"], Decimal(0)) + Decimal(row["amount"])
        more = f"... and {len(hidden)} more ({', '.join(_money(v, c) for c, v in sums.items())})"
    for rest in section.get("unattributed", []):
        shown.append(
            {
                "name": none_label,
                "currency": rest["currency"],
                "amount": _money(rest["amount"], rest["currency"]),
                "share": _percent_text(rest["share_percent"]),
                "events": _count(rest["events"]),
                "errors": _count(rest["errors"] + rest["rate_limited"]),
                "bar": 0,
                "muted": True,
            }
        )
    # The main currency first; within a currency, the row without a name last.
    shown.sort(key=lambda row: _currency_order(row["currency"]))
    return {
        "title": title,
        "subtitle": subtitle,
        "available": section.get("available", True),
        "note": section.get("note", ""),
        "empty": empty,
        "rows": shown,
        "more": more,
    }


def _view(report: Mapping[str, Any]) -> dict[str, Any]:
    """Display strings for both renderers (the text and the HTML say the same)."""
    day = date.fromisoformat(report["day"])
    tz = ZoneInfo(report["time_zone"])
    totals = []
    for total in report["totals"]:
        currency = total["currency"]
        comparisons = []
        for key in ("previous_day", "same_weekday_last_week"):
            c = total[key]
            comparisons.append(
                {
                    "label": f"vs {_day_label(date.fromisoformat(c['day']), year=False)}",
                    "amount": _money(c["amount"], currency),
                    "change": _signed_money(c["change"], currency),
                    "percent": _signed_percent(c["change_percent"]),
                }
            )
        tokens = [(label, _count(total[name])) for name, label in _TOKEN_LABELS.items() if total[name]]
        totals.append(
            {
                "currency": currency,
                "amount": _money(total["amount"], currency),
                "comparisons": comparisons,
                "events": _count(total["events"]),
                "errors": _count(total["errors"]),
                "rate_limited": _count(total["rate_limited"]),
                "unpriced": _count(total["unpriced"]),
                "tokens": tokens,
            }
        )

    hourly = report["hourly"]
    hour_amounts = [Decimal(h["amount"]) for h in hourly["hours"]]
    peak = max(hour_amounts, default=Decimal(0))
    bars = []
    for hour, amount in zip(hourly["hours"], hour_amounts, strict=True):
        start = datetime.fromisoformat(hour["start"]).astimezone(tz)
        bars.append(
            {
                "label": f"{start:%H}",
                "title": f"{start:%H:%M %Z}: {_money(amount, hourly['currency'])}",
                "height": max(1, int(amount * 60 / peak)) if peak > 0 and amount > 0 else 0,
            }
        )
    busiest = ""
    if peak > 0:
        index = hour_amounts.index(peak)
        start = datetime.fromisoformat(hourly["hours"][index]["start"]).astimezone(tz)
        busiest = f"{start:%H:%M}-{(start + _HOUR).astimezone(tz):%H:%M}: {_money(peak, hourly['currency'])}"

    breakdowns = report["breakdowns"]
    sections = [
        _breakdown_view("By provider", breakdowns["provider"], empty="No spend.", none_label="(no provider)"),
        _breakdown_view(
            "By service", breakdowns["service"], empty="No spend with a service.", none_label="(no service)"
        ),
        _breakdown_view("By model", breakdowns["model"], empty="No spend.", none_label="(no model)"),
        _breakdown_view(
            "By operation", breakdowns["operation"], empty="No spend with an operation.", none_label="(no operation)"
        ),
    ]
    subjects = report["top_subjects"]
    counts = ", ".join(f"{c['subjects']:,} in {c['currency']}" for c in subjects["counts"])
    subject_view = _breakdown_view(
        f"Top {subjects['limit']} subjects",
        subjects,
        empty="No spend with a subject.",
        none_label="(no subject)",
        subtitle=f"out of {counts}" if counts else "",
    )

    budgets_at = datetime.fromisoformat(report["budgets"]["at"]).astimezone(tz)
    budgets = []
    for b in report["budgets"]["rows"]:
        currency = b["currency"]
        utilisation = _d(b["utilisation_percent"])
        budgets.append(
            {
                "name": b["name"],
                "scope": b["scope"],
                "period": b["period"],
                "spent": _money(b["spent"], currency),
                "limit": _money(b["limit"], currency),
                "remaining": _money(b["remaining"], currency),
                "utilisation": "-" if utilisation is None else f"{utilisation} %",
                "bar": 0 if utilisation is None else int(min(max(utilisation, Decimal(0)), Decimal(100))),
                "level": "; ".join(filter(None, [b["level"], b["forecast_label"]])),
                "colour": LEVEL_COLOURS.get(b["level"] if b["level"] != OK else None, LEVEL_COLOURS[None]),
                "forecast": b["forecast_text"],
            }
        )

    cpl = report["cost_per_lead"]
    unit = cpl.get("unit") or "lead"

    def per_unit(value: Any) -> str:  # to 4 places, as the rules and the admin show it
        return format_money(_d(value).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN), cpl["currency"])

    if cpl["value"] is None:
        cost_per_lead = f"n/a ({cpl['note']})" if cpl.get("note") else "n/a"
    else:
        cost_per_lead = (
            f"{per_unit(cpl['value'])} per {unit} "
            f"({_money(cpl['cost'], cpl['currency'])} for {_count(int(cpl['leads']))} {unit}s "
            f"in {_count(int(cpl['batches']))} batches)"
        )
    mtd = cpl.get("month_to_date")
    if mtd:
        shown = "undefined" if mtd["value"] is None else f"{per_unit(mtd['value'])} per {unit}"
        cost_per_lead += (
            f"; month to date {shown} ({_money(mtd['cost'], cpl['currency'])} for {_count(int(mtd['leads']))} {unit}s)"
        )

    gpu = report["gpu"]
    gpu_cost = ", ".join(
        f"{_money(c['amount'], c['currency'])} ({_count(c['events'])} {'entry' if c['events'] == 1 else 'entries'})"
        for c in gpu["cost"]
    )
    gpu_view = {
        "cost": gpu_cost or _money(ZERO, MAIN_CURRENCY),
        "hours": f"{Decimal(gpu['hours']).quantize(_PERCENT)} h ({Decimal(gpu['idle_hours']).quantize(_PERCENT)} h idle)"
        if gpu["hours"] is not None
        else f"n/a ({gpu['hours_note']})",
        "utilisation": (
            f"{gpu['utilisation_percent']} %"
            if gpu["utilisation_percent"] is not None
            else f"n/a ({gpu['utilisation_note']})"
        ),
    }

    bills = [
        {
            "provider": b["provider"],
            "day": _day_label(date.fromisoformat(b["day"]), year=False),
            "metered": _money(b["metered"], b["currency"]),
            "billed": _money(b["billed"], b["currency"]),
            "difference": _signed_money(b["difference"], b["currency"]),
            "drift": _signed_percent(b["drift_percent"]),
            "coverage": _percent_text(b["coverage_percent"]) or "n/a",
        }
        for b in report.get("bills", {}).get("rows", [])
    ]
    bills_note = (
        "No provider bills are imported (Spend tracking → Billing sources)."
        if not report.get("bills", {}).get("sources")
        else "No day billed in the last 35 days."
    )

    alerts = []
    for a in report["alerts"]["rows"]:
        fired = datetime.fromisoformat(a["last_fired_at"]).astimezone(tz)
        alerts.append(
            {
                "time": f"{fired:%H:%M}",
                "level": a["label"],
                "colour": FORECAST_COLOUR if a["source"] == AlertSource.FORECAST else LEVEL_COLOURS.get(a["level"]),
                "state": a["state"],
                "title": a["title"],
            }
        )
    window = report["window"]
    return {
        "subject": daily_report_subject(report),
        "day": _day_label(day),
        "time_zone": report["time_zone"],
        "hours": window["hours"],
        "window_note": ""
        if window["exact"]
        else f"Rollups are hourly: read from {window['bucket_start']} to {window['bucket_end']} (UTC).",
        "partial": not report["complete"],
        "totals": totals,
        "hourly_bars": bars,
        "hourly_currency": hourly["currency"],
        "busiest": busiest,
        "sections": [*sections[:3], subject_view, sections[3]],
        "budgets": budgets,
        "budgets_at": f"{_day_label(budgets_at.date())} {budgets_at:%H:%M}",
        "cost_per_lead": cost_per_lead,
        "gpu": gpu_view,
        "bills": bills,
        "bills_note": bills_note,
        "alerts": alerts,
        "alerts_count": report["alerts"]["count"],
        "alerts_more": report["alerts"]["count"] - len(alerts),
    }


def daily_report_subject(report: Mapping[str, Any]) -> str:
    """e.g. "costcontrol daily report for Sun 22 Nov 2026: 1,234.56 USD (+12 % vs the day before)"."""
    main = next(t for t in report["totals"] if t["currency"] == report["currency"])
    percent = main["previous_day"]["change_percent"]
    change = "nothing spent the day before" if percent is None else f"{_signed_percent(percent)} vs the day before"
    day = date.fromisoformat(report["day"])
    return f"costcontrol daily report for {_day_label(day)}: {_money(main['amount'], main['currency'])} ({change})"


def _table(rows: list[list[str]], *, right: Iterable[int] = (), indent: str = "  ") -> list[str]:
    """Rows of cells as aligned lines; columns in `right` are right-aligned."""
    if not rows:
        return []
    right = set(right)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def daily_report_text(report: Mapping[str, Any]) -> str:
    """The plain-text part: the same figures as the HTML, in aligned columns."""
    v = _view(report)
    out = [f"costcontrol daily report: {v['day']} ({v['time_zone']}, {v['hours']} hours)"]
    if v["partial"]:
        out.append("The day is not over: figures so far.")
    if v["window_note"]:
        out.append(v["window_note"])
    out += ["", "TOTAL SPEND"]
    for t in v["totals"]:
        rows = [["spent", t["amount"], "", ""]]
        rows += [[c["label"], c["amount"], c["change"], c["percent"]] for c in t["comparisons"]]
        out += _table(rows, right=(1, 2, 3))
        out.append(
            f"  events {t['events']}, errors {t['errors']}, rate-limited {t['rate_limited']}, unpriced {t['unpriced']}"
        )
        if t["tokens"]:
            out.append("  tokens: " + ", ".join(f"{label} {n}" for label, n in t["tokens"]))
        out.append("")
    if v["busiest"]:
        out += [f"  busiest hour {v['busiest']}", ""]
    for section in v["sections"]:
        out.append(section["title"].upper() + (f" ({section['subtitle']})" if section["subtitle"] else ""))
        if not section["available"]:
            out.append(f"  {section['note']}")
        elif not section["rows"]:
            out.append(f"  {section['empty']}")
        else:
            header = ["", "amount", "share", "events", "failed"]
            body = [[r["name"], r["amount"], r["share"], r["events"], r["errors"]] for r in section["rows"]]
            out += _table([header, *body], right=(1, 2, 3, 4))
            if section["more"]:
                out.append(f"  {section['more']}")
        out.append("")
    out.append(f"BUDGETS (as of {v['budgets_at']})")
    if v["budgets"]:
        header = ["", "scope", "period", "spent", "limit", "used", "level", "forecast"]
        body = [
            [b["name"], b["scope"], b["period"], b["spent"], b["limit"], b["utilisation"], b["level"], b["forecast"]]
            for b in v["budgets"]
        ]
        out += _table([header, *body], right=(3, 4, 5, 7))
    else:
        out.append("  No active budgets.")
    out += ["", "COST PER LEAD", f"  {v['cost_per_lead']}", ""]
    gpu = v["gpu"]
    out += ["GPU", *_table([["cost", gpu["cost"]], ["hours", gpu["hours"]], ["utilisation", gpu["utilisation"]]]), ""]
    out.append("METERED VS BILLED (each provider's last day billed, UTC)")
    if v["bills"]:
        header = ["", "day", "metered", "billed", "difference", "", "seen"]
        body = [
            [b["provider"], b["day"], b["metered"], b["billed"], b["difference"], b["drift"], b["coverage"]]
            for b in v["bills"]
        ]
        out += _table([header, *body], right=(2, 3, 4, 5, 6))
    else:
        out.append(f"  {v['bills_note']}")
    out.append("")
    out.append(f"ALERTS FIRED ({v['alerts_count']})")
    if v["alerts"]:
        out += _table([[a["time"], a["level"], a["state"], a["title"]] for a in v["alerts"]])
        if v["alerts_more"]:
            out.append(f"  ... and {v['alerts_more']} more")
    else:
        out.append("  None.")
    return "\n".join(out) + "\n"


def daily_report_html(report: Mapping[str, Any]) -> str:
    """The HTML part: tables with inline-CSS bars, no images, no scripts; user strings are escaped
    by the template's autoescaping (django.utils.html.conditional_escape)."""
    return render_to_string("alerts/report.html", _view(report))


# --- sending ---------------------------------------------------------------------------------------


def report_dedup_key(day: date, channel: Channel) -> str:
    return f"report:{day.isoformat()}:{channel.pk}"


def daily_report_send(*, day: date | None = None) -> int:
    """Queue the report of `day` (default: yesterday in TIME_ZONE) for every enabled channel that
    receives reports; returns how many notifications were written. Idempotent per (day, channel)."""
    day = day or report_day_default()
    channel_default_email_ensure()
    channels = list(Channel.objects.filter(receives_reports=True, is_enabled=True).order_by("pk"))
    keys = {channel.pk: report_dedup_key(day, channel) for channel in channels}
    # Only saves building the report again on a repeated tick; the outbox's unique key is the guard.
    done = set(Notification.objects.filter(dedup_key__in=keys.values()).values_list("dedup_key", flat=True))
    channels = [channel for channel in channels if keys[channel.pk] not in done]
    if not channels:
        return 0
    report = daily_report_build(day=day)
    subject, text, html = daily_report_subject(report), daily_report_text(report), daily_report_html(report)
    written = 0
    for channel in channels:
        notification = notification_enqueue(
            channel=channel,
            kind=NotificationKind.REPORT,
            dedup_key=keys[channel.pk],
            subject=subject,
            text=text,
            html=html,
            payload={"report": report},
        )
        written += notification is not None
    logger.info("daily report for %s queued for %d channel(s)", day.isoformat(), written)
    return written
