"""alerts_evaluate's bulk reads and writes leave exactly what evaluating one budget and one rule at a
time leaves: the same alerts, figures, cooldowns, notifications and rule values (SQLite, and the
PostgreSQL statements under `make test`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

import alerts.evaluation
from alerts.bulk import alert_rules_measured, alerts_refresh
from alerts.evaluation import alerts_evaluate, budget_evaluate, rule_evaluate
from alerts.models import Alert, AlertRule, AlertState, Metric, Notification, Window
from budgets.models import Budget
from tests.factories import BudgetFactory, TeamFactory
from tracking.batches import batch_cost_compute, batch_finish, batch_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog_prices(db):
    """The analytics tests' price catalog (the anomaly attribution limits a provider's models to it)."""
    from tests.analytics.conftest import STREAMS
    from tests.factories import PriceFactory

    for stream in STREAMS:
        PriceFactory(provider=stream.provider, model=stream.model, operation=stream.operation)


T0 = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)


def one_by_one(now: datetime) -> None:
    """The pass evaluated piece by piece: each budget with its own reads, each rule through
    rule_evaluate and alert_fire (no pass-wide reads, no deferred writes)."""
    for budget in Budget.objects.filter(is_active=True).order_by("pk"):
        budget_evaluate(budget, now=now)
    due = AlertRule.objects.filter(is_enabled=True).filter(
        Q(next_evaluation_at__isnull=True) | Q(next_evaluation_at__lte=now)
    )
    for rule in due.order_by("pk"):
        rule_evaluate(rule, now=now)


def outcome() -> dict[str, Any]:
    """What a user sees after a pass (ids left out: a rolled-back run still uses up sequence values)."""
    return {
        "alerts": sorted(
            Alert.objects.values_list(
                "key",
                "source",
                "state",
                "level",
                "title",
                "message",
                "value",
                "threshold",
                "currency",
                "team_id",
                "rule_id",
                "budget_id",
                "budget_period__start",
                "first_fired_at",
                "last_fired_at",
                "resolved_at",
                "next_notify_at",
                "notify_count",
                "acknowledged_at",
                "muted_until",
            )
        ),
        "notifications": sorted(
            (*row[:-1], re.sub(r"/alert/\d+/", "/alert/ID/", row[-1]))  # the admin link names the alert's id
            for row in Notification.objects.values_list(
                "alert__key", "channel_id", "kind", "level", "dedup_key", "subject", "status", "created_at", "text"
            )
        ),
        "rules": sorted(
            AlertRule.objects.values_list("pk", "last_value", "last_evaluated_at", "last_error", "next_evaluation_at")
        ),
    }


def bulk_pass_equals_one_by_one(now: datetime) -> Any:
    """From the same state: the one-by-one pass (rolled back), then alerts_evaluate (kept); both
    must leave the same outcome. Returns alerts_evaluate's summary."""
    with time_machine.travel(now, tick=False):
        with transaction.atomic():
            one_by_one(now)
            expected = outcome()
            transaction.set_rollback(True)
        summary = alerts_evaluate(now=now)
    assert not summary.errors
    found = outcome()
    for what in expected:  # only the rows that differ, in the failure message
        assert [r for r in found[what] if r not in expected[what]] == [
            r for r in expected[what] if r not in found[what]
        ]
        assert found[what] == expected[what]
    return summary


def test_a_pass_leaves_what_evaluating_one_by_one_leaves(spend, channel):
    ml = TeamFactory(name="ml")
    BudgetFactory(name="All monthly", scope="global", amount=Decimal("300"), forecast_alerts=True)
    BudgetFactory(name="All daily", scope="global", period="daily", amount=Decimal("20"), forecast_alerts=True)
    BudgetFactory(name="OpenAI daily", scope="provider:openai", period="daily", amount=Decimal("50"))
    BudgetFactory(name="gpt-4o weekly", scope="model:gpt-4o", period="weekly", amount=Decimal("90"), team=ml)
    BudgetFactory(name="Chat yearly", scope="service:chat", period="yearly", amount=Decimal("10000"))
    hour = timedelta(hours=1)
    rules = [
        ("spend today", Metric.SPEND, Window.DAY, "global", "1", None),
        ("gpt-4o this hour", Metric.SPEND, Window.HOUR, "model:gpt-4o", "5", ml),
        ("spend 24h", Metric.SPEND, Window.LAST_DAY, "provider:openai", "100", None),
        ("tokens today", Metric.TOKENS, Window.DAY, "global", "10", None),
        ("errors 5 min", Metric.ERROR_RATE, Window.LAST_5_MINUTES, "global", "10", None),
        ("errors 1h", Metric.ERROR_RATE, Window.LAST_HOUR, "service:chat", "10", None),
        ("rate limits 5 min", Metric.RATE_LIMITED, Window.LAST_5_MINUTES, "provider:openai", "0", None),
        ("cost per lead", Metric.COST_PER_LEAD, Window.LAST_BATCH, "global", "0.01", None),
        ("cost per lead month", Metric.COST_PER_LEAD, Window.MONTH, "global", "0.01", None),
        ("cost per lead change", Metric.COST_PER_LEAD_CHANGE, Window.LAST_BATCH, "global", "10", None),
    ]
    for name, metric, window, scope, threshold, team in rules:
        AlertRule.objects.create(
            name=name, metric=metric, window=window, scope=scope, threshold=Decimal(threshold), team=team, cooldown=hour
        )
    for day, (cost, leads) in enumerate([("2", 10), ("3", 10), ("9", 10)]):
        started = T0 - timedelta(days=3 - day, hours=5)
        with time_machine.travel(started, tick=False):
            batch = batch_start(name="leads")
        spend(cost, started + timedelta(minutes=1), job=batch.job)
        with time_machine.travel(started + timedelta(minutes=30), tick=False):
            batch_cost_compute(batch=batch_finish(batch=batch, leads=leads))

    spend("120", T0 - timedelta(hours=2), service="chat", input_tokens=4000)
    spend("3", T0 - timedelta(minutes=2), service="chat", outcome="error")
    first = bulk_pass_equals_one_by_one(T0)  # opens the alerts
    assert first.firing >= 8 and Notification.objects.count() >= 8

    spend("10", T0 + timedelta(seconds=30), service="chat", outcome="rate_limited")
    bulk_pass_equals_one_by_one(T0 + timedelta(minutes=1))  # new figures, inside the cooldowns
    assert Alert.objects.get(key__startswith="budget:", budget__name="OpenAI daily").value == Decimal("133")

    Alert.objects.filter(rule__name="spend today").update(state=AlertState.RESOLVED, resolved_at=T0)
    Alert.objects.filter(rule__name="tokens today").update(muted_until=T0 + 3 * hour)
    Alert.objects.filter(rule__name="spend 24h").update(acknowledged_at=T0)
    spend("1", T0 + timedelta(minutes=3))
    bulk_pass_equals_one_by_one(T0 + timedelta(minutes=4))  # one fires again, one muted, one acknowledged

    spend("2", T0 + timedelta(minutes=70), service="chat")
    bulk_pass_equals_one_by_one(T0 + timedelta(minutes=75))  # cooldowns over: repeats; a new hour

    spend("40", T0 + timedelta(hours=14))
    bulk_pass_equals_one_by_one(T0 + timedelta(hours=14, minutes=1))  # the next day: new daily periods
    bulk_pass_equals_one_by_one(T0 + timedelta(hours=14, minutes=2))  # nothing new


def test_a_pass_writes_the_figures_of_many_quiet_alerts_and_the_rule_values_in_one_statement_each(spend, channel):
    for i in range(8):
        BudgetFactory(name=f"OpenAI {i}", scope="provider:openai", amount=Decimal("250"))
    for i in range(6):
        AlertRule.objects.create(
            name=f"spend today {i}", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(i + 1)
        )
    with time_machine.travel(T0, tick=False):
        spend("205.10", T0 - timedelta(hours=2))
        alerts_evaluate()
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        spend("10", T0)
        with CaptureQueriesContext(connection) as queries:
            summary = alerts_evaluate()
    assert summary.firing == 14 and not summary.errors
    alerts = list(Alert.objects.all())
    assert len(alerts) == 14 and all(a.value == Decimal("215.10") for a in alerts)
    assert all("215.10" in a.message for a in alerts)
    assert Notification.objects.count() == 14  # no second notification
    updates = [q["sql"] for q in queries.captured_queries if re.match(r"\s*(WITH .*\n)?UPDATE ", q["sql"], re.DOTALL)]
    if connection.vendor == "postgresql":  # elsewhere the same UPDATEs run one by one, in one transaction
        assert len([sql for sql in updates if '"alerts_alert"' in sql or "alerts_alert " in sql]) == 2
        assert len([sql for sql in updates if "alerts_alertrule" in sql]) == 1


def test_alerts_refresh_writes_only_alerts_still_quiet_and_says_which(spend, channel):
    with time_machine.travel(T0, tick=False):
        spend("2", T0)
        for i in range(3):
            AlertRule.objects.create(
                name=f"r{i}", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1), cooldown=timedelta(hours=1)
            )
        alerts_evaluate()
    quiet, resolved, due = Alert.objects.order_by("pk")
    Alert.objects.filter(pk=resolved.pk).update(state=AlertState.RESOLVED, resolved_at=T0)
    Alert.objects.filter(pk=due.pk).update(next_notify_at=T0)
    figures = {
        "title": "new",
        "message": "new message",
        "value": Decimal("1.1234567894"),  # more places than the column keeps: rounded as the ORM would
        "threshold": Decimal("1"),
        "level": "critical",
        "team_id": None,
    }
    written = alerts_refresh([(a.pk, figures) for a in (quiet, resolved, due)], now=T0 + timedelta(minutes=1))
    assert written == {quiet.pk}
    quiet.refresh_from_db(), resolved.refresh_from_db(), due.refresh_from_db()
    assert (quiet.title, quiet.message, quiet.level) == ("new", "new message", "critical")
    expected = Alert(pk=quiet.pk, value=figures["value"])
    expected.save(update_fields=["value"])  # what a single ORM UPDATE stores for the same Decimal
    expected.refresh_from_db()
    assert quiet.value == expected.value
    assert resolved.title != "new" and due.title != "new"


def test_alert_rules_measured_writes_each_rules_value(channel):
    rules = [
        AlertRule.objects.create(name=f"r{i}", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1))
        for i in range(3)
    ]
    AlertRule.objects.filter(pk=rules[2].pk).update(last_error="old failure")
    alert_rules_measured([(rules[0].pk, Decimal("2.5")), (rules[2].pk, None)], now=T0)
    values = dict(AlertRule.objects.values_list("pk", "last_value"))
    assert values == {rules[0].pk: Decimal("2.5"), rules[1].pk: None, rules[2].pk: None}
    stamped = dict(AlertRule.objects.values_list("pk", "last_evaluated_at"))
    assert stamped == {rules[0].pk: T0, rules[1].pk: None, rules[2].pk: T0}
    assert AlertRule.objects.get(pk=rules[2].pk).last_error == ""


def test_a_rule_whose_deferred_alert_fire_raises_is_pushed_back_and_the_others_still_refresh(
    spend, channel, monkeypatch
):
    broken = AlertRule.objects.create(
        name="broken", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1), cooldown=timedelta(hours=1)
    )
    works = AlertRule.objects.create(
        name="works", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1), cooldown=timedelta(hours=1)
    )
    with time_machine.travel(T0, tick=False):
        spend("2", T0)
        alerts_evaluate()
    real_read, real_fire = alerts.evaluation.OpenAlerts.read, alerts.evaluation.alert_fire

    def read_then_resolve(cls):
        found = real_read()
        Alert.objects.filter(rule=broken).update(state=AlertState.RESOLVED, resolved_at=T0)  # in between
        return found

    def alert_fire(**kwargs):
        if kwargs["rule"].pk == broken.pk:
            raise RuntimeError("boom")
        return real_fire(**kwargs)

    monkeypatch.setattr(alerts.evaluation.OpenAlerts, "read", classmethod(read_then_resolve))
    monkeypatch.setattr(alerts.evaluation, "alert_fire", alert_fire)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        spend("1", T0)
        summary = alerts_evaluate()
    assert summary.errors == [f"rule {broken.pk}: boom"]
    assert summary.rules == 1 and summary.firing == 1
    broken.refresh_from_db()
    assert broken.next_evaluation_at == T0 + timedelta(minutes=6) and "boom" in broken.last_error
    assert Alert.objects.get(rule=works).value == Decimal("3")
    assert Alert.objects.get(rule=broken).state == AlertState.RESOLVED


def test_the_sub_hour_counters_of_many_scopes_read_in_one_statement_equal_each_read_alone(spend, gpt4o_prices):
    from alerts.evaluation import RollupSums, metric_value

    TeamFactory(name="ml")
    now = T0
    events = [
        ("1", dict(service="chat", subject="u1", job="j1", team="ml", tags={"env": "prod"}, outcome="error")),
        ("2", dict(service="chat", subject="u2", outcome="rate_limited", input_tokens=500)),
        ("3", dict(service="batch", job="j1", tags={"env": "dev"}, output_tokens=70)),
        ("4", dict(subject="u1", team="ml", outcome="error", input_tokens=10)),
    ]
    for i, (amount, fields) in enumerate(events):
        spend(amount, now - timedelta(minutes=4, seconds=i), **fields)
    spend("5", now - timedelta(minutes=6), service="chat", outcome="error")  # before the window
    scopes = ["global", "provider:openai", "provider:other", "model:gpt-4o", "service:chat", "subject:u1"]
    scopes += ["job:j1", "team:ml", "tag:env=prod"]
    rules = [
        AlertRule(pk=i, name=f"r{i}", metric=metric, window=Window.LAST_5_MINUTES, scope=scope, threshold=Decimal(0))
        for i, (metric, scope) in enumerate(
            (metric, scope)
            for metric in (Metric.ERROR_RATE, Metric.RATE_LIMITED, Metric.UNPRICED, Metric.TOKENS)
            for scope in scopes
        )
    ]
    with CaptureQueriesContext(connection) as queries:
        sums = RollupSums(rules, now)
    assert len([q for q in queries.captured_queries if "tracking_costentry" in q["sql"]]) == 1
    alone = {rule.pk: metric_value(rule, now) for rule in rules}
    together = {rule.pk: metric_value(rule, now, sums=sums) for rule in rules}
    assert together == alone
    assert alone[0] == Decimal("50.00") and alone[5] == Decimal("100.00")  # errors: 2 of 4; u1: 2 of 2
    assert alone[len(scopes) * 3] == Decimal(580)  # every token of the window


def test_the_anomaly_rules_of_a_pass_computed_together_fire_as_each_alone(channel, catalog_prices):
    from tests.analytics.conftest import T0 as ANOMALY_T0
    from tests.analytics.conftest import seasonal_entries, write
    from tests.analytics.test_anomalies import INJECTED

    write(seasonal_entries(last_hours=24) + [e for spike in INJECTED for e in spike])
    scopes = ["global", "provider:openai", "provider:anthropic", "model:gpt-4o", "service:support", "subject:cust-c"]
    windows = [Window.LAST_DAY, Window.DAY, Window.LAST_HOUR, Window.HOUR]
    for i, scope in enumerate(scopes):
        for window in windows[i % 2 :: 1 + i % 2]:
            AlertRule.objects.create(
                name=f"anomaly {scope} {window}",
                metric=Metric.ANOMALY,
                scope=scope,
                window=window,
                threshold=Decimal(5),
                cooldown=timedelta(hours=1),
            )
    summary = bulk_pass_equals_one_by_one(ANOMALY_T0)
    assert summary.firing >= 3  # the spikes are found, through the pass as one by one
    assert Alert.objects.filter(message__contains="Worst: subject:cust-c").exists()
    bulk_pass_equals_one_by_one(ANOMALY_T0 + timedelta(hours=2))
