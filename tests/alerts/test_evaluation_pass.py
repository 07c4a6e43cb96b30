"""One evaluation pass reads in bulk: what it must still do exactly as alert_fire / alert_resolve would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert, AlertState, Metric, Notification, Window
from tests.factories import AlertRuleFactory, BudgetFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)


def test_an_open_budget_alert_shows_the_latest_spend_without_a_second_notification(spend, channel):
    BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("250"))
    with time_machine.travel(T0, tick=False):
        spend("205.10", T0 - timedelta(hours=2))
        alerts_evaluate()
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        spend("10", T0)
        alerts_evaluate()
    [alert] = Alert.objects.all()
    assert alert.value == Decimal("215.10") and "215.10 of 250.00" in alert.message
    assert Notification.objects.count() == 1


def test_an_unchanged_pass_writes_nothing(spend, channel):
    for i in range(5):
        BudgetFactory(name=f"OpenAI {i}", scope="provider:openai", amount=Decimal("250"))
    AlertRuleFactory(name="spend today", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1))
    AlertRuleFactory(name="quiet", metric=Metric.TOKENS, window=Window.DAY, threshold=Decimal(10**9))
    with time_machine.travel(T0, tick=False):
        spend("205.10", T0 - timedelta(hours=2))
        alerts_evaluate()
        with CaptureQueriesContext(connection) as queries:
            summary = alerts_evaluate()
    assert summary.firing == 6 and not summary.errors
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("INSERT", "DELETE"))]
    alert_updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "alerts_alert"')]
    assert writes == [] and alert_updates == []
    assert Notification.objects.count() == 6


def test_an_alert_resolved_since_the_pass_read_it_fires_again_through_alert_fire(spend, channel, monkeypatch):
    import alerts.evaluation

    AlertRuleFactory(
        name="spend today", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1), cooldown=timedelta(hours=1)
    )
    with time_machine.travel(T0, tick=False):
        spend("2", T0)
        alerts_evaluate()
    real = alerts.evaluation.FiringAlerts.read

    def read_then_resolve(cls, **filters):
        found = real(**filters)
        Alert.objects.update(state=AlertState.RESOLVED, resolved_at=T0)  # another evaluator, in between
        return found

    monkeypatch.setattr(alerts.evaluation.FiringAlerts, "read", classmethod(read_then_resolve))
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        spend("1", T0)
        alerts_evaluate()
    [alert] = Alert.objects.all()
    assert alert.state == AlertState.FIRING and alert.value == Decimal("3")
    assert Notification.objects.count() == 2  # the incident that opened again is announced


def test_a_count_in_an_alerts_title_and_message_reads_with_thousands_separators(spend, channel):
    AlertRuleFactory(name="Tokens today", metric=Metric.TOKENS, window=Window.DAY, threshold=Decimal(10_000))
    with time_machine.travel(T0, tick=False):
        spend("1.00", T0, input_tokens=558_378)
        alerts_evaluate()
    [alert] = Alert.objects.all()
    assert alert.title == "Tokens today: 558,378 (today)"  # not 558378
    assert "is 558,378, above 10,000." in alert.message
