from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from alerts.evaluation import rule_evaluate
from alerts.models import Alert, AlertRule, AlertState, Metric, Window
from tests.analytics.conftest import T0, seasonal_entries, write
from tests.analytics.test_anomalies import INJECTED, SUBJECT_HOUR
from tests.factories import AlertRuleFactory

pytestmark = pytest.mark.django_db


def anomaly_rule(**fields) -> AlertRule:
    values = {
        "name": "spend anomaly",
        "metric": Metric.ANOMALY,
        "scope": "global",
        "window": Window.LAST_DAY,
        "threshold": Decimal(8),
        **fields,
    }
    return AlertRuleFactory(**values)


def test_an_anomaly_fires_the_rule_with_its_root_cause_in_the_message(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[2])
    rule = anomaly_rule()

    assert rule_evaluate(rule, now=T0) == "firing"

    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.FIRING
    assert alert.value >= 8
    # The worst anomaly is the customer's own (the highest score), explained by the model it called.
    assert "Worst: subject:cust-c" in alert.message
    assert "root cause model:claude-haiku-4-5" in alert.message
    assert f"{SUBJECT_HOUR:%Y-%m-%d %H:%M}" in alert.message


def test_a_rule_on_one_scope_watches_only_that_scope(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[2])  # an anthropic spike

    assert rule_evaluate(anomaly_rule(name="openai", scope="provider:openai"), now=T0) == "ok"
    assert rule_evaluate(anomaly_rule(name="anthropic", scope="provider:anthropic"), now=T0) == "firing"


def test_clean_data_keeps_the_rule_quiet_and_resolves_a_firing_alert(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[2])
    rule = anomaly_rule()
    assert rule_evaluate(rule, now=T0) == "firing"

    # A day later the spike has left the 24-hour window.
    later = T0.replace(day=T0.day + 1)
    assert rule_evaluate(rule, now=later) == "ok"
    assert Alert.objects.get(rule=rule).state == AlertState.RESOLVED
    rule.refresh_from_db()
    assert rule.last_value == 0


def test_an_anomaly_rule_needs_an_hourly_window():
    rule = AlertRule(name="x", metric=Metric.ANOMALY, scope="global", window=Window.MONTH, threshold=Decimal(5))

    with pytest.raises(ValidationError) as error:
        rule.full_clean()

    assert "window" in error.value.message_dict
