"""Evaluating budgets and alert rules into alerts (beat every minute, and right after writes).

A pass works as healthchecks' sendalerts does: it loads what it needs in a few bulk reads (every active
budget's status and forecast from budgets' one status selector, the firing alerts, the rollup sums of
every due rule's window), then handles each budget and each rule on its own, in its own small
transaction: fire or resolve. One that raises is logged (a rule is pushed back by
ALERT_RULE_ERROR_BACKOFF_SECONDS) and the others go on.

Money and counters come from the rollups. Windows shorter than an hour (rate-limit hits in the last 5
minutes) count ledger rows in that window through the occurred_at index: a bounded range, never a scan
of the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from budgets.levels import Level, level_rank
from budgets.models import Budget
from budgets.selectors import BudgetStatus, budget_statuses, with_forecasts
from budgets.services import budget_periods_open
from budgets.templates import VALUES_CHUNK, template_values_due, templates_evaluated
from core.money import format_money
from core.periods import hour_floor, period_bounds
from core.scopes import scope_inner, scope_team, team_scope
from tracking.batches import batch_last_finished, cost_per_lead_change, lead_unit, month_to_date
from tracking.models import TOKEN_FIELDS, Batch, CostEntry, Outcome
from tracking.selectors import BillDrift, bill_drift, entry_scope_q, scope_totals

from .models import Alert, AlertRule, AlertSource, AlertState, Metric, Window
from .services import alert_fire, alert_resolve, budget_digest_notify

logger = logging.getLogger(__name__)

# What an evaluation refreshes on an alert that stays firing and is not due for a notification.
FIGURES = ("title", "message", "value", "threshold", "level")
# The routing level of a budget's forecast alert (channels' minimum level): it is shown as "forecast to
# exceed", never as a level.
FORECAST_ALERT_LEVEL = Level.WARNING


class NoData(Exception):
    """The metric has nothing to measure yet (e.g. no closed batch): neither fire nor resolve."""


class Undefined(Exception):
    """The metric is undefined where it should not be (a batch without leads): that fires itself."""


# Anomaly scores are computed by analytics, which sits above alerts and reads alerts' models: it
# hands its reader over at start-up (analytics.apps.AnalyticsConfig.ready), so alerts imports nothing
# of it. A reader answers {(scope, start, end): summary with .score, .worst} for the questions given.
AnomalyReader = Callable[[list[tuple[str, datetime, datetime]]], dict[tuple[str, datetime, datetime], Any]]
_anomaly_reader: AnomalyReader | None = None


def anomaly_reader_set(reader: AnomalyReader) -> None:
    global _anomaly_reader
    _anomaly_reader = reader


def _anomalies(rule: AlertRule, now: datetime) -> Any:
    """The anomalies of the rule's scope in its window (global: every dimension), worst first."""
    if _anomaly_reader is None:
        raise NoData("anomaly rules need the analytics app (INSTALLED_APPS)")
    start, end = window_bounds(rule.window, now)
    question = (rule.scope, start, min(end, now))
    return _anomaly_reader([question])[question]


# --- metric values ---------------------------------------------------------------------------------


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a rule's window. Calendar windows follow TIME_ZONE, like budget periods."""
    if window == Window.HOUR:
        start = hour_floor(now)
        return start, start + timedelta(hours=1)
    if window in (Window.DAY, Window.MONTH):
        start, end = period_bounds("daily" if window == Window.DAY else "monthly", now)
        assert end is not None
        return start, end
    rolling = {Window.LAST_5_MINUTES: 5, Window.LAST_HOUR: 60, Window.LAST_DAY: 24 * 60}
    if window in rolling:
        return now - timedelta(minutes=rolling[window]), now
    raise NoData(f"window {window!r} is not a time window")


def _rollup_scope(rule: AlertRule) -> str:
    """The rule's scope; a GPU cost rule on the whole spend (global, or a team's) reads provider:gpu."""
    if rule.metric == Metric.GPU_COST and scope_inner(rule.scope) == "global":
        team = scope_team(rule.scope)
        return "provider:gpu" if team is None else team_scope(team, "provider:gpu")
    return rule.scope


def _rollup_window(rule: AlertRule, now: datetime) -> tuple[datetime, datetime] | None:
    """The rollup buckets a rule's value sums, [first hour, end); None where it reads something else
    (cost per lead, anomalies, a sub-hour count of the ledger)."""
    if rule.metric in (Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE, Metric.ANOMALY, Metric.BILL_DRIFT):
        return None
    try:
        start, end = window_bounds(rule.window, now)
    except NoData:
        return None
    if rule.metric not in (Metric.SPEND, Metric.GPU_COST) and end - start < timedelta(hours=1):
        return None
    return hour_floor(start), end  # a rolling window starts at its first hour's bucket


_COUNTERS = ("amount", "events", "errors", "rate_limited", "unpriced", *TOKEN_FIELDS)
Sums = dict[tuple[datetime, datetime], dict[str, dict[str, Any]]]


def rollup_sums(rules: list[AlertRule], now: datetime) -> Sums:
    """The rollup counters of every rule's scope in its window: one read per distinct window (this
    hour, today, this month, the last 60 minutes, the last 24 hours), not one per rule."""
    windows: dict[tuple[datetime, datetime], set[str]] = {}
    for rule in rules:
        if (window := _rollup_window(rule, now)) is not None:
            windows.setdefault(window, set()).add(_rollup_scope(rule))
    return {
        (start, end): scope_totals(start=start, end=end, scopes=scopes, counters=_COUNTERS)
        for (start, end), scopes in windows.items()
    }


def metric_value(rule: AlertRule, now: datetime, *, sums: Sums | None = None) -> Decimal:
    if rule.metric in (Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE):
        return _cost_per_lead(rule, now)
    if rule.metric == Metric.ANOMALY:
        return _anomalies(rule, now).score
    if rule.metric == Metric.BILL_DRIFT:
        return abs(bill_drift_latest(rule.scope, now).drift_percent)
    window = _rollup_window(rule, now)
    if window is None:
        start, end = window_bounds(rule.window, now)
        return _from_counts(rule.metric, _ledger_counts(_rollup_scope(rule), start, end))
    read = (sums or {}).get(window)
    if read is None:
        read = rollup_sums([rule], now)[window]
    counters = read.get(_rollup_scope(rule)) or dict.fromkeys(_COUNTERS, 0)
    if rule.metric in (Metric.SPEND, Metric.GPU_COST):
        return counters["amount"] or Decimal(0)
    return _from_counts(rule.metric, counters)


def _from_counts(metric: str, counts: dict[str, Any]) -> Decimal:
    if metric == Metric.TOKENS:
        return Decimal(sum(counts[name] for name in TOKEN_FIELDS))
    if metric == Metric.ERROR_RATE:
        events = counts["events"]
        return Decimal(0) if not events else (Decimal(counts["errors"]) * 100 / events).quantize(Decimal("0.01"))
    if metric == Metric.RATE_LIMITED:
        return Decimal(counts["rate_limited"])
    if metric == Metric.UNPRICED:
        return Decimal(counts["unpriced"])
    raise NoData(f"unknown metric {metric!r}")


def _ledger_counts(scope: str, start: datetime, end: datetime) -> dict[str, int]:
    """Counters over a sub-hour window: a bounded range of the ledger (occurred_at index)."""
    entries = CostEntry.objects.filter(entry_scope_q(scope), occurred_at__gte=start, occurred_at__lt=end)
    counts = entries.aggregate(
        events=Count("pk"),
        errors=Count("pk", filter=Q(outcome=Outcome.ERROR)),
        rate_limited=Count("pk", filter=Q(outcome=Outcome.RATE_LIMITED)),
        unpriced=Count("pk", filter=Q(pricing_status="unpriced")),
        **{name: Sum(name) for name in TOKEN_FIELDS},
    )
    return {name: value or 0 for name, value in counts.items()}


def _cost_per_lead(rule: AlertRule, now: datetime) -> Decimal:
    if rule.window == Window.MONTH:
        mtd = month_to_date(at=now)
        if not Batch.objects.filter(finished_at__gte=mtd.start, finished_at__lte=now).exists():
            raise NoData("no batch finished this month")
        if mtd.cost_per_lead is None:
            raise Undefined(
                f"cost per {lead_unit()} this month is undefined: {format_money(mtd.cost, 'USD')} spent and "
                f"the batches finished this month produced no {lead_unit()}s"
            )
        return mtd.cost_per_lead
    batch = batch_last_finished(at=now)
    if batch is None:
        raise NoData("no batch has finished yet")
    if batch.cost_per_lead is None:
        raise Undefined(
            f"the last batch {batch.name} ({batch.job}) produced no {lead_unit()}s: its cost per {lead_unit()} is "
            f"undefined ({format_money(batch.cost or Decimal(0), 'USD')} spent)"
        )
    if rule.metric == Metric.COST_PER_LEAD_CHANGE:
        change = cost_per_lead_change(batch=batch)
        if change is None:
            raise NoData("no batch with a cost per lead in the 7 days before the last one")
        return change[0]
    return batch.cost_per_lead


# --- firing and resolving, sparing what does not change -------------------------------------------------


class FiringAlerts:
    """The alerts firing when a pass started, by dedup key (one read): an alert that stays as it is
    costs nothing, one whose figures changed one conditional UPDATE (see _fire)."""

    def __init__(self, alerts: Any) -> None:
        self.by_key: dict[str, Alert] = {a.key: a for a in alerts}

    @classmethod
    def read(cls, **filters: Any) -> FiringAlerts:
        return cls(Alert.objects.filter(state=AlertState.FIRING, **filters))

    def of_budget(self, budget: Budget) -> list[Alert]:
        sources = (AlertSource.BUDGET, AlertSource.FORECAST)
        return [a for a in self.by_key.values() if a.budget_id == budget.pk and a.source in sources]


def _fire(firing: FiringAlerts, **kwargs: Any) -> None:
    """alert_fire, but an alert already firing and not due for a notification (inside its cooldown, or
    a budget level already announced) only gets its latest figures, in one conditional UPDATE, and
    nothing at all when they are the same. Anything else (new, due, or changed since the pass read
    it) takes alert_fire's path."""
    now = kwargs["now"]
    alert = firing.by_key.get(kwargs["key"])
    if alert is not None and (alert.next_notify_at is None or alert.next_notify_at > now):
        figures = {name: kwargs[name] for name in FIGURES}
        if all(getattr(alert, name) == value for name, value in figures.items()):
            return
        not_due = Q(next_notify_at__isnull=True) | Q(next_notify_at__gt=now)
        if Alert.objects.filter(not_due, pk=alert.pk, state=AlertState.FIRING).update(**figures):
            for name, value in figures.items():
                setattr(alert, name, value)
            return
    firing.by_key[kwargs["key"]] = alert_fire(**kwargs).alert


def _resolve(firing: FiringAlerts, *, key: str, notify: bool = True, now: datetime) -> None:
    """alert_resolve of an alert that was firing when the pass read them (one that opened since is
    resolved by the next pass)."""
    if firing.by_key.pop(key, None) is not None:
        alert_resolve(key=key, notify=notify, now=now)


# --- rules -------------------------------------------------------------------------------------------


def rule_key(rule: AlertRule) -> str:
    return f"rule:{rule.pk}:{rule.scope}"


def rule_evaluate(
    rule: AlertRule, *, now: datetime, firing: FiringAlerts | None = None, sums: Sums | None = None
) -> str:
    """Measure one rule and fire or resolve its alert, in one transaction. Returns "firing", "ok" or
    "no data". `firing` and `sums` are a pass's shared reads; alone, it reads them itself."""
    firing = firing or FiringAlerts.read(rule=rule)
    if rule.metric == Metric.BILL_DRIFT:
        return _bill_drift_evaluate(rule, now=now, firing=firing)
    anomalies = None
    undefined: Undefined | None = None
    with transaction.atomic():
        try:
            if rule.metric == Metric.ANOMALY:
                anomalies = _anomalies(rule, now)
                value: Decimal | None = anomalies.score
            else:
                value = metric_value(rule, now, sums=sums)
        except NoData:
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=None, last_error="")
            return "no data"
        except Undefined as exc:
            value, undefined = None, exc
        AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=value, last_error="")
        common = {
            "key": rule_key(rule),
            "source": AlertSource.RULE,
            "level": rule.level,
            "scope": rule.scope,
            "threshold": rule.threshold,
            "rule": rule,
            "cooldown": rule.cooldown,
            "now": now,
        }
        if undefined is not None:
            message = f"Rule '{rule.name}': {undefined}."
            _fire(firing, title=f"{rule.name}: undefined", message=message, value=None, currency="", **common)
            return "firing"
        assert value is not None
        if value <= rule.threshold:
            _resolve(firing, key=rule_key(rule), now=now)
            return "ok"
        money = rule.metric in (Metric.SPEND, Metric.GPU_COST, Metric.COST_PER_LEAD)
        # As the admin shows the rule's value and threshold (AlertRule.figure).
        shown, limit = rule.figure(value), rule.figure(rule.threshold, exact=True)
        detail = ""
        if anomalies is not None and anomalies.worst is not None:
            detail = f" Worst: {anomalies.worst.describe()}."
        _fire(
            firing,
            title=f"{rule.name}: {shown} ({rule.get_window_display()})",
            message=f"Rule '{rule.name}': {rule.get_metric_display()} of {rule.scope} "
            f"{rule.get_window_display()} is {shown}, above {limit}.{detail}",
            value=value,
            currency="USD" if money else "",
            **common,
        )
        return "firing"


# How far back a difference rule looks for the last day a bill was imported.
BILL_DRIFT_LOOKBACK = timedelta(days=35)


def bill_drift_latest(scope: str, now: datetime) -> BillDrift:
    """Metered against billed (USD) on the last UTC day before today with an imported bill, of one provider
    (scope provider:NAME) or of every provider with a bill that day (global). Raises NoData before any."""
    today = now.astimezone(UTC).date()
    providers = None if scope == "global" else [scope.removeprefix("provider:")]
    rows = [
        r for r in bill_drift(start=today - BILL_DRIFT_LOOKBACK, end=today, providers=providers) if r.currency == "USD"
    ]
    if not rows:
        raise NoData("no bill has been imported for the last 35 days")
    day = max(r.day for r in rows)
    of_day = [r for r in rows if r.day == day]
    return BillDrift(
        day, providers[0] if providers else "all", "USD", sum(r.metered for r in of_day), sum(r.billed for r in of_day)
    )


def _bill_drift_evaluate(rule: AlertRule, *, now: datetime, firing: FiringAlerts) -> str:
    """A difference rule: one alert per day whose metered spend differs from the bill by more than the
    threshold (%), told once (no cooldown); the alerts of earlier days resolve when a later day is read."""
    with transaction.atomic():
        try:
            drift = bill_drift_latest(rule.scope, now)
        except NoData:
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=None, last_error="")
            return "no data"
        value = abs(drift.drift_percent)  # as metric_value reads it
        AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=value, last_error="")
        key = f"{rule_key(rule)}:{drift.day.isoformat()}"
        for earlier in [k for k in firing.by_key if k.startswith(f"{rule_key(rule)}:") and k != key]:
            _resolve(firing, key=earlier, now=now)
        if value <= rule.threshold:
            _resolve(firing, key=key, now=now)
            return "ok"
        metered, billed = format_money(drift.metered, "USD"), format_money(drift.billed, "USD")
        shown = f"{drift.drift_percent:+} %"
        _fire(
            firing,
            key=key,
            source=AlertSource.RULE,
            level=rule.level,
            scope=rule.scope,
            threshold=rule.threshold,
            rule=rule,
            cooldown=None,
            now=now,
            title=f"{rule.name}: metered {metered}, billed {billed} on {drift.day} ({shown})",
            message=f"Rule '{rule.name}': on {drift.day} (UTC) costcontrol metered {metered} of "
            f"{'every provider billed' if rule.scope == 'global' else rule.scope}, the provider billed {billed}: "
            f"a difference of {shown} of the bill, above {rule.figure(rule.threshold, exact=True)}.",
            value=value,
            currency="",
        )
        return "firing"


# --- budgets -----------------------------------------------------------------------------------------


def budget_alert_key(budget: Budget, period_start: datetime, level: str, *, forecast: bool = False) -> str:
    kind = "forecast" if forecast else "budget"
    return f"{kind}:{budget.pk}:{period_start.astimezone(UTC):%Y%m%dT%H%M}:{level}"


def budget_message(status: BudgetStatus, *, top_driver: str = "") -> str:
    """ "Budget 'OpenAI monthly' is at 82 % (205.10 of 250.00 USD) with 9 days left; forecast 312.40 USD
    by 30 Nov (hour-of-week; 90 % interval 280.00-340.00). Top driver: model gpt-4o (61 %)." """
    budget, currency = status.budget, status.currency
    cents = Decimal("0.01")
    used = "over its zero limit" if status.utilisation is None else f"at {status.utilisation.quantize(Decimal(1))} %"
    text = (
        f"Budget '{budget.name}' is {used} ({status.spent.quantize(cents):,} of "
        f"{status.limit.quantize(cents):,} {currency})"
    )
    if status.days_left is not None:
        text += f" with {status.days_left} day{'s' if status.days_left != 1 else ''} left"
    forecast = status.forecast
    if forecast is not None and status.period.end is not None:
        last_day = (status.period.end - timedelta(microseconds=1)).astimezone(ZoneInfo(settings.TIME_ZONE))
        text += (
            f"; forecast {forecast.amount.quantize(cents):,} {currency} by {last_day:%-d %b} ({forecast.method}; "
            f"{forecast.interval * 100:.0f} % interval {forecast.low.quantize(cents):,}-{forecast.high.quantize(cents):,})"
        )
    text += "."
    if top_driver:
        text += f" Top driver: {top_driver}."
    return text


def top_driver(status: BudgetStatus) -> str:
    """The model with the largest share of a global budget's spend this period ("" for other scopes:
    model rollups are not split by provider, service or subject)."""
    if status.spent <= 0 or status.budget.scope != "global":
        return ""
    end = min(hour_floor(status.at) + timedelta(hours=1), status.period.end or status.at + timedelta(hours=1))
    totals = scope_totals(start=status.period.start, end=end, prefixes=["model:"], currency=status.currency)
    if not totals:
        return ""
    scope, values = max(totals.items(), key=lambda item: (item[1]["amount"], item[0]))
    share = (values["amount"] * 100 / status.spent).quantize(Decimal(1))
    return f"model {scope.partition(':')[2]} ({share} %)"


def budget_evaluate(
    status: BudgetStatus, *, now: datetime, firing: FiringAlerts | None = None, announce: bool = True
) -> str | None:
    """Fire the budget's current level once per period, resolve levels it fell below, and, with
    forecast alerts on, "forecast to exceed" while the forecast crosses the limit before the period
    ends. One transaction. Returns the level. A status at a level, or with forecast alerts on, carries
    its forecast (with_forecasts). `announce=False`: an alert that opens is told in a digest instead
    (budget_digest_notify), not on its own."""
    budget = status.budget
    firing = firing or FiringAlerts.read(budget=budget)
    level = status.level
    forecast_on = budget.forecast_alerts and bool(status.forecast_label) and level != Level.EXCEEDED
    with transaction.atomic():
        ours = firing.of_budget(budget)
        for alert in ours:
            if status.period.pk is None or alert.budget_period_id != status.period.pk:
                _resolve(firing, key=alert.key, notify=False, now=now)  # a new period starts afresh
            elif alert.source == AlertSource.BUDGET and level_rank(alert.level) > level_rank(level):
                _resolve(firing, key=alert.key, now=now)  # the limit was raised
            elif alert.source == AlertSource.FORECAST and not forecast_on:
                # Exceeded: the level's alert says it; else the forecast fell back under the limit.
                _resolve(firing, key=alert.key, notify=level != Level.EXCEEDED, now=now)
        if not level and not forecast_on:
            return level
        if status.period.pk is None:  # the alert belongs to a period: open it (as it was shown)
            [status] = budget_periods_open(statuses=[status])
        message = budget_message(status, top_driver=top_driver(status))
        common = {
            "scope": budget.scope,
            "message": message,
            "threshold": status.limit,
            "currency": budget.currency,
            "budget": budget,
            "budget_period": status.period,
            "cooldown": None,  # announced once per period (the period is in the key)
            "announce": announce,
            "now": now,
        }
        if level:
            used = "over a zero limit" if status.utilisation is None else f"{status.utilisation} % used"
            _fire(
                firing,
                key=budget_alert_key(budget, status.period.start, level),
                source=AlertSource.BUDGET,
                level=level,
                title=f"Budget '{budget.name}' {level}: {used}",
                value=status.spent,
                **common,
            )
        if forecast_on:
            assert status.forecast is not None
            amount = format_money(status.forecast.amount.quantize(Decimal("0.01")), budget.currency)
            _fire(
                firing,
                key=budget_alert_key(budget, status.period.start, Level.EXCEEDED, forecast=True),
                source=AlertSource.FORECAST,
                level=FORECAST_ALERT_LEVEL,
                title=f"Budget '{budget.name}' {status.forecast_label}: {amount} by period end",
                value=status.forecast.amount,
                **common,
            )
    return level


# --- the pass ----------------------------------------------------------------------------------------


@dataclass
class EvaluationSummary:
    budgets: int = 0
    rules: int = 0
    firing: int = 0
    errors: list[str] = field(default_factory=list)


def _budget_evaluate_logged(
    status: BudgetStatus, *, now: datetime, firing: FiringAlerts, summary: EvaluationSummary, quiet: bool = False
) -> bool:
    """budget_evaluate, counted in `summary`; one that raises is logged and skipped (False)."""
    try:
        with transaction.atomic():
            level = budget_evaluate(status, now=now, firing=firing, announce=not quiet)
    except Exception as exc:
        logger.exception("evaluating budget %s failed; going on with the others", status.budget.pk)
        summary.errors.append(f"budget {status.budget.pk}: {exc}")
        return False
    summary.budgets += 1
    summary.firing += level is not None
    return True


def alerts_evaluate(*, now: datetime | None = None, budgets_only: bool = False) -> EvaluationSummary:
    """Beat (every minute) and after writes: evaluate every active budget and every due rule.

    Reads first, in bulk: every active budget's status and forecast, the firing alerts, the rollup
    sums of the rules' windows. Then each budget and each rule in its own transaction; one that raises
    is logged and skipped (a rule's next evaluation is pushed back by ALERT_RULE_ERROR_BACKOFF_SECONDS).
    """
    now = now or timezone.now()
    summary = EvaluationSummary()
    if not settings.ENABLE_COST_MONITORING:
        return summary  # monitoring off: usage is recorded, nothing is checked or raised
    firing = FiringAlerts.read()
    statuses = budget_statuses(Budget.objects.plain().filter(is_active=True).order_by("pk"), at=now)
    # The values of templates whose spend moved since the last pass (and those with alerts firing),
    # not every value ever seen (budgets.templates.template_values_due).
    sources = (AlertSource.BUDGET, AlertSource.FORECAST)
    firing_values = {a.budget_id for a in firing.by_key.values() if a.budget_id and a.source in sources}
    values = template_values_due(now=now, also=firing_values)
    for chunk in (values[i : i + VALUES_CHUNK] for i in range(0, len(values), VALUES_CHUNK)):
        statuses += budget_statuses(chunk, at=now)
    # The budgets that may speak (forecast alerts on, or at a level): their forecasts read together,
    # and their periods opened together (an alert belongs to a period).
    speaking = [s for s in statuses if s.budget.forecast_alerts or s.level]
    speaking = budget_periods_open(statuses=with_forecasts(speaking))
    found = {s.budget.pk: s for s in speaking}
    statuses = [found.get(s.budget.pk, s) for s in statuses]
    # Many values of one template reaching a level in one pass are told in one digest per level, not
    # one message each.
    crossing: dict[tuple[int, str], list[BudgetStatus]] = {}
    for status in statuses:
        budget, level = status.budget, status.level
        if budget.template_id and level and budget_alert_key(budget, status.period.start, level) not in firing.by_key:
            crossing.setdefault((budget.template_id, level), []).append(status)
    digests = {key: group for key, group in crossing.items() if len(group) > settings.BUDGET_DIGEST_AFTER}
    digested = {s.budget.pk for group in digests.values() for s in group}
    for status in statuses:
        if status.budget.pk not in digested:
            _budget_evaluate_logged(status, now=now, firing=firing, summary=summary)
    for (_, level), group in digests.items():
        with transaction.atomic():  # the values' alerts and their digest: all or nothing
            told = [s for s in group if _budget_evaluate_logged(s, now=now, firing=firing, summary=summary, quiet=True)]
            if told:
                budget_digest_notify(template=group[0].budget.template, level=level, statuses=told, now=now)
    templates_evaluated(now=now)
    if budgets_only:
        return summary
    due = AlertRule.objects.filter(is_enabled=True).filter(
        Q(next_evaluation_at__isnull=True) | Q(next_evaluation_at__lte=now)
    )
    rules = list(due.order_by("pk"))
    sums = rollup_sums(rules, now)
    backoff = timedelta(seconds=settings.ALERT_RULE_ERROR_BACKOFF_SECONDS)
    for rule in rules:
        try:
            result = rule_evaluate(rule, now=now, firing=firing, sums=sums)
        except Exception as exc:
            logger.exception("evaluating alert rule %s (%s) failed; retrying in %s", rule.pk, rule.name, backoff)
            AlertRule.objects.filter(pk=rule.pk).update(
                next_evaluation_at=now + backoff, last_error=f"{exc.__class__.__name__}: {exc}"
            )
            summary.errors.append(f"rule {rule.pk}: {exc}")
            continue
        summary.rules += 1
        summary.firing += result == "firing"
    return summary
