"""Evaluating budgets and alert rules into alerts (the beat task, and right after writes).

Money and counters come from the hourly rollups. Windows shorter than an hour (rate-limit hits
in the last 5 minutes) count ledger rows in that window through the occurred_at index: a
bounded range, never a scan of the ledger.
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
from django.db.models import Count, Q, Sum
from django.utils import timezone

from budgets.models import Budget, level_rank
from budgets.selectors import (
    BudgetStatus,
    budget_forecasts_prefetch,
    budget_positions,
    budget_status_compute,
    utilisation_percent,
)
from budgets.services import budget_status
from core.money import format_money
from core.periods import period_bounds
from tracking.batches import batch_last_finished, cost_per_lead_change, lead_unit, month_to_date
from tracking.models import TOKEN_FIELDS, Batch, CostEntry, Outcome, SpendRollup, SpendRollupDay
from tracking.selectors import rollup_window

from .bulk import FIGURES, alert_rules_measured, alerts_refresh
from .models import Alert, AlertRule, AlertSource, AlertState, Metric, Window
from .services import alert_fire, alert_resolve

logger = logging.getLogger(__name__)


class NoData(Exception):
    """The metric has nothing to measure yet (e.g. no closed batch): neither fire nor resolve."""


class Undefined(Exception):
    """The metric is undefined where it should not be (a batch without leads): that fires itself."""


class PassReads:
    """Reads that several budgets or rules of one pass share (the last batch, month-to-date cost per
    lead, a period's top model), made once per pass: nothing a pass writes changes them."""

    def __init__(self) -> None:
        self._found: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        if key not in self._found:
            self._found[key] = read()
        return self._found[key]


def _once(reads: PassReads | None, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
    return read() if reads is None else reads.get(key, read)


# --- metric values ---------------------------------------------------------------------------------


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a rule's window. Calendar windows follow TIME_ZONE, like budget periods."""
    if window == Window.HOUR:
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if window == Window.DAY:
        return _bounds("daily", now)
    if window == Window.MONTH:
        return _bounds("monthly", now)
    rolling = {Window.LAST_5_MINUTES: 5, Window.LAST_HOUR: 60, Window.LAST_DAY: 24 * 60}
    if window in rolling:
        return now - timedelta(minutes=rolling[window]), now
    raise NoData(f"window {window!r} is not a time window")


def _bounds(kind: str, now: datetime) -> tuple[datetime, datetime]:
    start, end = period_bounds(kind, now)
    assert end is not None
    return start, end


def _rollups(scope: str, start: datetime, end: datetime) -> Any:
    # Rollup buckets are whole UTC hours: a rolling window starts at its first hour's bucket.
    first = start.replace(minute=0, second=0, microsecond=0)
    return SpendRollup.objects.filter(scope=scope, currency="USD", bucket__gte=first, bucket__lt=end)


def _cost_per_lead(rule: AlertRule, now: datetime, reads: PassReads | None = None) -> Decimal:
    if rule.window == Window.MONTH:
        mtd = _once(reads, ("month_to_date", now), lambda: month_to_date(at=now))
        finished = _once(
            reads,
            ("finished_since", mtd.start, now),
            lambda: Batch.objects.filter(finished_at__gte=mtd.start, finished_at__lte=now).exists(),
        )
        if not finished:
            raise NoData("no batch finished this month")
        if mtd.cost_per_lead is None:
            raise Undefined(
                f"cost per {lead_unit()} this month is undefined: {format_money(mtd.cost, 'USD')} spent and "
                f"the batches finished this month produced no {lead_unit()}s"
            )
        return mtd.cost_per_lead
    batch = _once(reads, ("batch_last_finished", now), lambda: batch_last_finished(at=now))
    if batch is None:
        raise NoData("no batch has finished yet")
    if batch.cost_per_lead is None:
        raise Undefined(
            f"the last batch {batch.name} ({batch.job}) produced no {lead_unit()}s: its cost per {lead_unit()} is "
            f"undefined ({format_money(batch.cost or Decimal(0), 'USD')} spent)"
        )
    if rule.metric == Metric.COST_PER_LEAD_CHANGE:
        change = _once(reads, ("cost_per_lead_change", batch.pk), lambda: cost_per_lead_change(batch=batch))
        if change is None:
            raise NoData("no batch with a cost per lead in the 7 days before the last one")
        return change[0]
    return batch.cost_per_lead


# Anomaly scores are computed by analytics, which sits above alerts and reads alerts' models: it
# hands its reader over at start-up (analytics.apps.AnalyticsConfig.ready), so alerts imports nothing
# of it. A reader answers {(scope, start, end): summary with .score, .worst} for the questions given.
AnomalyReader = Callable[[list[tuple[str, datetime, datetime]]], dict[tuple[str, datetime, datetime], Any]]
_anomaly_reader: AnomalyReader | None = None


def anomaly_reader_set(reader: AnomalyReader) -> None:
    global _anomaly_reader
    _anomaly_reader = reader


def anomaly_reader() -> AnomalyReader:
    if _anomaly_reader is None:
        raise NoData("anomaly rules need the analytics app (INSTALLED_APPS)")
    return _anomaly_reader


def _anomaly_question(rule: AlertRule, now: datetime) -> tuple[str, datetime, datetime]:
    start, end = window_bounds(rule.window, now)
    return rule.scope, start, min(end, now)


def anomalies_prefetch(rules: list[AlertRule], now: datetime) -> dict[tuple[str, datetime, datetime], Any]:
    """The anomalies of every anomaly rule of a pass, computed together (analytics'
    anomaly_summaries: each window's rollups read once, each scope's history once), keyed as
    _anomalies' memo. A rule whose window is not a time window is left to _anomalies (NoData)."""
    questions = []
    for rule in rules:
        if rule.metric != Metric.ANOMALY:
            continue
        try:
            questions.append(_anomaly_question(rule, now))
        except NoData:
            continue
    return anomaly_reader()(questions) if questions else {}


def _anomalies(rule: AlertRule, now: datetime, memo: dict[tuple[str, datetime, datetime], Any] | None = None) -> Any:
    """The anomalies of the rule's scope in its window (global: every dimension), worst first.
    Rules of one pass with the same scope and window share one computation (`memo`, filled for all
    of them at once by anomalies_prefetch)."""
    key = _anomaly_question(rule, now)
    if memo is not None and key in memo:
        return memo[key]
    found = anomaly_reader()([key])[key]
    if memo is not None:
        memo[key] = found
    return found


_SUMS = {
    "amount": Sum("amount"),
    "events": Sum("events"),
    "errors": Sum("errors"),
    "rate_limited": Sum("rate_limited"),
    "unpriced": Sum("unpriced"),
    **{name: Sum(name) for name in TOKEN_FIELDS},
}


def _rollup_scope(rule: AlertRule) -> str:
    return "provider:gpu" if rule.metric == Metric.GPU_COST and rule.scope == "global" else rule.scope


def _reads_rollups(rule: AlertRule, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of a rule whose value is a sum of hourly rollups (None: it reads something else)."""
    if rule.metric in (Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE, Metric.ANOMALY):
        return None
    try:
        start, end = window_bounds(rule.window, now)
    except NoData:
        return None
    if rule.metric not in (Metric.SPEND, Metric.GPU_COST) and end - start < timedelta(hours=1):
        return None  # counted from the ledger
    return start, end


class RollupSums:
    """The rollup sums every due rule of a pass needs: one GROUP BY scope statement per window
    (this hour, today, this month, the last 60 minutes, the last 24 hours) instead of one per rule;
    and the ledger counters of the sub-hour windows, one statement per window (_ledger_counts_many)."""

    def __init__(self, rules: list[AlertRule], now: datetime) -> None:
        windows: dict[tuple[datetime, datetime], set[str]] = {}
        short: dict[tuple[datetime, datetime], set[str]] = {}
        for rule in rules:
            window = _reads_rollups(rule, now)
            if window is not None:
                windows.setdefault(window, set()).add(_rollup_scope(rule))
            elif (window := _reads_ledger(rule, now)) is not None:
                short.setdefault(window, set()).add(_rollup_scope(rule))
        self.counts: dict[tuple[datetime, datetime], dict[str, dict[str, int]]] = {
            (start, end): _ledger_counts_many(scopes, start, end) for (start, end), scopes in short.items()
        }
        self.sums: dict[tuple[datetime, datetime], dict[str, dict[str, Any]]] = {}
        for (start, end), scopes in windows.items():
            first = start.replace(minute=0, second=0, microsecond=0)
            rows = (
                SpendRollup.objects.filter(scope__in=sorted(scopes), currency="USD", bucket__gte=first, bucket__lt=end)
                .values("scope")
                .annotate(**_SUMS)
                .order_by()
            )
            self.sums[(start, end)] = {row.pop("scope"): row for row in rows}

    def get(self, window: tuple[datetime, datetime], scope: str) -> dict[str, Any] | None:
        """The sums of `scope` in `window` (all None where it has no rollups), or None if not read."""
        found = self.sums.get(window)
        if found is None:
            return None
        return found.get(scope) or dict.fromkeys(_SUMS)

    def ledger_counts(self, window: tuple[datetime, datetime], scope: str) -> dict[str, int] | None:
        """The ledger counters of `scope` in the sub-hour `window`, or None if not read."""
        return self.counts.get(window, {}).get(scope)


def metric_value(
    rule: AlertRule, now: datetime, *, sums: RollupSums | None = None, reads: PassReads | None = None
) -> Decimal:
    if rule.metric in (Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE):
        return _cost_per_lead(rule, now, reads)
    if rule.metric == Metric.ANOMALY:
        return _anomalies(rule, now).score
    start, end = window_bounds(rule.window, now)
    scope = _rollup_scope(rule)
    short = end - start < timedelta(hours=1)
    read = sums.get((start, end), scope) if sums is not None else None
    if rule.metric in (Metric.SPEND, Metric.GPU_COST):
        if read is None:
            read = _rollups(scope, start, end).aggregate(amount=Sum("amount"))
        return read["amount"] if read["amount"] is not None else Decimal(0)
    if short:
        counts = sums.ledger_counts((start, end), scope) if sums is not None else None
        if counts is not None:
            return _from_counts(rule.metric, counts)
        return _ledger_counts(rule, scope, start, end)
    if read is None:
        read = _rollups(scope, start, end).aggregate(**{k: v for k, v in _SUMS.items() if k != "amount"})
    return _from_counts(rule.metric, {k: v or 0 for k, v in read.items() if k != "amount"})


def _from_counts(metric: str, counts: dict[str, int]) -> Decimal:
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


def _reads_ledger(rule: AlertRule, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of a rule whose value is counted from the ledger (a sub-hour window), else None."""
    if rule.metric in (Metric.SPEND, Metric.GPU_COST, Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE):
        return None
    if rule.metric == Metric.ANOMALY:
        return None
    try:
        start, end = window_bounds(rule.window, now)
    except NoData:
        return None
    return (start, end) if end - start < timedelta(hours=1) else None


def _ledger_counters(condition: Q | None = None) -> dict[str, Any]:
    def only(extra: Q | None) -> Q | None:
        if condition is None:
            return extra
        return condition if extra is None else condition & extra

    return {
        "events": Count("pk", filter=only(None)),
        "errors": Count("pk", filter=only(Q(outcome=Outcome.ERROR))),
        "rate_limited": Count("pk", filter=only(Q(outcome=Outcome.RATE_LIMITED))),
        "unpriced": Count("pk", filter=only(Q(pricing_status="unpriced"))),
        **{name: Sum(name, filter=only(None)) for name in TOKEN_FIELDS},
    }


# Scopes whose ledger rows are those with one plain column equal to the value (no join, no JSON).
_COLUMN_SCOPES = ("provider", "model", "service", "subject", "job")


def _ledger_counts_many(scopes: set[str], start: datetime, end: datetime) -> dict[str, dict[str, int]]:
    """The counters of every global or single-column scope over one sub-hour window of the ledger,
    in one statement (one filtered aggregate per scope, the same range of the occurred_at index);
    team and tag scopes are left out (RollupSums.ledger_counts says None: _ledger_counts reads them
    rule by rule)."""
    plain = sorted(s for s in scopes if s == "global" or s.partition(":")[0] in _COLUMN_SCOPES)
    if not plain:
        return {}
    aggregates: dict[str, Any] = {}
    for i, scope in enumerate(plain):
        kind, _, value = scope.partition(":")
        condition = None if scope == "global" else Q(**{kind: value})
        aggregates |= {f"s{i}_{name}": counter for name, counter in _ledger_counters(condition).items()}
    row = CostEntry.objects.filter(occurred_at__gte=start, occurred_at__lt=end).aggregate(**aggregates)
    counters = list(_ledger_counters())
    return {scope: {name: row[f"s{i}_{name}"] or 0 for name in counters} for i, scope in enumerate(plain)}


def _ledger_counts(rule: AlertRule, scope: str, start: datetime, end: datetime) -> Decimal:
    """Counters over a sub-hour window: a bounded range of the ledger (occurred_at index)."""
    entries = CostEntry.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
    kind, _, value = scope.partition(":")
    if kind in _COLUMN_SCOPES:
        entries = entries.filter(**{kind: value})
    elif kind == "team":
        entries = entries.filter(team__name=value)
    elif kind == "tag":
        key, _, tag_value = value.partition("=")
        entries = entries.filter(**{f"tags__{key}": tag_value})
    counts = entries.aggregate(**_ledger_counters())
    return _from_counts(rule.metric, {k: v or 0 for k, v in counts.items()})


# --- rules -------------------------------------------------------------------------------------------


def rule_key(rule: AlertRule) -> str:
    return f"rule:{rule.pk}:{rule.scope}"


@dataclass
class Measure:
    """What one rule measured: its value (None: no data, or undefined), and what its alert says."""

    value: Decimal | None
    no_data: bool = False
    undefined: Undefined | None = None
    anomalies: Any = None


def rule_measure(
    rule: AlertRule,
    *,
    now: datetime,
    sums: RollupSums | None = None,
    anomalies_memo: dict[tuple[str, datetime, datetime], Any] | None = None,
    reads: PassReads | None = None,
) -> Measure:
    """The rule's value at `now` (reads only)."""
    try:
        if rule.metric == Metric.ANOMALY:
            anomalies = _anomalies(rule, now, anomalies_memo)  # its score is the value, its worst the detail
            return Measure(value=anomalies.score, anomalies=anomalies)
        return Measure(value=metric_value(rule, now, sums=sums, reads=reads))
    except NoData:
        return Measure(value=None, no_data=True)
    except Undefined as exc:
        return Measure(value=None, undefined=exc)


def rule_conclude(rule: AlertRule, measure: Measure, *, now: datetime, open_alerts: OpenAlerts | None = None) -> str:
    """Fire or resolve the rule's alert on what it measured (its last_value already written).
    Returns "firing", "ok" or "no data"."""
    if measure.no_data:
        return "no data"
    if measure.undefined is not None:
        _fire(
            open_alerts,
            key=rule_key(rule),
            source=AlertSource.RULE,
            level=rule.level,
            scope=rule.scope,
            title=f"{rule.name}: undefined",
            message=f"Rule '{rule.name}': {measure.undefined}.",
            value=None,
            threshold=rule.threshold,
            currency="",
            rule=rule,
            cooldown=rule.cooldown,
            now=now,
        )
        return "firing"
    value = measure.value
    assert value is not None
    if value > rule.threshold:
        money = rule.metric in (Metric.SPEND, Metric.GPU_COST, Metric.COST_PER_LEAD)
        places = 4 if rule.metric == Metric.COST_PER_LEAD else 2
        shown = format_money(value, "USD", places=places) if money else f"{value.normalize():f}"
        limit = format_money(rule.threshold, "USD", places=places) if money else f"{rule.threshold.normalize():f}"
        if rule.metric == Metric.COST_PER_LEAD_CHANGE:
            shown, limit = f"{shown} %", f"{limit} %"
        detail = ""
        if measure.anomalies is not None:
            worst = measure.anomalies.worst
            detail = f" Worst: {worst.describe()}." if worst is not None else ""
        _fire(
            open_alerts,
            key=rule_key(rule),
            source=AlertSource.RULE,
            level=rule.level,
            scope=rule.scope,
            title=f"{rule.name}: {shown} ({rule.get_window_display()})",
            message=f"Rule '{rule.name}': {rule.get_metric_display()} of {rule.scope} "
            f"{rule.get_window_display()} is {shown}, above {limit}.{detail}",
            value=value,
            threshold=rule.threshold,
            currency="USD" if money else "",
            rule=rule,
            cooldown=rule.cooldown,
            now=now,
        )
        return "firing"
    _resolve(open_alerts, key=rule_key(rule), now=now)
    return "ok"


def rule_evaluate(
    rule: AlertRule,
    *,
    now: datetime,
    open_alerts: OpenAlerts | None = None,
    sums: RollupSums | None = None,
    anomalies_memo: dict[tuple[str, datetime, datetime], Any] | None = None,
    reads: PassReads | None = None,
) -> str:
    """Fire or resolve one rule's alert. Returns "firing", "ok" or "no data".

    `open_alerts` (alerts_evaluate's one read of every firing alert) spares the statements of an
    alert that stays as it is: one not firing is not resolved again, one firing and not due for a
    notification gets its figures updated in one statement (see _fire); `sums`, `anomalies_memo`
    and `reads` are the pass's shared reads. alerts_evaluate runs the same three steps for all its
    rules at once (every rule measured, their last values written in one statement, then fired or
    resolved)."""
    measure = rule_measure(rule, now=now, sums=sums, anomalies_memo=anomalies_memo, reads=reads)
    AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=measure.value, last_error="")
    return rule_conclude(rule, measure, now=now, open_alerts=open_alerts)


# --- firing and resolving, sparing what does not change ------------------------------------------------


@dataclass
class Refresh:
    """A firing alert's new figures, written with the others of its pass (see _fire)."""

    alert: Alert
    figures: dict[str, Any]
    fire: dict[str, Any]  # alert_fire's arguments, for an alert no longer as the pass read it


class OpenAlerts:
    """The firing alerts of one evaluation pass, by dedup key, read in one statement.

    `defer`: _fire queues the figures of alerts that stay as they are in `refreshes` (alerts_evaluate
    writes them in one statement, refreshes_write) instead of one UPDATE each."""

    def __init__(self, alerts: Any, *, defer: bool = False) -> None:
        self.by_key: dict[str, Alert] = {a.key: a for a in alerts}
        self.by_budget: dict[int, list[Alert]] = {}
        sources = (AlertSource.BUDGET, AlertSource.FORECAST)
        for alert in self.by_key.values():
            if alert.budget_id is not None and alert.source in sources:
                self.by_budget.setdefault(alert.budget_id, []).append(alert)
        self.defer = defer
        self.refreshes: list[Refresh] = []

    @classmethod
    def read(cls) -> OpenAlerts:
        return cls(Alert.objects.filter(state=AlertState.FIRING))

    def of_budget(self, budget: Budget) -> list[Alert]:
        """The budget's firing threshold and forecast alerts (as read)."""
        return list(self.by_budget.get(budget.pk, ()))


def _quiet(alert: Alert, now: datetime) -> bool:
    """Not due for a notification: inside its cooldown, or a budget level already announced."""
    return alert.next_notify_at is None or alert.next_notify_at > now


def _fire(open_alerts: OpenAlerts | None, **kwargs: Any) -> None:
    """alert_fire, or, for an alert already firing that is not due for a notification (inside its
    cooldown, or a budget level already announced), what alert_fire would change: its latest figures,
    in one conditional UPDATE (nothing at all when they are the same; queued for refreshes_write when
    the pass defers them). Anything else (a new or resolved alert, one due, muted or acknowledged, or
    one that changed since it was read) takes alert_fire's path."""
    now = kwargs["now"]
    alert = open_alerts.by_key.get(kwargs["key"]) if open_alerts is not None else None
    if alert is not None and _quiet(alert, now):
        team_id = getattr(kwargs.get("rule"), "team_id", None) or getattr(kwargs.get("budget"), "team_id", None)
        figures = {name: kwargs[name] for name in FIGURES if name != "team_id"} | {"team_id": team_id}
        if all(getattr(alert, name) == value for name, value in figures.items()):
            return
        assert open_alerts is not None
        if open_alerts.defer:
            open_alerts.refreshes.append(Refresh(alert=alert, figures=figures, fire=kwargs))
            return
        if _refresh_one(alert, figures, now):
            return
    alert_fire(**kwargs)


def _refresh_one(alert: Alert, figures: dict[str, Any], now: datetime) -> bool:
    still = Q(next_notify_at__isnull=True) | Q(next_notify_at__gt=now)
    if Alert.objects.filter(still, pk=alert.pk, state=AlertState.FIRING).update(**figures):
        for name, value in figures.items():
            setattr(alert, name, value)
        return True
    return False


def refreshes_write(open_alerts: OpenAlerts) -> list[tuple[Refresh, Exception]]:
    """Write the queued figures: in one statement the alerts still quiet, through alert_fire the
    others (what _fire does one by one). Returns the refreshes whose alert_fire raised."""
    queued, open_alerts.refreshes = open_alerts.refreshes, []
    by_now: dict[datetime, list[Refresh]] = {}
    for refresh in queued:
        by_now.setdefault(refresh.fire["now"], []).append(refresh)
    failed: list[tuple[Refresh, Exception]] = []
    for now, refreshes in by_now.items():
        try:
            written = alerts_refresh([(r.alert.pk, r.figures) for r in refreshes], now=now)
        except Exception:
            logger.exception("refreshing %s firing alerts at once failed; one by one", len(refreshes))
            written = None
        for refresh in refreshes:
            try:
                if written is None:
                    if _refresh_one(refresh.alert, refresh.figures, now):
                        continue
                elif refresh.alert.pk in written:
                    for name, value in refresh.figures.items():
                        setattr(refresh.alert, name, value)
                    continue
                alert_fire(**refresh.fire)
            except Exception as exc:  # noqa: BLE001 - the caller logs it as its budget's or rule's failure
                failed.append((refresh, exc))
    return failed


def _resolve(open_alerts: OpenAlerts | None, *, key: str, notify: bool = True, now: datetime) -> None:
    """alert_resolve, skipped for an alert that was not firing when the pass read them (one that
    opened since is resolved by the next pass)."""
    if open_alerts is not None and key not in open_alerts.by_key:
        return
    alert_resolve(key=key, notify=notify, now=now)
    if open_alerts is not None:
        open_alerts.by_key.pop(key, None)


# --- budgets -----------------------------------------------------------------------------------------


def budget_alert_key(budget: Budget, period_start: datetime, level: str, *, forecast: bool = False) -> str:
    kind = "forecast" if forecast else "budget"
    return f"{kind}:{budget.pk}:{period_start.astimezone(UTC):%Y%m%dT%H%M}:{level}"


def budget_message(status: BudgetStatus, reads: PassReads | None = None) -> str:
    """ "Budget 'OpenAI monthly' is at 82 % (205.10 of 250.00 USD) with 9 days left; projected 312.40 USD
    by 30 Nov. Top driver: model gpt-4o (61 %)." """
    budget, currency = status.budget, status.currency
    cents = Decimal("0.01")
    used = "over its zero limit" if status.utilisation is None else f"at {status.utilisation.quantize(Decimal(1))} %"
    text = (
        f"Budget '{budget.name}' is {used} ({status.spent.quantize(cents):,} of "
        f"{status.limit.quantize(cents):,} {currency})"
    )
    if status.days_left is not None:
        text += f" with {status.days_left} day{'s' if status.days_left != 1 else ''} left"
    if status.forecast is not None and status.period.end is not None:
        last_day = (status.period.end - timedelta(microseconds=1)).astimezone(ZoneInfo(settings.TIME_ZONE))
        text += f"; projected {status.forecast.quantize(cents):,} {currency} by {last_day:%-d %b}"
    text += "."
    driver = top_driver(status, reads)
    if driver:
        text += f" Top driver: {driver}."
    return text


def top_driver(status: BudgetStatus, reads: PassReads | None = None) -> str:
    """The model with the largest share of a global budget's spend this period ("" for other scopes:
    model rollups are not split by provider, service or subject)."""
    budget = status.budget
    if status.spent <= 0 or budget.scope != "global":
        return ""
    end = status.at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = status.period.start
    totals = _once(
        reads, ("model_totals", budget.currency, start, end), lambda: _model_totals(budget.currency, start, end)
    )
    if not totals:
        return ""
    scope, total = max(totals.items(), key=lambda item: (item[1], item[0]))
    share = (total * 100 / status.spent).quantize(Decimal(1))
    return f"model {scope.partition(':')[2]} ({share} %)"


def _model_totals(currency: str, start: datetime, end: datetime) -> dict[str, Decimal]:
    """Spend of every model scope over the hourly buckets in [start, end): whole UTC days from the
    daily rollups, the ragged ends from the hourly ones (a quarter is ~90 rows a model, not ~2,000)."""
    window = rollup_window(start, end)
    totals: dict[str, Decimal] = {}
    hours = Q()
    for lo, hi in ((window.start, window.head_end), (window.tail_start, window.end)):
        if lo < hi:
            hours |= Q(bucket__gte=lo, bucket__lt=hi)
    reads = []
    if hours:
        reads.append(SpendRollup.objects.filter(hours))
    if window.days_start < window.days_end:
        reads.append(SpendRollupDay.objects.filter(bucket__gte=window.days_start, bucket__lt=window.days_end))
    for rows in reads:
        for row in (
            rows.filter(scope__startswith="model:", currency=currency)
            .values("scope")
            .annotate(total=Sum("amount"))
            .order_by()
        ):
            totals[row["scope"]] = totals.get(row["scope"], Decimal(0)) + row["total"]
    return totals


def _budget_alert_fire(
    status: BudgetStatus,
    *,
    level: str,
    forecast: bool,
    title: str,
    message: str,
    open_alerts: OpenAlerts | None = None,
) -> None:
    """A budget's alert for one level of one period: announced once (no cooldown)."""
    budget = status.budget
    _fire(
        open_alerts,
        key=budget_alert_key(budget, status.period.start, level, forecast=forecast),
        source=AlertSource.FORECAST if forecast else AlertSource.BUDGET,
        level=level,
        scope=budget.scope,
        title=title,
        message=message,
        value=status.forecast if forecast else status.spent,
        threshold=status.limit,
        currency=budget.currency,
        budget=budget,
        budget_period=status.period,
        cooldown=None,
        now=status.at,
    )


def budget_evaluate(
    budget: Budget,
    *,
    now: datetime,
    status: BudgetStatus | None = None,
    open_alerts: OpenAlerts | None = None,
    reads: PassReads | None = None,
) -> str | None:
    """Fire the budget's current level once per period, resolve levels it fell below, and forecast
    alerts when enabled. Returns the level.

    alerts_evaluate passes the status (read for every budget in one statement) and the pass's
    firing alerts (and the reads it shares between budgets); alone, it reads them itself."""
    if status is None:
        status = budget_status(budget=budget, at=now)
    if open_alerts is None:
        open_alerts = OpenAlerts(
            Alert.objects.filter(
                budget=budget, state=AlertState.FIRING, source__in=[AlertSource.BUDGET, AlertSource.FORECAST]
            )
        )
    period = status.period
    level = status.level
    budget_alerts = open_alerts.of_budget(budget)
    for alert in budget_alerts:
        if alert.budget_period_id != period.pk:
            _resolve(open_alerts, key=alert.key, notify=False, now=now)  # a new period starts afresh
        elif alert.source == AlertSource.BUDGET and level_rank(alert.level) > level_rank(level):
            _resolve(open_alerts, key=alert.key, now=now)  # the limit was raised
    if level:
        used = "over a zero limit" if status.utilisation is None else f"{status.utilisation} % used"
        _budget_alert_fire(
            status,
            level=level,
            forecast=False,
            title=f"Budget '{budget.name}' {level}: {used}",
            message=budget_message(status, reads),
            open_alerts=open_alerts,
        )
    if budget.forecast_alerts and status.forecast is not None:
        forecast_level = budget.level_for(
            utilisation_percent(spent=status.forecast, limit=status.limit), over=status.forecast > status.limit
        )
        for alert in budget_alerts:
            if alert.source != AlertSource.FORECAST or alert.budget_period_id != period.pk:
                continue
            if alert.key in open_alerts.by_key and level_rank(alert.level) > level_rank(forecast_level):
                _resolve(open_alerts, key=alert.key, now=now)
        if forecast_level and level_rank(forecast_level) > level_rank(level):
            when = ""
            if status.projected_exceed_at:
                local = status.projected_exceed_at.astimezone(ZoneInfo(settings.TIME_ZONE))
                when = f" Projected to exceed at {local:%H:%M} on the {_ordinal(local.day)}."
            forecast = format_money(status.forecast.quantize(Decimal("0.01")), budget.currency)
            _budget_alert_fire(
                status,
                level=forecast_level,
                forecast=True,
                title=f"Budget '{budget.name}' forecast {forecast_level}: {forecast} by period end",
                message=budget_message(status, reads) + when,
                open_alerts=open_alerts,
            )
    return level


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


# --- the tick ----------------------------------------------------------------------------------------


def _budget_statuses(now: datetime) -> list[tuple[Budget, BudgetStatus | None]]:
    """Every active budget with its status, in id order: the periods, spend and reservations of all of
    them in one statement (budget_positions). A budget whose current period is not open yet gets
    None (budget_evaluate opens it, closing the last one, through budget_status)."""
    scopes = Budget.objects.filter(is_active=True).values_list("scope", flat=True).distinct().order_by()
    try:
        positions = budget_positions(scopes=list(scopes), at=now) if scopes else []
    except Exception:
        logger.exception("reading every budget's position failed; evaluating them one by one")
        return [(budget, None) for budget in Budget.objects.filter(is_active=True).order_by("pk")]
    statuses = [
        (
            p.budget,
            None
            if p.period is None
            else budget_status_compute(budget=p.budget, period=p.period, at=now, spent=p.spent, reserved=p.reserved),
        )
        for p in positions
    ]
    # The forecasts an evaluation reads (forecast alerts; the message of a budget at some level),
    # their week of history in two statements rather than two per budget.
    budget_forecasts_prefetch([s for b, s in statuses if s is not None and (b.forecast_alerts or s.level is not None)])
    return statuses


@dataclass
class EvaluationSummary:
    budgets: int = 0
    rules: int = 0
    firing: int = 0
    errors: list[str] = field(default_factory=list)


def alerts_evaluate(*, now: datetime | None = None, budgets_only: bool = False) -> EvaluationSummary:
    """Beat (every minute) and after writes: evaluate every active budget and every due rule.

    One budget or rule that raises is logged and skipped (a rule's next evaluation is pushed back
    by ALERT_RULE_ERROR_BACKOFF_SECONDS); the others still run.

    In bulk: the firing alerts are read once; the new figures of those that stay quiet are written
    in one statement after the budgets and one after the rules (refreshes_write); every due rule is
    measured first, their last values written in one statement, then fired or resolved.
    """
    now = now or timezone.now()
    summary = EvaluationSummary()
    open_alerts = OpenAlerts.read()
    open_alerts.defer = True
    reads = PassReads()
    budget_firing: dict[int, bool] = {}
    for budget, status in _budget_statuses(now):
        try:
            level = budget_evaluate(budget, now=now, status=status, open_alerts=open_alerts, reads=reads)
            summary.budgets += 1
            summary.firing += level is not None
            budget_firing[budget.pk] = level is not None
        except Exception as exc:
            logger.exception("evaluating budget %s failed; going on with the others", budget.pk)
            summary.errors.append(f"budget {budget.pk}: {exc}")
    for refresh, exc in refreshes_write(open_alerts):
        budget = refresh.fire["budget"]
        logger.error("evaluating budget %s failed; going on with the others", budget.pk, exc_info=exc)
        if budget.pk in budget_firing:  # counted as evaluated: it was not
            summary.budgets -= 1
            summary.firing -= budget_firing.pop(budget.pk)
        summary.errors.append(f"budget {budget.pk}: {exc}")
    if budgets_only:
        return summary
    due = AlertRule.objects.filter(is_enabled=True).filter(
        Q(next_evaluation_at__isnull=True) | Q(next_evaluation_at__lte=now)
    )
    backoff = timedelta(seconds=settings.ALERT_RULE_ERROR_BACKOFF_SECONDS)
    rules = list(due.order_by("pk"))
    errors: dict[int, str] = {}

    def failed(rule: AlertRule, exc: Exception, *, logged: bool = False) -> None:
        if not logged:
            logger.exception("evaluating alert rule %s (%s) failed; retrying in %s", rule.pk, rule.name, backoff)
        AlertRule.objects.filter(pk=rule.pk).update(
            next_evaluation_at=now + backoff, last_error=f"{exc.__class__.__name__}: {exc}"
        )
        errors[rule.pk] = f"rule {rule.pk}: {exc}"

    try:
        sums: RollupSums | None = RollupSums(rules, now)
    except Exception:
        logger.exception("reading the rules' rollup sums failed; reading them rule by rule")
        sums = None
    try:
        anomalies_memo: dict[tuple[str, datetime, datetime], Any] = anomalies_prefetch(rules, now)
    except Exception:
        logger.exception("computing the anomaly rules' anomalies at once failed; computing them rule by rule")
        anomalies_memo = {}
    measured: list[tuple[AlertRule, Measure]] = []
    for rule in rules:
        try:
            measure = rule_measure(rule, now=now, sums=sums, anomalies_memo=anomalies_memo, reads=reads)
        except Exception as exc:  # noqa: BLE001 - failed() logs it; the other rules still run
            failed(rule, exc)
            continue
        measured.append((rule, measure))
    try:
        alert_rules_measured([(rule.pk, measure.value) for rule, measure in measured], now=now)
    except Exception:
        logger.exception("writing the rules' last values at once failed; one by one")
        written = []
        for rule, measure in measured:
            try:
                AlertRule.objects.filter(pk=rule.pk).update(
                    last_evaluated_at=now, last_value=measure.value, last_error=""
                )
            except Exception as exc:  # noqa: BLE001 - failed() logs it; the other rules still run
                failed(rule, exc)
                continue
            written.append((rule, measure))
        measured = written
    rule_firing: dict[int, bool] = {}
    for rule, measure in measured:
        try:
            result = rule_conclude(rule, measure, now=now, open_alerts=open_alerts)
            summary.rules += 1
            summary.firing += result == "firing"
            rule_firing[rule.pk] = result == "firing"
        except Exception as exc:  # noqa: BLE001 - failed() logs it; the other rules still run
            failed(rule, exc)
    for refresh, exc in refreshes_write(open_alerts):
        rule = refresh.fire["rule"]
        logger.error("evaluating alert rule %s (%s) failed; retrying in %s", rule.pk, rule.name, backoff, exc_info=exc)
        failed(rule, exc, logged=True)
        if rule.pk in rule_firing:  # counted as evaluated: it was not
            summary.rules -= 1
            summary.firing -= rule_firing.pop(rule.pk)
    summary.errors += [errors[rule.pk] for rule in rules if rule.pk in errors]
    return summary
