"""A budget's change page beyond the form: this period's burn-down and figures (with the providers' bills where it
counts them), the history of its periods, links to its entries and alerts (budget_page, one status read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal
from itertools import pairwise
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.models import Team
from core.money import ZERO
from core.periods import hour_floor
from core.scopes import (
    scope_inner,
    scope_team,
)
from tracking.selectors import billed_days

from .admin_display import EMPTY, level_badge, money, percent_text
from .levels import FORECAST_COLOUR, LEVEL_COLOURS, LEVEL_ORDER, level_label, percent_level
from .models import Budget, BudgetPeriod
from .selectors import BudgetStatus, budget_burn_down, budget_statuses

DATE = "%Y-%m-%d"


MINUTE = "%Y-%m-%d %H:%M"


def forecast_badge(label: str) -> SafeString:
    return format_html(
        '<span style="border:1px solid {0};color:{0};border-radius:3px;padding:0 4px;font-size:11px">{1}</span>',
        FORECAST_COLOUR,
        label,
    )


def _local(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo(settings.TIME_ZONE))


def _ms(moment: datetime) -> int:
    """A moment as the milliseconds since the epoch the chart's time axis counts in."""
    return int(moment.timestamp() * 1000)


def _point(moment: datetime, value: Decimal, currency: str, text: str | None = None) -> dict[str, Any]:
    """A chart point: x (ms), y (the exact amount as a decimal string), and the words its tooltip shows."""
    return {
        "x": _ms(moment),
        "y": str(value),
        "text": money(value, currency) if text is None else text,
        "when": f"{_local(moment):{MINUTE}}",
    }


def _ticks(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The time axis's ticks at local boundaries: every 3 hours for a day, midnights up to two months,
    the first of each month beyond."""
    tz = ZoneInfo(settings.TIME_ZONE)
    first, last = _local(start), _local(end)
    moments: list[tuple[datetime, str]] = []
    if end - start <= timedelta(days=1):
        moment = first
        while moment <= last:
            moments.append((moment, f"{moment:%H:%M}"))
            moment = (moment.astimezone(UTC) + timedelta(hours=3)).astimezone(tz)
    else:
        day = first.date()
        while (midnight := datetime.combine(day, time(0), tzinfo=tz)) <= last:
            if end - start <= timedelta(days=62):
                moments.append((midnight, f"{midnight:%-d %b}"))
            elif day.day == 1:
                moments.append((midnight, f"{midnight:%b %Y}"))
            day += timedelta(days=1)
    return [{"x": _ms(moment), "label": label} for moment, label in moments if start <= moment <= end]


def _round_up(value: Decimal) -> Decimal:
    """`value` rounded up to a half or whole power of ten's multiple (3,803.70 -> 4,000), for an axis's top."""
    if value <= 0:
        return Decimal(1)
    step = Decimal(10) ** (value.adjusted()) / 2
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


@dataclass(frozen=True)
class Step:
    """A row of the burn-down's table: what was spent in one step (a local hour or day) of the period."""

    until: str
    spent: str
    spent_to_date: str
    remaining: str


def burn_down(status: BudgetStatus) -> tuple[dict[str, Any] | None, list[Step]]:
    """The current period's burn-down as the chart draws it (spent so far, even pace, forecast with its
    interval, a line per threshold, the limit, now) and its steps as a table, from budget_burn_down."""
    chart = budget_burn_down(status)
    if chart is None:
        return None, []
    currency, limit, start, end, at = status.currency, chart.limit, chart.start, chart.end, status.at
    spent = [(moment, limit - remaining) for moment, remaining in chart.points]
    steps = [
        Step(
            until=f"{_local(moment):{MINUTE}}",
            spent=money(value - before, currency),
            spent_to_date=money(value, currency),
            remaining=money(limit - value, currency),
        )
        for (_, before), (moment, value) in pairwise(spent)
    ]
    series: list[dict[str, Any]] = [
        {
            "label": "spent so far",
            "name": "spent so far",
            "colour": "#417690",
            "style": "actual",
            "points": [_point(moment, value, currency) for moment, value in spent],
        },
        {
            "label": "even pace (the limit spent evenly)",
            "name": "even pace",
            "colour": "#868e96",
            "style": "dashed",
            "points": [_point(start, Decimal(0), currency), _point(end, limit, currency)],
        },
    ]
    forecast = status.forecast
    thresholds = [
        (percent, percent_level(Decimal(str(percent))), limit * Decimal(str(percent)) / 100)
        for percent in status.budget.thresholds
        if Decimal(str(percent)) != 100  # the limit's own line
    ]
    top = max([limit, *(value for _, value in spent), *(amount for _, _, amount in thresholds)])
    if forecast is not None:
        top = max(top, forecast.amount)
    # The chart compares spend with the limit: an interval reaching far above everything else (a young
    # or erratic history) is cut at the chart's top, its reach said in the legend and the table.
    y_max = _round_up(top * Decimal("1.25")) if forecast is not None and forecast.high > top * Decimal("1.25") else None
    if forecast is not None:
        now_spent = status.spent
        series.append(
            {
                "label": f"forecast ({forecast.method})",
                "name": "forecast",
                "colour": FORECAST_COLOUR,
                "style": "forecast",
                "points": [_point(at, now_spent, currency), _point(end, forecast.amount, currency)],
            }
        )
        interval = f"{forecast.interval * 100:.0f} % interval"
        series.append(
            {
                "label": f"{interval} (low)",
                "name": interval,
                "colour": FORECAST_COLOUR,
                "style": "band-low",
                "legend": False,
                "points": [_point(at, now_spent, currency), _point(end, forecast.low, currency)],
            }
        )
        reach = f"{money(forecast.low, currency)} to {money(forecast.high, currency)}"
        series.append(
            {
                "label": f"forecast, {interval}" + (f" ({reach}, cut at the top)" if y_max else ""),
                "name": f"forecast, {interval}",
                "colour": FORECAST_COLOUR,
                "style": "band-high",
                "points": [_point(at, now_spent, currency), _point(end, forecast.high, currency, reach)],
            }
        )
        top = max(top, forecast.high) if y_max is None else y_max
    for percent, level, amount in thresholds:
        series.append(
            {
                "label": f"{percent} % threshold ({level_label(level)}): {money(amount, currency)}",
                "name": f"{percent} % threshold ({level_label(level)})",
                "colour": LEVEL_COLOURS[level],
                "style": "threshold",
                "points": [_point(start, amount, currency), _point(end, amount, currency)],
            }
        )
    carried = (
        f" (incl. {money(status.period.carried_over, currency)} carried over)" if status.period.carried_over else ""
    )
    series.append(
        {
            "label": f"limit: {money(limit, currency)}{carried}",
            "name": "limit",
            "colour": LEVEL_COLOURS["exceeded"],
            "style": "limit",
            "points": [_point(start, limit, currency), _point(end, limit, currency)],
        }
    )
    when = f"{_local(at):{MINUTE}}"
    series.append(
        {
            "label": f"now ({when})",
            "name": "now",
            "colour": "#212529",
            "style": "now",
            "points": [_point(at, Decimal(0), currency, when), _point(at, top, currency, when)],
        }
    )
    data = {
        "currency": currency,
        "yMax": None if y_max is None else str(y_max),
        "step": chart.step,
        "timeZone": settings.TIME_ZONE,
        "start": _ms(start),
        "end": _ms(end),
        "ticks": _ticks(start, end),
        "series": series,
    }
    return data, steps


@dataclass(frozen=True)
class HistoryRow:
    """A row of the period history: one period's limit (the budget's amount + what was carried in),
    what was spent and the highest level it reached; the open period's as it stands now."""

    short: str  # the chart's label
    range: str  # the table's
    amount: Decimal
    carried: Decimal
    limit: Decimal
    spent: Decimal | None
    used: Decimal | None
    level: str | None
    is_open: bool


HISTORY_CHART_PERIODS = 24


def _period_names(period: BudgetPeriod) -> tuple[str, str]:
    """(short, range): "Oct 2026" and "2026-10-01 - 2026-10-31" for a calendar month."""
    start = _local(period.start)
    if period.end is None:
        return "lifetime", f"from {start:{DATE}} (lifetime)"
    last_day = _local(period.end) - timedelta(microseconds=1)
    days = (last_day.date() - start.date()).days + 1
    text = f"{start:{DATE}}" if days == 1 else f"{start:{DATE}} - {last_day:{DATE}}"
    if days == 1:
        short = f"{start:%-d %b %Y}"
    elif days <= 7:
        short = f"week of {start:%-d %b %Y}"
    elif start.day == 1 and days <= 31:
        short = f"{start:%b %Y}"
    elif start.day == 1 and start.month % 3 == 1 and days <= 92:
        short = f"Q{(start.month - 1) // 3 + 1} {start:%Y}"
    elif start.day == 1 and start.month == 1:
        short = f"{start:%Y}"
    else:
        short = f"{start:%-d %b} - {last_day:%-d %b %Y}"
    return short, text


def period_history(budget: Budget, status: BudgetStatus | None) -> list[HistoryRow]:
    """Every period of `budget`, newest first; the open one with what `status` says now (also when it
    is not opened yet: the beat or the first reservation opens it)."""
    rows = []
    periods = list(budget.periods.order_by("-start"))
    if status is not None and status.period.pk is None:
        periods.insert(0, status.period)
    for period in periods:
        short, text = _period_names(period)
        if period.closed_at is not None:
            limit, spent, level = period.limit, period.spent_at_close, period.peak_level or None
        elif status is not None and period.start == status.period.start:
            limit, spent, level = status.limit, status.spent, status.level
        else:
            limit, spent, level = budget.amount + period.carried_over, None, period.peak_level or None
        used = None if spent is None or limit <= 0 else spent * 100 / limit
        rows.append(
            HistoryRow(
                short=short,
                range=text if period.closed_at else f"{text} (open)",
                amount=limit - period.carried_over,
                carried=period.carried_over,
                limit=limit,
                spent=spent,
                used=used,
                level=level,
                is_open=period.closed_at is None,
            )
        )
    return rows


def history_chart(rows: list[HistoryRow], currency: str) -> dict[str, Any] | None:
    """The closed periods (the last 24, oldest first) as bars: the limit (the budget's amount and what
    was carried in, stacked) beside what was spent, coloured by the period's peak level."""
    closed = [row for row in rows if not row.is_open][:HISTORY_CHART_PERIODS][::-1]
    if not closed:
        return None

    def bar(value: Decimal, text: str | None = None) -> dict[str, str]:
        return {"y": str(value), "text": money(value, currency) if text is None else text}

    levels = [row.level for row in closed]
    return {
        "currency": currency,
        "labels": [row.short for row in closed],
        "ranges": [row.range for row in closed],
        "bars": [
            {
                "label": "budget amount",
                "stack": "limit",
                "colours": ["#adb5bd"] * len(closed),
                "points": [bar(row.amount) for row in closed],
            },
            {
                "label": "carried over",
                "stack": "limit",
                "colours": ["#74c0fc"] * len(closed),
                "points": [bar(row.carried) for row in closed],
            },
            {
                "label": "spent (colour: peak level)",
                "stack": "spent",
                "colours": [LEVEL_COLOURS[level] for level in levels],
                "points": [
                    bar(
                        row.spent or Decimal(0),
                        f"{money(row.spent, currency)} ({percent_text(row.used)} of "
                        f"{money(row.limit, currency)}; peak level {level_label(row.level)})",
                    )
                    for row in closed
                ],
            },
        ],
        "levels": [
            {"label": f"peak level {level_label(level)}", "colour": LEVEL_COLOURS[level]}
            for level in (None, *LEVEL_ORDER)
            if level in levels
        ],
    }


def _cost_entry_filters(budget: Budget, status: BudgetStatus) -> dict[str, str]:
    """The cost entry list's filters that show the entries counting towards `budget` this period: its
    currency, the period's dates (occurred_at__gte/__lt, the date filter's own parameters), the team
    of a team's scope (the team filter's `team`) and the scope's dimension as a field lookup
    (provider, service, model, subject, job, tags__KEY)."""
    found = {
        "currency": budget.currency,
        "occurred_at__gte": status.period.start.isoformat(),
    }
    if status.period.end is not None:
        found["occurred_at__lt"] = status.period.end.isoformat()
    if (team := scope_team(budget.scope)) is not None:
        team_pk = Team.objects.filter(name=team).values_list("pk", flat=True).first()
        found["team"] = str(team_pk or 0)
    inner = scope_inner(budget.scope)
    kind, _, value = inner.partition(":")
    if kind == "tag":
        key, _, tag_value = value.partition("=")
        found[f"tags__{key}"] = tag_value
    elif kind in ("provider", "service", "model", "subject", "job"):
        found[kind] = value
    return found


def budget_links(request: HttpRequest, budget: Budget, status: BudgetStatus | None) -> list[tuple[str, str]]:
    """(text, url) of the pages about `budget` the user may open: its alerts, its cost entries this
    period, its reservations."""
    links = []
    user = request.user
    if user.has_perm("alerts.view_alert"):
        count = budget.alerts.count()
        url = f"{reverse('admin:alerts_alert_changelist')}?{urlencode({'budget__id__exact': budget.pk})}"
        links.append((f"Its alerts ({count})", url))
    if status is not None and user.has_perm("tracking.view_costentry"):
        url = f"{reverse('admin:tracking_costentry_changelist')}?{urlencode(_cost_entry_filters(budget, status))}"
        links.append(("Its cost entries this period", url))
    if user.has_perm("budgets.view_reservation"):
        count = budget.reservations.count()
        url = f"{reverse('admin:budgets_reservation_changelist')}?{urlencode({'budget__id__exact': budget.pk})}"
        links.append((f"Its reservations ({count})", url))
    return links


def _billed_rows(status: BudgetStatus) -> list[tuple[str, str]]:
    """How a budget that counts the providers' bills got its spend: which days are billed, which metered."""
    budget, period = status.budget, status.period
    if not budget.count_billed:
        return []
    until = hour_floor(status.at) + timedelta(hours=1)
    until = min(until, period.end) if period.end is not None else until
    days = billed_days(scope=budget.scope, currency=budget.currency, start=period.start, end=until)
    if not days:
        return [("providers' bills", "none imported for this period's closed days yet: the spend is metered")]
    billed = sum((d.billed for d in days), ZERO)
    metered = sum((d.metered for d in days), ZERO)
    return [
        (
            "providers' bills",
            f"counted for {len(days)} closed UTC day{'s' if len(days) != 1 else ''} ({days[0].day} to {days[-1].day}): "
            f"{money(billed, budget.currency)} billed instead of {money(metered, budget.currency)} metered; "
            "today and days without a bill are metered",
        )
    ]


def this_period_rows(status: BudgetStatus) -> list[tuple[str, str]]:
    """The current period in words and numbers (the table beside the burn-down)."""
    currency, period = status.currency, status.period
    rows = [
        ("period", f"{_period_names(period)[1]} ({settings.TIME_ZONE})"),
        ("spent so far", money(status.spent, currency)),
        *_billed_rows(status),
        (
            "limit",
            money(status.limit, currency)
            + (f" (incl. {money(period.carried_over, currency)} carried over)" if period.carried_over else ""),
        ),
        ("remaining", money(status.remaining, currency)),
        ("reserved", money(status.reserved, currency)),
        ("used", EMPTY if status.utilisation is None else f"{status.utilisation} %"),
    ]
    if period.end is not None:
        elapsed = Decimal((status.at - period.start) / (period.end - period.start))
        rows.append(("even pace by now", money(status.limit * min(max(elapsed, Decimal(0)), Decimal(1)), currency)))
    rows.append(("days left", EMPTY if status.days_left is None else str(status.days_left)))
    if status.forecast is not None:
        rows.append(("forecast at period end", status.forecast.describe(currency)))
    for percent in status.budget.thresholds:
        share = Decimal(str(percent))
        rows.append(
            (
                f"{percent} % threshold ({level_label(percent_level(share))})",
                money(status.limit * share / 100, currency),
            )
        )
    return rows


def budget_page(request: HttpRequest, budget: Budget) -> dict[str, Any]:
    """What the change page shows above and below the form, from one status read."""
    status = None
    if budget.is_active:
        [status] = budget_statuses([budget], at=timezone.now(), forecasts=True)
    chart, steps = burn_down(status) if status is not None else (None, [])
    history = period_history(budget, status)
    bars = history_chart(history, budget.currency)
    return {
        "status": status,
        "level": level_badge(status.level) if status else "",
        "forecast_badge": forecast_badge(status.forecast_label) if status and status.forecast_label else "",
        "rows": this_period_rows(status) if status else [],
        "burn_down": chart,
        "steps": steps,
        "history": [
            {
                "range": row.range,
                "amount": money(row.amount, budget.currency),
                "carried": money(row.carried, budget.currency),
                "limit": money(row.limit, budget.currency),
                "spent": money(row.spent, budget.currency)
                + (" so far" if row.is_open and row.spent is not None else ""),
                "used": percent_text(row.used),
                "level": level_badge(row.level),
                "is_open": row.is_open,
            }
            for row in history
        ],
        "history_chart": bars,
        "charts": {"burnDown": chart, "history": bars},
        "history_charted": min(HISTORY_CHART_PERIODS, sum(1 for row in history if not row.is_open)),
        "links": budget_links(request, budget, status),
    }
