"""What the admin cost dashboard shows, as tables (the charts draw the same rows).

Whose spend: the organisation's, or one team's. A team's view reads every figure from the team's
copies of the scopes (core.scopes: `team:NAME` for its whole spend, `team:NAME/model:X` for its
spend on a model, ...), its budgets, alerts and the batches its spend was charged to; one function,
DashboardFilters.within, turns each scope the dashboard reads into the viewed team's copy. A staff
member who is not a superuser views one of their teams (the `team` filter, their first team by
name unless they pick another); a superuser views the organisation unless they pick a team.

Filters: a date range (local days, TIME_ZONE) and at most one of provider, service or tag.
Rollups are kept per single dimension (provider:X, service:X, tag:K=V), so a filter selects the
scope every figure is read from; the intersection of two filters (provider X *and* service Y) is
not known without reading the ledger, and the form refuses it. Breakdowns that need a second
dimension under a filter are limited accordingly (see `notes`): with a provider filter, models
are those the catalog prices for that provider; subjects are shown unfiltered only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db.models import CharField, Exists, OuterRef, QuerySet, Sum, Value
from django.db.models.functions import Concat
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, AlertState
from analytics.filters import DashboardFilters
from analytics.tables import (
    CENT,
    COUNT,
    KIND,
    MONEY,
    NO_BILLS,
    PERCENT,
    SCOPE,
    TEXT,
    UNIT_COST,
    UNIT_QUANTUM,
    Card,
    Table,
    cents,
    money_words,
    percent_change,
    scope_words,
)
from budgets.levels import Level, level_rank
from budgets.models import Budget
from budgets.selectors import budget_statuses
from core.money import MONEY_QUANTUM, ZERO
from core.periods import period_bounds
from core.scopes import scope_inner
from tracking.admin import entries_url
from tracking.gpu import OPERATION_BUSY, OPERATION_IDLE
from tracking.models import TOKEN_FIELDS, Batch, BillingSource, GpuSample, Price, SpendRollupDay
from tracking.selectors import BillDrift, bill_drift, scope_totals, spend_totals

from .anomalies import Anomaly, spend_anomalies
from .recommendations import Recommendation, savings_recommendations
from .series import (
    DAY,
    HOUR,
    hour_floor,
    scope_value,
    spend_series_many,
)
from .trends import Trend, spend_trend

TOP = 10
ANOMALY_HOURS = 24


# --- filters ----------------------------------------------------------------------------------


# --- tables -------------------------------------------------------------------------------------


@dataclass
class DashboardData:
    filters: DashboardFilters
    now: datetime = field(default_factory=timezone.now)

    @property
    def scope(self) -> str:
        return self.filters.scope

    # --- spend today / this month vs last month ---

    @cached_property
    def _spend_windows(self) -> list[Decimal]:
        """Spend today, the same hours yesterday, this month, last month, last month to the same
        point, and the range: six windows in one statement (spend_total would take up to 18)."""
        scope, now = self.scope, self.now
        until = hour_floor(now) + HOUR
        day_start, _ = period_bounds("daily", now)
        month_start, _ = period_bounds("monthly", now)
        last_month_start, _ = period_bounds("monthly", month_start - HOUR)
        same_point = min(last_month_start + (until - month_start), month_start)
        range_start, range_end = self.filters.window
        return spend_totals(
            [
                (scope, "USD", day_start, until),
                (scope, "USD", day_start - DAY, until - DAY),
                (scope, "USD", month_start, until),
                (scope, "USD", last_month_start, month_start),
                (scope, "USD", last_month_start, hour_floor(same_point)),
                (scope, "USD", range_start, range_end),
            ]
        )

    @cached_property
    def cards(self) -> list[Card]:
        today, yesterday, month, last_month, last_month_so_far, _ = self._spend_windows
        return [
            Card("Spend today", today, "same hours yesterday", yesterday, percent_change(today, yesterday)),
            Card(
                "Spend this month",
                month,
                "last month to the same day",
                last_month_so_far,
                percent_change(month, last_month_so_far),
            ),
            Card("Last month", last_month),
            self.forecast_card,
        ]

    @cached_property
    def trend(self) -> Trend:
        return spend_trend(scope=self.scope, at=self.now, days=28, period="monthly")

    @property
    def forecast_card(self) -> Card:
        trend, forecast = self.trend, self.trend.forecast
        assert forecast is not None  # monthly periods always end
        slope = "" if trend.direction == "unknown" else f" ({trend.slope_per_day.quantize(CENT):+} USD/day)"
        return Card(
            "Forecast this month",
            forecast.amount,
            text=f"{forecast.interval * 100:.0f} % likely between {money_words(forecast.low)} and "
            f"{money_words(forecast.high)} ({forecast.method}); 28-day trend {trend.direction}{slope}",
        )

    @cached_property
    def range_total(self) -> Decimal:
        return self._spend_windows[5]

    @property
    def range_total_words(self) -> str:
        return money_words(self.range_total)

    # --- budgets and alerts ---

    @property
    def team(self) -> str:
        return self.filters.team

    def _of_view(self, query: QuerySet[Any]) -> QuerySet[Any]:
        """Budgets or alerts of the view: the viewed team's (every one in the organisation's view),
        on the filter's scope when there is one."""
        if self.team:
            query = query.filter(team__name=self.team)
        if self.filters.filtered:
            query = query.filter(scope=self.scope)
        return query

    @cached_property
    def budget_status_list(self) -> list[Any]:
        """The status of every active budget of the view (budgets.selectors.budget_statuses), the most
        used first."""
        budgets = list(self._of_view(Budget.objects.plain().filter(is_active=True).order_by("name")))
        statuses = budget_statuses(budgets, at=self.now, forecasts=True)
        return sorted(statuses, key=lambda s: (-(s.utilisation if s.utilisation is not None else -1), s.budget.name))

    @staticmethod
    def at_risk(status: Any) -> bool:
        return level_rank(status.level) >= level_rank(Level.WARNING) or bool(status.forecast_label)

    @cached_property
    def budget_summary(self) -> dict[str, Any]:
        """The budgets card: how many, how many at risk, and the most used one (spent of its limit)."""
        statuses = self.budget_status_list
        top = statuses[0] if statuses else None
        return {
            "count": len(statuses),
            "at_risk": sum(1 for s in statuses if self.at_risk(s)),
            "top": top,
            "top_spent": money_words(top.spent, top.currency) if top else "",
            "top_limit": money_words(top.limit, top.currency) if top else "",
            "top_percent": min(top.utilisation, Decimal(100)) if top and top.utilisation is not None else None,
        }

    @cached_property
    def budgets_at_risk(self) -> Table:
        rows, links = [], []
        for status in sorted(self.budget_status_list, key=lambda s: s.budget.name):
            budget = status.budget
            if not self.at_risk(status):
                continue
            rows.append(
                [
                    budget.name,
                    budget.scope,
                    cents(status.spent),
                    cents(status.limit),
                    "" if status.utilisation is None else status.utilisation,
                    "" if status.forecast is None else status.forecast.describe(budget.currency),
                    "; ".join(filter(None, [status.level_label, status.forecast_label])),
                ]
            )
            period = status.period
            links.append(
                {
                    0: reverse("admin:budgets_budget_change", args=[budget.pk]),
                    # What the spent figure adds up: the scope's entries in the period so far.
                    2: entries_url(budget.scope, start=period.start, end=period.end),
                }
            )
        return Table(
            "budgets",
            "Budgets at risk",
            ["budget", "scope", "spent", "limit", "used %", "forecast at period end", "level"],
            rows,
            note="Level warning or above, or forecast to exceed the limit before the period ends.",
            kinds=[TEXT, SCOPE, MONEY, MONEY, PERCENT, TEXT, TEXT],
            links=links,
        )

    @cached_property
    def open_alerts(self) -> Table:
        alerts = list(
            self._of_view(Alert.objects.filter(state=AlertState.FIRING).order_by("-last_fired_at")).select_related(
                "acknowledged_by"
            )[:50]
        )
        rows, links = [], []
        for a in alerts:
            handled = []
            if a.acknowledged_at is not None:
                by = a.acknowledged_by.get_username() if a.acknowledged_by else ""
                handled.append(f"acknowledged{' by ' + by if by else ''}")
            if a.is_muted:
                handled.append(f"muted until {timezone.localtime(a.muted_until):%Y-%m-%d %H:%M}")
            rows.append(
                [
                    timezone.localtime(a.last_fired_at).strftime("%Y-%m-%d %H:%M"),
                    a.label,
                    a.title,
                    a.scope,
                    "; ".join(handled) or "not acknowledged",
                ]
            )
            links.append({2: reverse("admin:alerts_alert_change", args=[a.pk])})
        return Table(
            "alerts",
            "Open alerts",
            ["fired", "level", "title", "scope", "handled"],
            rows,
            kinds=[TEXT, TEXT, TEXT, SCOPE, TEXT],
            links=links,
        )

    @cached_property
    def open_alert_count(self) -> int:
        return self._of_view(Alert.objects.filter(state=AlertState.FIRING)).count()

    @property
    def open_alert_count_words(self) -> str:
        return f"{self.open_alert_count:,}"

    # --- spend over time, stacked by provider ---

    @cached_property
    def _provider_series(self) -> dict[str, Any]:
        """Spend per day of each provider (or, under a filter, of the filtered scope), largest first:
        what the chart draws and both tables beside it add up."""
        start, end = self.filters.window
        if not self.filters.filtered:
            series = spend_series_many(start=start, end=end, step="day", prefixes=[self.filters.within("provider:")])
        else:
            series = spend_series_many(start=start, end=end, step="day", scopes=[self.scope])
        return {name: series[name] for name in sorted(series, key=lambda s: -sum((p.amount for p in series[s]), ZERO))}

    @property
    def split_by_provider(self) -> bool:
        """Whether the chart has a bar per provider (no filter): then a table of the providers' totals sits
        beside it and the table per day (a column per provider) goes below it at full width."""
        return not self.filters.filtered

    @cached_property
    def provider_totals(self) -> Table:
        """Each provider's spend over the range and its share, largest first, and the total."""
        start, end = self.filters.window
        totals = {name: sum((p.amount for p in points), ZERO) for name, points in self._provider_series.items()}
        whole = sum(totals.values(), ZERO)
        rows = [
            [scope_value(name), cents(amount), None if whole <= 0 else (amount * 100 / whole).quantize(Decimal("0.1"))]
            for name, amount in totals.items()
        ]
        rows.append(["total", cents(whole), Decimal(100) if whole > 0 else None])
        links = [dict.fromkeys((0, 1), entries_url(name, start=start, end=end)) for name in totals]
        links.append(dict.fromkeys((0, 1), entries_url(self.scope, start=start, end=end)))
        return Table(
            "providers",
            "Spend by provider over the range",
            ["provider", "spend", "share"],
            rows,
            kinds=[TEXT, MONEY, PERCENT],
            links=links,
        )

    @cached_property
    def spend_by_provider(self) -> Table:
        end = self.filters.window[1]
        series = self._provider_series
        note = ""
        if self.filters.filtered and not self.filters.provider:
            note = f"Filtered by {self.scope}: not split by provider (one dimension per rollup)."
        names = list(series)
        days = [p.start for p in next(iter(series.values()))] if series else []
        rows, links = [], []
        for index, day in enumerate(days):
            values = [series[name][index].amount for name in names]
            rows.append([timezone.localtime(day).date().isoformat(), *map(cents, values), cents(sum(values, ZERO))])
            until = min(day + DAY, end)
            # Each day's amounts drill down to the entries they add up: a provider's, and the day's.
            links.append(
                {
                    **{i + 1: entries_url(name, start=day, end=until) for i, name in enumerate(names)},
                    0: entries_url(self.scope, start=day, end=until),
                    len(names) + 1: entries_url(self.scope, start=day, end=until),
                }
            )
        return Table(
            "spend_by_provider",
            "Spend per day" + (f" of {scope_words(self.scope)}" if self.filters.filtered else " by provider"),
            ["day", *[scope_value(n) for n in names], "total"],
            rows,
            note=note,
            kinds=[TEXT, *[MONEY] * (len(names) + 1)],
            links=links,
        )

    # --- top models and subjects ---

    @cached_property
    def _model_subject_totals(self) -> dict[str, dict[str, Any]]:
        """Totals of every model and subject over the range: one read for both tables (subjects only
        without a filter, where their table is shown)."""
        start, end = self.filters.window
        kinds = ["model:"] if self.filters.filtered else ["model:", "subject:"]
        prefixes = [self.filters.within(kind) for kind in kinds]
        return scope_totals(
            start=start, end=end, prefixes=prefixes, counters=("amount", "events", "errors", *TOKEN_FIELDS)
        )

    def _totals(self, kind: str) -> dict[str, dict[str, Any]]:
        prefix = self.filters.within(kind)
        return {s: v for s, v in self._model_subject_totals.items() if s.startswith(prefix)}

    def models_table(self, limit: int | None = TOP) -> Table:
        totals = self._totals("model:")
        note = ""
        if self.filters.provider:
            catalog = set(Price.objects.filter(provider=self.filters.provider).values_list("model", flat=True))
            totals = {s: v for s, v in totals.items() if scope_value(s) in catalog}
            note = f"Models the price catalog lists for {self.filters.provider}."
        elif self.filters.filtered:
            return Table(
                "models",
                "Top models",
                ["model", "spend", "calls", "tokens"],
                [],
                note=_one_dimension(self.scope),
                kinds=[TEXT, MONEY, COUNT, COUNT],
            )
        ordered = sorted(totals.items(), key=lambda kv: (-kv[1]["amount"], kv[0]))
        shown = ordered if limit is None else ordered[:limit]
        rows = [
            [scope_value(s), cents(v["amount"]), v["events"], sum(int(v[n] or 0) for n in TOKEN_FIELDS)]
            for s, v in shown
        ]
        return Table(
            "models",
            "Top models",
            ["model", "spend", "calls", "tokens"],
            rows,
            note=note,
            kinds=[TEXT, MONEY, COUNT, COUNT],
            links=self._entry_links(s for s, _ in shown),
        )

    def _entry_links(self, scopes: Iterable[str]) -> list[dict[int, str]]:
        """Each row's name and amount drill down to the entries of its scope in the range."""
        start, end = self.filters.window
        return [dict.fromkeys((0, 1), entries_url(scope, start=start, end=end)) for scope in scopes]

    def subjects_table(self, limit: int | None = TOP) -> Table:
        kinds = [TEXT, MONEY, COUNT]
        if self.filters.filtered:
            return Table(
                "subjects",
                "Top subjects",
                ["subject", "spend", "calls"],
                [],
                note=_one_dimension(self.scope),
                kinds=kinds,
            )
        totals = self._totals("subject:")
        ordered = sorted(totals.items(), key=lambda kv: (-kv[1]["amount"], kv[0]))
        shown = ordered if limit is None else ordered[:limit]
        rows = [[scope_value(s), cents(v["amount"]), v["events"]] for s, v in shown]
        return Table(
            "subjects",
            "Top subjects",
            ["subject", "spend", "calls"],
            rows,
            kinds=kinds,
            links=self._entry_links(s for s, _ in shown),
        )

    @cached_property
    def top_models(self) -> Table:
        return self.models_table()

    @cached_property
    def top_subjects(self) -> Table:
        return self.subjects_table()

    # --- cost per lead, GPU ---

    @cached_property
    def cost_per_lead(self) -> Table:
        start, end = self.filters.window
        batches = Batch.objects.filter(
            finished_at__gte=start, finished_at__lt=end, cost_computed_at__isnull=False
        ).order_by("finished_at")
        if self.team:
            # A batch carries no team: a team's batches are those its spend was charged to (its
            # team:NAME/job:ID rollups), as in the batch admin. Their cost is the whole job's.
            job_scope = Concat(Value(self.filters.within("job:")), OuterRef("job"), output_field=CharField())
            batches = batches.filter(Exists(SpendRollupDay.objects.filter(scope=job_scope)))
        rows, links = [], []
        for b in batches[:1000]:
            rows.append(
                [
                    timezone.localtime(b.finished_at).strftime("%Y-%m-%d %H:%M"),
                    b.name,
                    b.job,
                    b.leads,
                    None if b.cost is None else cents(b.cost),
                    None if b.cost_per_lead is None else b.cost_per_lead.quantize(UNIT_QUANTUM, ROUND_HALF_EVEN),
                    None
                    if b.month_cost_per_lead is None
                    else b.month_cost_per_lead.quantize(UNIT_QUANTUM, ROUND_HALF_EVEN),
                ]
            )
            # The job's entries (in a team's view: those charged to the team).
            links.append(dict.fromkeys((2, 4), entries_url(self.filters.within(f"job:{b.job}"))))
        unit = settings.LEAD_UNIT_NAME
        return Table(
            "cost_per_lead",
            f"Cost per {unit}",
            ["finished", "pipeline", "job", f"{unit}s", "cost", f"cost per {unit}", f"month to date per {unit}"],
            rows,
            kinds=[TEXT, TEXT, TEXT, COUNT, MONEY, UNIT_COST, UNIT_COST],
            links=links,
        )

    @cached_property
    def gpu(self) -> Table:
        start, end = self.filters.window
        busy_scope = self.filters.within(f"operation:{OPERATION_BUSY}")
        idle_scope = self.filters.within(f"operation:{OPERATION_IDLE}")
        series = spend_series_many(start=start, end=end, step="day", scopes=[busy_scope, idle_scope])
        rows, links = [], []
        for b, i in zip(series[busy_scope], series[idle_scope], strict=True):
            rows.append([timezone.localtime(b.start).date().isoformat(), cents(b.amount), cents(i.amount)])
            until = min(b.start + DAY, end)
            links.append(
                {
                    1: entries_url(busy_scope, start=b.start, end=until),
                    2: entries_url(idle_scope, start=b.start, end=until),
                }
            )
        return Table(
            "gpu", "GPU cost: busy vs idle", ["day", "busy", "idle"], rows, kinds=[TEXT, MONEY, MONEY], links=links
        )

    @cached_property
    def bills_shown(self) -> bool:
        """Metered against billed is the organisation's (bills have no team), per provider: shown in the
        organisation's view, filtered by nothing or a provider, once a billing source exists."""
        scope = self.filters.scope
        plain = scope == "global" or scope.startswith("provider:")
        return not self.team and plain and BillingSource.objects.exists()

    @cached_property
    def _bill_rows(self) -> list[BillDrift]:
        if not self.bills_shown:
            return []
        scope = self.filters.scope
        providers = [scope.removeprefix("provider:")] if scope.startswith("provider:") else None
        end = self.filters.end + timedelta(days=1)
        return bill_drift(start=self.filters.start, end=end, providers=providers)

    @cached_property
    def bill_drift(self) -> Table:
        """Per UTC day and provider billed: metered, billed, the difference and the share seen."""
        rows = [
            [r.day.isoformat(), r.provider, r.metered, r.billed, r.difference, r.drift_percent, r.coverage_percent]
            for r in self._bill_rows
            if r.currency == "USD"
        ]
        columns = ["day (UTC)", "provider", "metered", "billed", "difference", "difference %", "seen %"]
        return Table(
            "bill_drift", "Metered vs billed, per provider", columns, rows,
            kinds=[TEXT, TEXT, MONEY, MONEY, MONEY, PERCENT, PERCENT],
            note="" if rows else NO_BILLS,
        )  # fmt: skip

    @cached_property
    def bill_drift_days(self) -> Table:
        """The same per day, every provider billed that day together: the chart's series."""
        days: dict[str, list[Decimal]] = {}
        for r in self._bill_rows:
            if r.currency == "USD":
                totals = days.setdefault(r.day.isoformat(), [ZERO, ZERO])
                totals[0] += r.metered
                totals[1] += r.billed
        rows = [[day, metered, billed, metered - billed] for day, (metered, billed) in sorted(days.items())]
        return Table(
            "bill_drift_days", "Metered vs billed", ["day (UTC)", "metered", "billed", "difference"], rows,
            kinds=[TEXT, MONEY, MONEY, MONEY],
            note="" if rows else NO_BILLS,
        )  # fmt: skip

    @property
    def cost_per_lead_title(self) -> str:
        return f"{self.cost_per_lead.title} of the finished batches"

    @property
    def gpu_hours_words(self) -> str:
        hours = self.gpu_hours
        if hours is None:
            return ""
        return f"Billed GPU-hours in the range: {hours['busy']:,} busy, {hours['idle']:,} idle."

    @cached_property
    def gpu_hours(self) -> dict[str, Decimal] | None:
        """Billed GPU-hours of the organisation's GPUs (None in a team's view: samples have no team)."""
        if self.team:
            return None
        start, end = self.filters.window
        sums = GpuSample.objects.filter(sampled_at__gte=start, sampled_at__lt=end, billed=True).aggregate(
            busy=Sum("busy_gpu_hours"), idle=Sum("idle_gpu_hours")
        )
        return {k: Decimal(sums[k] or 0).quantize(Decimal("0.01")) for k in ("busy", "idle")}

    # --- anomalies, recommendations ---

    @cached_property
    def anomaly_list(self) -> list[Anomaly]:
        _, end = self.filters.window
        start = end - timedelta(hours=ANOMALY_HOURS)
        if self.filters.filtered:
            return spend_anomalies(start=start, end=end, scopes=[self.scope])
        return spend_anomalies(start=start, end=end, team=self.team or None)

    anomaly_hours = ANOMALY_HOURS

    @property
    def anomaly_excess_words(self) -> str:
        return money_words(sum((a.excess for a in self.anomaly_list), ZERO))

    @cached_property
    def anomalies(self) -> Table:
        rows, links = [], []
        for a in self.anomaly_list:
            rows.append(
                [
                    scope_inner(a.scope),
                    timezone.localtime(a.start).strftime("%Y-%m-%d %H:%M"),
                    timezone.localtime(a.end).strftime("%H:%M"),
                    cents(a.expected),
                    cents(a.actual),
                    cents(a.excess),
                    f"{a.score}",
                    a.severity,
                    "" if a.root_cause is None else scope_inner(a.root_cause.scope),
                    "" if a.root_cause is None else (a.root_cause.share * 100).quantize(Decimal(1)),
                ]
            )
            # The entries of the anomalous hours: the scope's, and its root cause's.
            row_links = {0: entries_url(a.scope, start=a.start, end=a.end)}
            row_links[4] = row_links[0]
            if a.root_cause is not None:
                row_links[8] = entries_url(a.root_cause.scope, start=a.start, end=a.end)
            links.append(row_links)
        return Table(
            "anomalies",
            f"Anomalies in the last {ANOMALY_HOURS} hours of the range",
            [
                "scope",
                "from",
                "to",
                "expected",
                "actual",
                "excess",
                "score",
                "severity",
                "root cause",
                "root cause % of excess",
            ],
            rows,
            note="Spend far above the usual for the hour: compared with the same hour of the week over up to 8 "
            "weeks (median and spread).",
            kinds=[SCOPE, TEXT, TEXT, MONEY, MONEY, MONEY, TEXT, TEXT, SCOPE, PERCENT],
            links=links,
        )

    @cached_property
    def recommendation_list(self) -> list[Recommendation]:
        found = savings_recommendations(at=self.now, provider=self.filters.provider or None, team=self.team or None)
        if self.filters.service or self.filters.tag:
            found = [r for r in found if r.scope == self.scope]
        return found

    @cached_property
    def recommendations(self) -> Table:
        rows = [
            [r.kind, r.title, r.detail, None if r.monthly_saving is None else cents(r.monthly_saving)]
            for r in self.recommendation_list
        ]
        since = self.now - timedelta(days=30)
        links = [{1: entries_url(r.scope, start=since, end=self.now)} for r in self.recommendation_list]
        return Table(
            "recommendations",
            "Recommendations",
            ["kind", "recommendation", "detail", "estimated monthly saving (USD)"],
            rows,
            note="From the last 30 days of your own usage at today's catalog prices.",
            kinds=[KIND, TEXT, TEXT, MONEY],
            links=links,
        )

    @cached_property
    def total_monthly_saving(self) -> Decimal:
        return sum((r.monthly_saving or ZERO for r in self.recommendation_list), ZERO).quantize(MONEY_QUANTUM)

    @property
    def total_monthly_saving_words(self) -> str:
        return money_words(self.total_monthly_saving)

    # --- export ---

    def export_table(self, key: str) -> Table:
        """A dashboard table in full (every model and subject, not only the top ones)."""
        tables = {
            "budgets": lambda: self.budgets_at_risk,
            "alerts": lambda: self.open_alerts,
            "spend_by_provider": lambda: self.spend_by_provider,
            "providers": lambda: self.provider_totals,
            "models": lambda: self.models_table(limit=None),
            "subjects": lambda: self.subjects_table(limit=None),
            "cost_per_lead": lambda: self.cost_per_lead,
            "gpu": lambda: self.gpu,
            "bill_drift": lambda: self.bill_drift,
            "bill_drift_days": lambda: self.bill_drift_days,
            "anomalies": lambda: self.anomalies,
            "recommendations": lambda: self.recommendations,
        }
        if key not in tables:
            raise KeyError(key)
        return tables[key]()


def _one_dimension(scope: str) -> str:
    return f"Not available under the filter {scope}: spend is rolled up per dimension, not per pair of them."
