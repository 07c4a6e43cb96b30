"""The daily cost report as an email: its subject, plain text and HTML from the report alerts.reports builds, and
the sending (one report notification per report channel in the outbox, idempotent per day and channel: the dedup
key names both, so two beat ticks send once)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.template.loader import render_to_string

from budgets.levels import FORECAST_COLOUR, LEVEL_COLOURS, OK
from core.money import format_money

from .models import AlertSource, Channel, Notification, NotificationKind
from .reports import (
    _CENT,
    _HOUR,
    _PERCENT,
    _TOKEN_LABELS,
    MAIN_CURRENCY,
    SHOWN_ROWS,
    ZERO,
    _currency_order,
    daily_report_build,
    report_day_default,
)
from .services import channel_default_email_ensure, notification_enqueue

logger = logging.getLogger(__name__)


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
