from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from analytics.anomalies import baseline, spend_anomalies
from tests.analytics.conftest import HOUR, T0, entry, seasonal_entries, write

pytestmark = pytest.mark.django_db

LAST_DAY = {"start": T0 - timedelta(hours=24), "end": T0}


def spike(hour, *, tag, n, each, provider, model, service, subjects, operation="chat"):
    """n entries of `each` USD in `hour`, spread round-robin over `subjects` (and services)."""
    services = service if isinstance(service, list | tuple) else [service]
    return [
        entry(
            hour,
            key=f"spike:{tag}:{i}",
            amount=Decimal(each),
            provider=provider,
            model=model,
            operation=operation,
            service=services[i % len(services)],
            subject=subjects[i % len(subjects)],
        )
        for i in range(n)
    ]


RUNAWAY_HOUR = T0 - 20 * HOUR  # Tuesday 16:00 UTC
MODEL_HOUR = T0 - 10 * HOUR  # Wednesday 02:00 UTC (night)
SUBJECT_HOUR = T0 - 5 * HOUR  # Wednesday 07:00 UTC

INJECTED = [
    # A new subject (no history) runs a script on gpt-4o-mini: 20 x 0.20 USD.
    spike(
        RUNAWAY_HOUR,
        tag="runaway",
        n=20,
        each="0.20",
        provider="openai",
        model="gpt-4o-mini",
        service="lead-gen",
        subjects=["runaway-bot"],
    ),
    # gpt-4o is used for everything for an hour: 3 USD over every subject and two services.
    spike(
        MODEL_HOUR,
        tag="model",
        n=12,
        each="0.25",
        provider="openai",
        model="gpt-4o",
        service=["lead-gen", "support"],
        subjects=["cust-a", "cust-b", "cust-c"],
    ),
    # The smallest existing customer hammers the support bot: 3 USD on claude-haiku-4-5.
    spike(
        SUBJECT_HOUR,
        tag="subject",
        n=10,
        each="0.30",
        provider="anthropic",
        model="claude-haiku-4-5",
        service="support",
        subjects=["cust-c"],
    ),
]

EXPECTED_ROOT_CAUSES = {
    (RUNAWAY_HOUR, "global"): "subject:runaway-bot",
    (RUNAWAY_HOUR, "provider:openai"): "subject:runaway-bot",
    (RUNAWAY_HOUR, "model:gpt-4o-mini"): "subject:runaway-bot",
    (RUNAWAY_HOUR, "service:lead-gen"): "subject:runaway-bot",
    (MODEL_HOUR, "global"): "model:gpt-4o",
    (MODEL_HOUR, "provider:openai"): "model:gpt-4o",
    (SUBJECT_HOUR, "global"): "subject:cust-c",
    (SUBJECT_HOUR, "provider:anthropic"): "subject:cust-c",
    (SUBJECT_HOUR, "model:claude-haiku-4-5"): "subject:cust-c",
    (SUBJECT_HOUR, "service:support"): "subject:cust-c",
    (SUBJECT_HOUR, "subject:cust-c"): "model:claude-haiku-4-5",
}


def test_no_anomaly_is_reported_on_clean_seasonal_data(catalog):
    write(seasonal_entries())

    assert spend_anomalies(**LAST_DAY) == []
    # A whole week of hours (168 per scope, 16 scopes) is clean too.
    assert spend_anomalies(start=T0 - timedelta(days=7), end=T0) == []


def test_every_injected_anomaly_is_found_with_its_root_cause(catalog):
    write(seasonal_entries(last_hours=24) + [e for group in INJECTED for e in group])

    found = {(a.start, a.scope): a for a in spend_anomalies(**LAST_DAY)}

    for key, cause in EXPECTED_ROOT_CAUSES.items():
        assert key in found, f"{key} not reported; found {sorted(found)}"
        assert found[key].root_cause is not None and found[key].root_cause.scope == cause, found[key].describe()
    # Nothing is reported outside the injected hours.
    assert {start for start, _ in found} == {RUNAWAY_HOUR, MODEL_HOUR, SUBJECT_HOUR}


def test_an_anomaly_states_expected_actual_excess_and_severity(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[2])

    anomaly = next(a for a in spend_anomalies(**LAST_DAY) if a.scope == "model:claude-haiku-4-5")

    # Baseline: claude-haiku-4-5 spends 0.40 USD an office hour, 30 % of that at 07:00 (+/- 10 %).
    assert Decimal("0.108") <= anomaly.expected <= Decimal("0.132")
    assert anomaly.actual - anomaly.expected == anomaly.excess
    assert Decimal("2.9") <= anomaly.excess <= Decimal("3.1")
    assert anomaly.severity == "critical"
    assert (anomaly.start, anomaly.end) == (SUBJECT_HOUR, SUBJECT_HOUR + HOUR)
    rc = anomaly.root_cause
    assert rc.scope == "subject:cust-c" and rc.share >= Decimal("0.95")
    assert "root cause subject:cust-c" in anomaly.describe()


def test_a_spike_in_one_model_is_not_hidden_by_a_drop_in_another(catalog):
    hour = T0 - 2 * HOUR  # Wednesday 10:00: gpt-4o +0.60 USD while claude-haiku-4-5 (-0.40) is silent
    entries = seasonal_entries(last_hours=24, skip={("claude-haiku-4-5", hour)})
    entries += spike(
        hour, tag="swap", n=3, each="0.20", provider="openai", model="gpt-4o", service="lead-gen", subjects=["cust-a"]
    )
    write(entries)

    found = {a.scope for a in spend_anomalies(**LAST_DAY)}

    assert "model:gpt-4o" in found
    assert "global" not in found  # the total moved by +0.20 only: not an anomaly of its own


def test_a_scope_with_too_little_history_is_not_flagged_itself(catalog):
    write(seasonal_entries(days=15, last_hours=24) + INJECTED[2])  # two weeks: two same-hour samples, three needed

    assert spend_anomalies(**LAST_DAY) == []


def test_consecutive_anomalous_hours_make_one_anomaly(catalog):
    two_hours = INJECTED[2] + [
        entry(
            SUBJECT_HOUR + HOUR,
            key=f"more:{i}",
            amount=Decimal("0.30"),
            provider="anthropic",
            model="claude-haiku-4-5",
            service="support",
            subject="cust-c",
        )
        for i in range(10)
    ]
    write(seasonal_entries(last_hours=24) + two_hours)

    anomaly = next(a for a in spend_anomalies(**LAST_DAY) if a.scope == "subject:cust-c")

    assert (anomaly.start, anomaly.end) == (SUBJECT_HOUR, SUBJECT_HOUR + 2 * HOUR)
    assert Decimal("5.9") <= anomaly.excess <= Decimal("6.1")


def test_the_baseline_is_the_median_with_a_mad_spread_that_ignores_an_outlier():
    b = baseline([Decimal("1.0"), Decimal("1.1"), Decimal("0.9"), Decimal("50")])

    assert b.expected == Decimal("1.05")
    # MAD = median(|x - 1.05|) = 0.1; 1.4826 x 0.1 = 0.148, above the 10 % floor.
    assert b.spread == Decimal("0.14826")
