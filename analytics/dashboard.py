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

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import CharField, Exists, OuterRef, QuerySet, Sum, Value
from django.db.models.functions import Concat
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, AlertState
from budgets.levels import Level, level_rank
from budgets.models import Budget
from budgets.selectors import budget_statuses
from core.models import Team
from core.money import MONEY_QUANTUM, ZERO
from core.periods import period_bounds
from core.scopes import scope_inner, team_scope
from tracking.gpu import OPERATION_BUSY, OPERATION_IDLE
from tracking.models import TOKEN_FIELDS, Batch, GpuSample, Price, SpendRollupDay
from tracking.selectors import scope_totals, spend_totals

from .anomalies import Anomaly, spend_anomalies
from .recommendations import Recommendation, savings_recommendations
from .series import (
    DAY,
    HOUR,
    hour_floor,
    local_midnight,
    scope_value,
    spend_series_many,
)
from .trends import Trend, spend_trend

CENT = Decimal("0.01")
TOP = 10
MAX_RANGE_DAYS = 366
ANOMALY_HOURS = 24


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value.quantize(CENT, ROUND_HALF_EVEN)}"


def percent_change(now: Decimal, before: Decimal) -> Decimal | None:
    if before <= 0:
        return None
    return ((now - before) * 100 / before).quantize(Decimal("0.1"), ROUND_HALF_EVEN)


# --- filters ----------------------------------------------------------------------------------


class DashboardFilterForm(forms.Form):
    team = forms.ChoiceField(label="Team", required=False)
    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="First day (local)."
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="Last day, included."
    )
    provider = forms.ChoiceField(label="Provider", required=False)
    service = forms.ChoiceField(label="Service", required=False)
    tag = forms.ChoiceField(label="Tag", required=False)

    def __init__(
        self, data: Any = None, *, teams: list[str] | None = None, organisation: bool = True, **kwargs: Any
    ) -> None:
        """`teams`: the names of the teams the viewer may pick (every team by default); `organisation`:
        whether they may view the whole organisation (superusers), else their first team is the default."""
        teams = list(Team.objects.order_by("name").values_list("name", flat=True)) if teams is None else teams
        # The empty form shows the range it stands for: the last 30 days up to today.
        data = data.copy() if data is not None else {}
        if not organisation and not data.get("team") and teams:
            data["team"] = teams[0]
        today = timezone.localdate()
        end = data.get("end") or today.isoformat()
        data.setdefault("end", end)
        if not data.get("start"):
            try:
                data["start"] = (date.fromisoformat(end) - timedelta(days=29)).isoformat()
            except ValueError:
                data["start"] = ""
        if not data.get("end"):
            data["end"] = today.isoformat()
        super().__init__(data, **kwargs)
        self.fields["team"].choices = [
            *([("", "whole organisation")] if organisation else []),
            *((t, t) for t in teams),
        ]
        self.fields["team"].required = not organisation
        # The other filters offer what the viewed team (or the organisation) spent on; none for a
        # team the viewer may not pick, which the team field refuses.
        team = data.get("team") or ""
        scopes = _known_scopes(team) if team in teams or (organisation and not team) else []
        for name in ("provider", "service", "tag"):
            values = sorted(scope_value(s) for s in scopes if scope_inner(s).startswith(f"{name}:"))
            self.fields[name].choices = [("", "all"), *((v, v) for v in values)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        today = timezone.localdate()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            raise forms.ValidationError({"start": "must be on or before the last day"})
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise forms.ValidationError({"start": f"a range is at most {MAX_RANGE_DAYS} days"})
        chosen = [name for name in ("provider", "service", "tag") if data.get(name)]
        if len(chosen) > 1:
            raise forms.ValidationError(
                f"Filter by one of provider, service or tag at a time (you chose {' and '.join(chosen)}): spend is "
                "rolled up per dimension, so their intersection is not known without reading the whole ledger."
            )
        data["start"], data["end"] = start, end
        return data

    def filters(self) -> DashboardFilters:
        data = self.cleaned_data
        return DashboardFilters(
            start=data["start"],
            end=data["end"],
            provider=data.get("provider") or "",
            service=data.get("service") or "",
            tag=data.get("tag") or "",
            team=data.get("team") or "",
        )


def _known_scopes(team: str = "") -> list[str]:
    """Provider, service and tag scopes that spent in the last 400 days (for the filter choices): the
    organisation's, or team `team`'s copies of them."""
    since = local_midnight(timezone.localdate() - timedelta(days=400))
    within = DashboardFilters(start=since.date(), end=since.date(), team=team).within
    totals = scope_totals(
        start=since,
        end=hour_floor(timezone.now()) + HOUR,
        prefixes=[within("provider:"), within("service:"), within("tag:")],
    )
    return sorted(totals)


@dataclass(frozen=True)
class DashboardFilters:
    start: date
    end: date  # included
    provider: str = ""
    service: str = ""
    tag: str = ""
    team: str = ""  # a team's name: its view; empty: the organisation's

    def within(self, scope: str) -> str:
        """`scope` (or a prefix such as "model:") as this view reads it: the viewed team's copy of it
        (team:NAME, team:NAME/model:X; core.scopes), or itself in the organisation's view. Every
        rollup the dashboard reads goes through here."""
        return team_scope(self.team, scope) if self.team else scope

    @property
    def dimension(self) -> str:
        """The filter's own scope, whoever's spend is viewed: provider:X, service:X, tag:K=V or global."""
        if self.provider:
            return f"provider:{self.provider}"
        if self.service:
            return f"service:{self.service}"
        if self.tag:
            return f"tag:{self.tag}"
        return "global"

    @property
    def filtered(self) -> bool:
        return self.dimension != "global"

    @property
    def scope(self) -> str:
        """The scope every figure is read from (`global`, `provider:openai`, `team:ml`, `team:ml/service:x`)."""
        return self.within(self.dimension)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """[start, end) in UTC, ending no later than the end of the current hour."""
        start = local_midnight(self.start)
        end = min(local_midnight(self.end + timedelta(days=1)), hour_floor(timezone.now()) + HOUR)
        return start, max(end, start)


# --- tables -------------------------------------------------------------------------------------


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def csv_rows(self) -> Iterator[list[Any]]:
        yield self.columns
        yield from self.rows


@dataclass
class Card:
    label: str
    value: Decimal
    compare_label: str = ""
    compare: Decimal | None = None
    change: Decimal | None = None
    text: str = ""


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
            text=f"{forecast.method}, {forecast.interval * 100:.0f} % interval {money(forecast.low)} - "
            f"{money(forecast.high)} USD; 28-day trend {trend.direction}{slope}",
        )

    @cached_property
    def range_total(self) -> Decimal:
        return self._spend_windows[5]

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
    def budgets_at_risk(self) -> Table:
        budgets = list(self._of_view(Budget.objects.filter(is_active=True).order_by("name")))
        rows = []
        for status in budget_statuses(budgets, at=self.now, forecasts=True):
            budget = status.budget
            if level_rank(status.level) < level_rank(Level.WARNING) and not status.forecast_label:
                continue
            rows.append(
                [
                    budget.name,
                    budget.scope,
                    money(status.spent),
                    money(status.limit),
                    "" if status.utilisation is None else f"{status.utilisation}",
                    "" if status.forecast is None else status.forecast.describe(budget.currency),
                    "; ".join(filter(None, [status.level_label, status.forecast_label])),
                    reverse("admin:budgets_budget_change", args=[budget.pk]),
                ]
            )
        return Table(
            "budgets",
            "Budgets at risk",
            ["budget", "scope", "spent", "limit", "used %", "forecast at period end", "level", "link"],
            rows,
            note="Level warning or above, or forecast to exceed the limit before the period ends.",
        )

    @cached_property
    def open_alerts(self) -> Table:
        alerts = self._of_view(Alert.objects.filter(state=AlertState.FIRING).order_by("-last_fired_at"))
        rows = [
            [
                timezone.localtime(a.last_fired_at).strftime("%Y-%m-%d %H:%M"),
                a.label,
                a.title,
                a.scope,
                reverse("admin:alerts_alert_change", args=[a.pk]),
            ]
            for a in alerts[:50]
        ]
        return Table("alerts", "Open alerts", ["fired", "level", "title", "scope", "link"], rows)

    @cached_property
    def open_alert_count(self) -> int:
        return self._of_view(Alert.objects.filter(state=AlertState.FIRING)).count()

    # --- spend over time, stacked by provider ---

    @cached_property
    def spend_by_provider(self) -> Table:
        start, end = self.filters.window
        if not self.filters.filtered:
            series = spend_series_many(start=start, end=end, step="day", prefixes=[self.filters.within("provider:")])
            note = ""
        else:
            series = spend_series_many(start=start, end=end, step="day", scopes=[self.scope])
            note = (
                ""
                if self.filters.provider
                else f"Filtered by {self.scope}: not split by provider (one dimension per rollup)."
            )
        names = sorted(series, key=lambda s: -sum((p.amount for p in series[s]), ZERO))
        days = [p.start for p in next(iter(series.values()))] if series else []
        rows = []
        for index, day in enumerate(days):
            values = [series[name][index].amount for name in names]
            rows.append([timezone.localtime(day).date().isoformat(), *map(money, values), money(sum(values, ZERO))])
        return Table(
            "spend_by_provider",
            "Spend per day" + (f" of {self.scope}" if self.filters.filtered else " by provider"),
            ["day", *[scope_value(n) for n in names], "total"],
            rows,
            note=note,
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
                "models", "Top models", ["model", "spend", "calls", "tokens"], [], note=_one_dimension(self.scope)
            )
        ordered = sorted(totals.items(), key=lambda kv: (-kv[1]["amount"], kv[0]))
        rows = [
            [scope_value(s), money(v["amount"]), v["events"], sum(int(v[n] or 0) for n in TOKEN_FIELDS)]
            for s, v in (ordered if limit is None else ordered[:limit])
        ]
        return Table("models", "Top models", ["model", "spend", "calls", "tokens"], rows, note=note)

    def subjects_table(self, limit: int | None = TOP) -> Table:
        if self.filters.filtered:
            return Table("subjects", "Top subjects", ["subject", "spend", "calls"], [], note=_one_dimension(self.scope))
        totals = self._totals("subject:")
        ordered = sorted(totals.items(), key=lambda kv: (-kv[1]["amount"], kv[0]))
        rows = [
            [scope_value(s), money(v["amount"]), v["events"]]
            for s, v in (ordered if limit is None else ordered[:limit])
        ]
        return Table("subjects", "Top subjects", ["subject", "spend", "calls"], rows)

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
        rows = [
            [
                timezone.localtime(b.finished_at).strftime("%Y-%m-%d %H:%M"),
                b.name,
                b.job,
                b.leads,
                money(b.cost),
                "" if b.cost_per_lead is None else f"{b.cost_per_lead.quantize(Decimal('0.0001'))}",
                "" if b.month_cost_per_lead is None else f"{b.month_cost_per_lead.quantize(Decimal('0.0001'))}",
            ]
            for b in batches[:1000]
        ]
        unit = settings.LEAD_UNIT_NAME
        return Table(
            "cost_per_lead",
            f"Cost per {unit}",
            ["finished", "pipeline", "job", f"{unit}s", "cost", f"cost per {unit}", f"month to date per {unit}"],
            rows,
        )

    @cached_property
    def gpu(self) -> Table:
        start, end = self.filters.window
        busy_scope = self.filters.within(f"operation:{OPERATION_BUSY}")
        idle_scope = self.filters.within(f"operation:{OPERATION_IDLE}")
        series = spend_series_many(start=start, end=end, step="day", scopes=[busy_scope, idle_scope])
        rows = [
            [timezone.localtime(b.start).date().isoformat(), money(b.amount), money(i.amount)]
            for b, i in zip(series[busy_scope], series[idle_scope], strict=True)
        ]
        return Table("gpu", "GPU cost: busy vs idle", ["day", "busy", "idle"], rows)

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

    @cached_property
    def anomalies(self) -> Table:
        rows = [
            [
                scope_inner(a.scope),
                timezone.localtime(a.start).strftime("%Y-%m-%d %H:%M"),
                timezone.localtime(a.end).strftime("%H:%M"),
                money(a.expected),
                money(a.actual),
                money(a.excess),
                f"{a.score}",
                a.severity,
                "" if a.root_cause is None else scope_inner(a.root_cause.scope),
                "" if a.root_cause is None else f"{(a.root_cause.share * 100).quantize(Decimal(1))}",
            ]
            for a in self.anomaly_list
        ]
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
            note="Robust baseline: median and MAD of the same hour of the week over up to 8 weeks.",
        )

    @cached_property
    def recommendation_list(self) -> list[Recommendation]:
        found = savings_recommendations(at=self.now, provider=self.filters.provider or None, team=self.team or None)
        if self.filters.service or self.filters.tag:
            found = [r for r in found if r.scope == self.scope]
        return found

    @cached_property
    def recommendations(self) -> Table:
        rows = [[r.kind, r.title, r.detail, money(r.monthly_saving)] for r in self.recommendation_list]
        return Table(
            "recommendations",
            "Recommendations",
            ["kind", "recommendation", "detail", "estimated monthly saving (USD)"],
            rows,
            note="From the last 30 days of your own usage at today's catalog prices.",
        )

    @cached_property
    def total_monthly_saving(self) -> Decimal:
        return sum((r.monthly_saving or ZERO for r in self.recommendation_list), ZERO).quantize(MONEY_QUANTUM)

    # --- export ---

    def export_table(self, key: str) -> Table:
        """A dashboard table in full (every model and subject, not only the top ones)."""
        tables = {
            "budgets": lambda: self.budgets_at_risk,
            "alerts": lambda: self.open_alerts,
            "spend_by_provider": lambda: self.spend_by_provider,
            "models": lambda: self.models_table(limit=None),
            "subjects": lambda: self.subjects_table(limit=None),
            "cost_per_lead": lambda: self.cost_per_lead,
            "gpu": lambda: self.gpu,
            "anomalies": lambda: self.anomalies,
            "recommendations": lambda: self.recommendations,
        }
        if key not in tables:
            raise KeyError(key)
        return tables[key]()


def _one_dimension(scope: str) -> str:
    return f"Not available under the filter {scope}: spend is rolled up per dimension, not per pair of them."


def chart_series(table: Table, *, label_column: int = 0) -> dict[str, Any]:
    """Chart.js data from a table whose first column labels the x axis and whose other money
    columns are datasets (the 'total' column is left out). Amounts travel as decimal strings."""
    columns = [i for i, name in enumerate(table.columns) if i != label_column and name != "total"]
    return {
        "labels": [row[label_column] for row in table.rows],
        "datasets": [{"label": table.columns[i], "data": [row[i] for row in table.rows]} for i in columns],
    }
