from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from analytics.anomalies import MIN_EXCESS, baseline, spend_anomalies
from analytics.selectors import anomaly_summaries, anomaly_summary
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


def test_a_scope_never_seen_before_is_not_flagged_itself_but_explains_its_parents(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[0])  # runaway-bot: no history at all

    found = {a.scope: a for a in spend_anomalies(**LAST_DAY)}

    assert "subject:runaway-bot" not in found
    assert spend_anomalies(**LAST_DAY, scopes=["subject:runaway-bot"]) == []  # not even when asked for
    parent = found["model:gpt-4o-mini"]
    assert (parent.start, parent.end) == (RUNAWAY_HOUR, RUNAWAY_HOUR + HOUR)
    cause = parent.root_cause
    assert cause.scope == "subject:runaway-bot"
    assert cause.expected == 0 and cause.actual == Decimal("4.00") and cause.share >= Decimal("0.95")


def test_a_drop_is_not_reported(catalog):
    entries = seasonal_entries(last_hours=24)
    for e in entries:
        if e.model == "gpt-4o" and e.occurred_at >= LAST_DAY["start"]:
            e.amount = (e.amount / 10).quantize(Decimal("1E-9"))  # a tenth of its usual spend for a day
    write(entries)

    assert spend_anomalies(**LAST_DAY) == []


def test_a_spike_under_the_minimum_excess_is_not_reported(catalog):
    night = T0 - 9 * HOUR  # Wednesday 03:00: cust-c usually spends about 0.04 USD then
    small = spike(
        night,
        tag="small",
        n=4,
        each="0.10",
        provider="anthropic",
        model="claude-haiku-4-5",
        service="support",
        subjects=["cust-c"],
    )
    write(seasonal_entries(last_hours=24) + small)

    assert spend_anomalies(**LAST_DAY) == []  # +0.40 USD: scored high, but under MIN_EXCESS (0.50)
    found = {a.scope: a for a in spend_anomalies(**LAST_DAY, min_excess=Decimal("0.30"))}
    assert found["subject:cust-c"].start == night
    assert found["subject:cust-c"].score >= 5
    assert found["subject:cust-c"].excess < MIN_EXCESS


def test_anomaly_summaries_answer_each_question_as_anomaly_summary_does(catalog):
    write(seasonal_entries(last_hours=30) + [e for group in INJECTED for e in group])
    day, six = (T0 - 24 * HOUR, T0), (T0 - 6 * HOUR, T0)
    questions = [
        ("global", *day),
        ("provider:openai", *day),
        ("subject:cust-c", *day),
        ("model:claude-haiku-4-5", *six),
        ("service:search", *day),  # nothing happened there
        ("global", *day),  # asked twice: answered once
    ]

    summaries = anomaly_summaries(questions)

    assert list(summaries) == list(dict.fromkeys(questions))
    for (scope, start, end), summary in summaries.items():
        alone = anomaly_summary(scope=scope, start=start, end=end)
        assert summary.score == alone.score
        assert [a.as_dict() for a in summary.anomalies] == [a.as_dict() for a in alone.anomalies]
    assert summaries[("global", *day)].worst.scope == "model:gpt-4o-mini"  # the runaway script, the worst spike
    assert summaries[("model:claude-haiku-4-5", *six)].score >= 15
    assert summaries[("service:search", *day)].score == 0 and summaries[("service:search", *day)].worst is None


def test_a_day_of_anomalies_is_read_in_a_few_statements_however_many_are_found(catalog, django_assert_max_num_queries):
    write(seasonal_entries(last_hours=24) + [e for group in INJECTED for e in group])

    with django_assert_max_num_queries(9):
        found = spend_anomalies(**LAST_DAY)

    assert len(found) >= len(EXPECTED_ROOT_CAUSES)
