"""The business metrics at /metrics, declared once here and read from the database at scrape time.

Every process (a web worker, a Celery worker) sees the same numbers, because they come from the
database, not from counters bumped in whichever process did the work (django-prometheus's own
metrics, beside these at /metrics, are per process). A collection is kept for
METRICS_CACHE_SECONDS (default 5), so a burst of scrapes costs one read.

What is read, and what it costs, whatever the size of the ledger:

- counters (cost, tokens, requests, errors, rate-limit hits, unpriced events) and the request
  duration histogram: the rows of tracking.MetricSeries, lifetime totals per (provider, service,
  operation, model, currency) kept by the record path in the same transaction as the ledger row;
- budgets: every active USD budget's status and forecast from budgets' one status selector
  (budgets.selectors.budget_statuses: a few statements whatever the number of budgets; nothing is
  written), the same figures the admin, the API and the alerts show. A template's values (one
  budget per end user, job, tag value ...) are as many as its users, so each active USD template
  exports its METRICS_TEMPLATE_TOP_VALUES (default 10) values of highest utilisation as budgets
  named "<template>: <value>", and how many of its values are at each level, from one
  budgets.selectors.template_summary each (the rollups of its values' spend, whatever their number;
  a top value that spent but was not yet evaluated gets its budget, as the alert pass would give it);
- cost per lead: the last finished batch of each pipeline; month to date (tracking.batches);
- GPU: the daily rollups of each device's tag:gpu=<uuid> scope, its latest sample, and its idle
  time summed over its samples;
- alerts firing by severity; notifications waiting or dead.

Labels are bounded: provider, service, operation, model, budget, pipeline, GPU; never a subject,
job or batch id but those of a template's top values (at most METRICS_TEMPLATE_TOP_VALUES each).
Model names come from whoever records usage, so each provider keeps its METRICS_MODELS_PER_PROVIDER
(default 20) models of most USD spend by name and sums the rest into model="other" (OTHER_MODEL): the
totals stay exact, the series stay few. Money metrics (`_dollars`) hold USD amounts only (the
ledger's currency per entry, a budget's currency); amounts in other currencies are not exported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, DecimalField, F, Max, Min, OuterRef, Q, Subquery, Sum
from django.db.models.expressions import ExpressionWrapper
from django.utils import timezone
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

NAMESPACE = "costcontrol"
USD = "USD"
OTHER_MODEL = "other"  # the model label of each provider's models beyond its top METRICS_MODELS_PER_PROVIDER
# MetricSeries token counters -> the `kind` label of costcontrol_tokens_total.
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cached_input_tokens": "cached_input",
    "cache_write_tokens": "cache_write",
    "reasoning_tokens": "reasoning",
    "embedding_tokens": "embedding",
}


@dataclass(frozen=True)
class MetricDoc:
    """One exported metric: its full name as it appears in the exposition, type, help and labels."""

    name: str
    kind: str  # counter, gauge, histogram
    help: str
    labels: tuple[str, ...] = ()

    @property
    def family_name(self) -> str:
        """The name prometheus_client's families take (a counter's without its _total)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def sample_names(self) -> tuple[str, ...]:
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)


def _m(name: str, kind: str, help_text: str, *labels: str) -> MetricDoc:
    return MetricDoc(f"{NAMESPACE}_{name}", kind, help_text, labels)


SERIES = ("provider", "service", "operation", "model")
BUDGET = ("budget", "scope", "period")
GPU = ("gpu", "name")
METRICS: tuple[MetricDoc, ...] = (
    _m("cost_dollars_total", "counter", "Cost recorded in the ledger, USD (corrections included).", *SERIES),
    _m("tokens_total", "counter", "Tokens recorded, by kind (input, output, cached_input, ...).", "provider", "model", "kind"),
    _m("requests_total", "counter", "Calls recorded, by outcome (success, error, rate_limited).", "provider", "operation", "outcome"),
    _m("errors_total", "counter", "Failed calls recorded, by error type (error, rate_limited).", "provider", "operation", "error_type"),
    _m("rate_limit_hits_total", "counter", "Calls recorded as rate limited by the provider.", "provider", "operation"),
    _m("unpriced_events_total", "counter", "Events recorded with no price in force (or no usage reported).", "provider", "model"),
    _m("request_duration_seconds", "histogram", "Duration of the calls that reported one, as recorded.", "provider", "operation"),
    _m("budget_spent_dollars", "gauge", "Spent in the budget's current period, USD.", *BUDGET),
    _m("budget_limit_dollars", "gauge", "The budget's limit in its current period (amount + carried over), USD.", *BUDGET),
    _m("budget_utilization_ratio", "gauge", "Spent / limit of the current period (1 = the whole limit).", *BUDGET),
    _m("budget_forecast_dollars", "gauge", "Spend projected at the end of the current period, USD.", *BUDGET),
    _m("budget_period_end_timestamp_seconds", "gauge", "When the budget's current period ends (Unix time).", *BUDGET),
    _m("budget_template_values", "gauge", "Values of a budget template with spend this period, by level (ok, info, warning, critical, exceeded).", *BUDGET, "level"),
    _m("budget_template_values_known", "gauge", "Values of a budget template with a budget of their own (each checked, reserved for or seen spending).", *BUDGET),
    _m("batch_cost_per_lead_dollars", "gauge", "Cost per lead of the pipeline's last finished batch, USD.", "pipeline"),
    _m("cost_per_lead_month_dollars", "gauge", "Month-to-date cost / leads of the batches finished this month, USD."),
    _m("gpu_cost_dollars_total", "counter", "GPU time billed (burst mode), USD.", *GPU),
    _m("gpu_utilization_ratio", "gauge", "Utilisation in the GPU's latest sample (0-1).", *GPU),
    _m("gpu_idle_seconds_total", "counter", "Time between samples x (1 - utilisation), summed over the GPU's samples.", *GPU),
    _m("gpu_last_sample_timestamp_seconds", "gauge", "When the GPU was last sampled (Unix time).", *GPU),
    _m("bill_metered_dollars", "gauge", "Metered spend of the provider's last day billed (UTC), USD, from the rollups.", "provider"),
    _m("bill_billed_dollars", "gauge", "What the provider billed for its last day billed (UTC), USD, as imported.", "provider"),
    _m("bill_drift_ratio", "gauge", "(metered - billed) / billed on the provider's last day billed (0 = they agree).", "provider"),
    _m("bill_last_day_timestamp_seconds", "gauge", "Start of the provider's last day billed (Unix time).", "provider"),
    _m("bill_last_success_timestamp_seconds", "gauge", "When the billing source was last pulled successfully (Unix time).", "source", "provider"),
    _m("alerts_firing", "gauge", "Alerts firing, by severity (info, warning, critical, exceeded).", "severity"),
    _m("notifications_pending", "gauge", "Notifications waiting to be delivered (pending or being sent)."),
    _m("notifications_oldest_pending_timestamp_seconds", "gauge", "When the oldest waiting notification was created (Unix time)."),
    _m("notifications_failed", "gauge", "Notifications given up on after every retry (dead letters)."),
    _m("metrics_database_up", "gauge", "1 if the last collection could read the database, else 0."),
    _m("metrics_collect_duration_seconds", "gauge", "How long the last collection of these metrics took."),
)  # fmt: skip
BY_NAME = {doc.name: doc for doc in METRICS}


def _family(name: str) -> Metric:
    doc = BY_NAME[f"{NAMESPACE}_{name}"]
    if doc.kind == "counter":
        return CounterMetricFamily(doc.family_name, doc.help, labels=doc.labels)
    if doc.kind == "histogram":
        return HistogramMetricFamily(doc.family_name, doc.help, labels=doc.labels)
    return GaugeMetricFamily(doc.family_name, doc.help, labels=doc.labels)


def _seconds(moment: datetime) -> float:
    return moment.timestamp()


# --- the readers -----------------------------------------------------------------------------------


def series_families() -> list[Metric]:
    """Counters and the duration histogram from tracking.MetricSeries (one small table, no ledger scan)."""
    from tracking.models import DURATION_BUCKETS_MS, SERIES_COUNTERS, SERIES_KEY, MetricSeries

    cost: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    tokens: dict[tuple[str, ...], int] = defaultdict(int)
    outcomes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # events, errors, rate limited
    unpriced: dict[tuple[str, str], int] = defaultdict(int)
    durations: dict[tuple[str, str], list[int]] = {}
    index = {name: i for i, name in enumerate(SERIES_COUNTERS)}
    duration_start = index["duration_count"]
    rows = list(MetricSeries.objects.values_list(*SERIES_KEY, *SERIES_COUNTERS).order_by(*SERIES_KEY))
    named = _named_models(
        ((row[0], row[3], row[5 + index["amount"]] if row[4] == USD else Decimal(0)) for row in rows),
        per_provider=settings.METRICS_MODELS_PER_PROVIDER,
    )
    for row in rows:
        (provider, service, operation, model, currency), counters = row[:5], row[5:]
        if (provider, model) not in named:
            model = OTHER_MODEL
        if currency == USD:
            cost[(provider, service, operation, model)] += counters[index["amount"]]
        for field, kind in TOKEN_KINDS.items():
            tokens[(provider, model, kind)] += counters[index[field]]
        totals = outcomes[(provider, operation)]
        for i, field in enumerate(("events", "errors", "rate_limited")):
            totals[i] += counters[index[field]]
        unpriced[(provider, model)] += counters[index["unpriced"]]
        histogram = durations.setdefault((provider, operation), [0] * (len(SERIES_COUNTERS) - duration_start))
        for i, value in enumerate(counters[duration_start:]):
            histogram[i] += value

    cost_family = _family("cost_dollars_total")
    for labels, amount in cost.items():
        cost_family.add_metric(list(labels), float(amount))
    token_family = _family("tokens_total")
    for labels, count in tokens.items():
        token_family.add_metric(list(labels), count)
    requests, errors, rate_limits = _family("requests_total"), _family("errors_total"), _family("rate_limit_hits_total")
    for (provider, operation), (events, failed, limited) in outcomes.items():
        requests.add_metric([provider, operation, "success"], events - failed - limited)
        requests.add_metric([provider, operation, "error"], failed)
        requests.add_metric([provider, operation, "rate_limited"], limited)
        errors.add_metric([provider, operation, "error"], failed)
        errors.add_metric([provider, operation, "rate_limited"], limited)
        rate_limits.add_metric([provider, operation], limited)
    unpriced_family = _family("unpriced_events_total")
    for labels, count in unpriced.items():
        unpriced_family.add_metric(list(labels), count)
    histogram_family = _family("request_duration_seconds")
    for (provider, operation), (count, sum_ms, *cumulative) in durations.items():
        buckets = [(_le(bound), n) for bound, n in zip(DURATION_BUCKETS_MS, cumulative, strict=True)]
        histogram_family.add_metric([provider, operation], [*buckets, ("+Inf", count)], sum_ms / 1000)
    return [cost_family, token_family, requests, errors, rate_limits, unpriced_family, histogram_family]


def _named_models(spend: Iterable[tuple[str, str, Decimal]], *, per_provider: int) -> set[tuple[str, str]]:
    """The (provider, model) pairs that keep their name: each provider's `per_provider` models of most USD
    spend (ties: by name), from (provider, model, amount) rows."""
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for provider, model, amount in spend:
        totals[provider][model] += amount
    return {
        (provider, model)
        for provider, models in totals.items()
        for model in sorted(models, key=lambda m: (-models[m], m))[:per_provider]
    }


def _le(bound_ms: int) -> str:
    return floatToGoString(bound_ms / 1000)  # as prometheus_client writes its own buckets: "0.1", "1.0", "60.0"


def budget_families(*, at: datetime) -> list[Metric]:
    """Every active USD plain budget's status and forecast at `at`, from budgets' one status selector (a
    few statements whatever the number of budgets), and of each active USD template its top values by
    utilisation (named "<template>: <value>") and its values' counts by level (template_summary, one
    per template: bounded series whatever the number of values)."""
    from budgets.models import Budget
    from budgets.selectors import budget_statuses, template_summary, with_forecasts
    from core.scopes import template_value

    spent, limit, ratio = (
        _family("budget_spent_dollars"),
        _family("budget_limit_dollars"),
        _family("budget_utilization_ratio"),
    )
    forecast, period_end = _family("budget_forecast_dollars"), _family("budget_period_end_timestamp_seconds")
    levels, known = _family("budget_template_values"), _family("budget_template_values_known")

    def labelled(budget: Budget, name: str, seen: set[tuple[str, str, str]]) -> list[str]:
        labels = [name, budget.scope, budget.period]
        if tuple(labels) in seen:  # two budgets of one name, scope and period: keep both series apart
            labels[0] = f"{name} (#{budget.pk})"
        seen.add((labels[0], labels[1], labels[2]))
        return labels

    active = Budget.objects.filter(is_active=True, currency=USD).order_by("pk")
    statuses = budget_statuses(active.plain(), at=at)
    names = {status.budget.pk: status.budget.name for status in statuses}
    templates_seen: set[tuple[str, str, str]] = set()
    for template in active.templates():
        summary = template_summary(template, at=at, top=settings.METRICS_TEMPLATE_TOP_VALUES)
        labels = labelled(template, template.name, templates_seen)
        for level, count in summary.levels.items():
            levels.add_metric([*labels, level], count)
        known.add_metric(labels, summary.values)
        statuses.extend(summary.top)
        names.update(
            (s.budget.pk, f"{template.name}: {template_value(template.scope, s.budget.scope)}") for s in summary.top
        )
    budgets_seen: set[tuple[str, str, str]] = set()
    for status in with_forecasts(statuses):
        budget = status.budget
        labels = labelled(budget, names[budget.pk], budgets_seen)
        spent.add_metric(labels, float(status.spent))
        limit.add_metric(labels, float(status.limit))
        if status.limit > 0:
            ratio.add_metric(labels, float(status.spent / status.limit))
        if status.forecast is not None:
            forecast.add_metric(labels, float(status.forecast.amount))
        if status.period.end is not None:
            period_end.add_metric(labels, _seconds(status.period.end))
    return [spent, limit, ratio, forecast, period_end, levels, known]


def batch_families(*, at: datetime) -> list[Metric]:
    from tracking.batches import month_to_date
    from tracking.models import Batch

    computed = Batch.objects.filter(finished_at__isnull=False, cost_computed_at__isnull=False)
    latest = computed.filter(
        pk=Subquery(computed.filter(name=OuterRef("name")).order_by("-finished_at", "-pk").values("pk")[:1])
    )
    per_lead = _family("batch_cost_per_lead_dollars")
    for name, value in latest.order_by("name").values_list("name", "cost_per_lead"):
        if value is not None:  # no leads: undefined, not zero
            per_lead.add_metric([name], float(value))
    month = _family("cost_per_lead_month_dollars")
    month_value = month_to_date(at=at).cost_per_lead
    if month_value is not None:
        month.add_metric([], float(month_value))
    return [per_lead, month]


class GpuIdle:
    """Each GPU's idle time (seconds x idle percent) summed over its samples, counted incrementally.

    A sample gets elapsed_seconds only when it is the device's newest (gpu_sample_record, under the
    device's row lock), so a device's counted samples only ever grow at its end: each collection
    adds the samples after the newest one already counted (the (device, sampled_at) index), and
    the first collection of a process reads them all once. Exact (Decimal) on PostgreSQL, so every
    process arrives at the same total.
    """

    def __init__(self) -> None:
        self._counted: dict[int, tuple[datetime, Decimal]] = {}  # device id -> (newest sample counted, sum)
        self._lock = threading.Lock()

    def weighted(self, device_ids: list[int]) -> dict[int, Decimal]:
        from tracking.models import GpuSample

        with self._lock:
            after = Q()
            for device_id in device_ids:
                counted = self._counted.get(device_id)
                after |= Q(device_id=device_id, sampled_at__gt=counted[0]) if counted else Q(device_id=device_id)
            rows = (
                GpuSample.objects.filter(after, elapsed_seconds__isnull=False)
                .values("device_id")
                .annotate(
                    newest=Max("sampled_at"),
                    weighted=Sum(
                        ExpressionWrapper(
                            F("elapsed_seconds") * (100 - F("utilisation_percent")),
                            output_field=DecimalField(max_digits=30, decimal_places=6),
                        )
                    ),
                )
                .order_by()
            )
            for row in rows if device_ids else []:
                _, total = self._counted.get(row["device_id"], (None, Decimal(0)))
                self._counted[row["device_id"]] = (row["newest"], total + (row["weighted"] or 0))
            return {device_id: self._counted[device_id][1] for device_id in device_ids if device_id in self._counted}


GPU_IDLE = GpuIdle()


def gpu_families() -> list[Metric]:
    from tracking.gpu import GPU_TAG
    from tracking.models import GpuDevice, GpuSample, SpendRollupDay

    latest = GpuSample.objects.filter(device=OuterRef("pk")).order_by("-sampled_at")
    devices = list(
        GpuDevice.objects.annotate(
            latest_utilisation=Subquery(latest.values("utilisation_percent")[:1]),
            latest_sampled_at=Subquery(latest.values("sampled_at")[:1]),
        ).order_by("uuid")
    )
    cost, utilisation = _family("gpu_cost_dollars_total"), _family("gpu_utilization_ratio")
    idle, last_sample = _family("gpu_idle_seconds_total"), _family("gpu_last_sample_timestamp_seconds")
    if not devices:
        return [cost, utilisation, idle, last_sample]
    scopes = {f"tag:{GPU_TAG}={device.uuid}": device for device in devices}
    costs = dict(
        SpendRollupDay.objects.filter(scope__in=list(scopes), currency=USD)
        .values("scope")
        .annotate(total=Sum("amount"))
        .values_list("scope", "total")
    )
    idle_weighted = GPU_IDLE.weighted([device.pk for device in devices])
    for scope, device in scopes.items():
        labels = [device.uuid, device.name]
        cost.add_metric(labels, float(costs.get(scope) or 0))
        idle.add_metric(labels, float(idle_weighted.get(device.pk, 0) / 100))
        if device.latest_utilisation is not None:
            utilisation.add_metric(labels, device.latest_utilisation / 100)
            last_sample.add_metric(labels, _seconds(device.latest_sampled_at))
    return [cost, utilisation, idle, last_sample]


def bill_families(*, at: datetime) -> list[Metric]:
    """Each provider's last day billed (the difference rule's figures: alerts.evaluation.bill_drift_latest) and
    each billing source's last successful pull."""
    from alerts.evaluation import NoData, bill_drift_latest
    from tracking.models import BillingSource

    metered, billed = _family("bill_metered_dollars"), _family("bill_billed_dollars")
    ratio, last_day = _family("bill_drift_ratio"), _family("bill_last_day_timestamp_seconds")
    success = _family("bill_last_success_timestamp_seconds")
    sources = list(BillingSource.objects.order_by("name"))
    for provider in sorted({source.provider for source in sources}):
        try:
            drift = bill_drift_latest(f"provider:{provider}", at)
        except NoData:
            continue
        metered.add_metric([provider], float(drift.metered))
        billed.add_metric([provider], float(drift.billed))
        ratio.add_metric([provider], float(drift.drift_percent / 100))
        last_day.add_metric([provider], datetime.combine(drift.day, datetime.min.time(), tzinfo=UTC).timestamp())
    for source in sources:
        if source.last_success_at is not None:
            success.add_metric([source.name, source.provider], _seconds(source.last_success_at))
    return [metered, billed, ratio, last_day, success]


def alert_families() -> list[Metric]:
    from alerts.models import LEVEL_CHOICES, Alert, AlertState, Notification, NotificationStatus

    firing = dict(
        Alert.objects.filter(state=AlertState.FIRING)
        .values("level")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("level", "n")
    )
    alerts = _family("alerts_firing")
    for level, _ in LEVEL_CHOICES:
        alerts.add_metric([level], firing.get(level, 0))
    waiting = (NotificationStatus.PENDING, NotificationStatus.SENDING)
    rows = (
        Notification.objects.filter(status__in=[*waiting, NotificationStatus.FAILED])
        .values("status")
        .annotate(n=Count("id"), oldest=Min("created_at"))
        .order_by()
    )
    pending, failed, oldest_at = 0, 0, None
    for row in rows:
        if row["status"] in waiting:
            pending += row["n"]
            oldest_at = row["oldest"] if oldest_at is None else min(oldest_at, row["oldest"])
        else:
            failed += row["n"]
    pending_family, failed_family = _family("notifications_pending"), _family("notifications_failed")
    pending_family.add_metric([], pending)
    failed_family.add_metric([], failed)
    oldest = _family("notifications_oldest_pending_timestamp_seconds")
    if oldest_at is not None:
        oldest.add_metric([], _seconds(oldest_at))
    return [alerts, pending_family, oldest, failed_family]


def business_families(*, at: datetime | None = None) -> list[Metric]:
    """Every business metric, read from the database now (uncached; BusinessCollector caches it)."""
    at = at or timezone.now()
    return [
        *series_families(),
        *budget_families(at=at),
        *batch_families(at=at),
        *gpu_families(),
        *bill_families(at=at),
        *alert_families(),
    ]


# --- the collector -----------------------------------------------------------------------------------


class BusinessCollector(Collector):
    """A prometheus_client collector: business_families(), kept for METRICS_CACHE_SECONDS.

    If the database cannot be read, the scrape still answers (with the framework metrics),
    costcontrol_metrics_database_up is 0 and the error is logged.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._expires = float("-inf")

    def describe(self) -> Iterator[Metric]:
        """The families' names without reading anything (prometheus_client calls this at register)."""
        for doc in METRICS:
            yield _family(doc.name.removeprefix(f"{NAMESPACE}_"))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._clock() >= self._expires:
                self._families = self._read()
                self._expires = self._clock() + settings.METRICS_CACHE_SECONDS
            families = self._families
        yield from families

    def clear(self) -> None:
        with self._lock:
            self._families, self._expires = [], float("-inf")

    def _read(self) -> list[Metric]:
        started = time.perf_counter()
        up = _family("metrics_database_up")
        try:
            with transaction.atomic():  # a failed read leaves no aborted transaction behind
                families = business_families()
            up.add_metric([], 1)
        except DatabaseError:
            logger.exception("business metrics: the database could not be read")
            families = []
            up.add_metric([], 0)
        took = _family("metrics_collect_duration_seconds")
        took.add_metric([], time.perf_counter() - started)
        return [*families, up, took]


COLLECTOR = BusinessCollector()


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Add the business collector to a registry (the default one at start-up; idempotent)."""
    try:
        registry.register(COLLECTOR)
    except ValueError:  # already registered (a second ready(), tests)
        pass
