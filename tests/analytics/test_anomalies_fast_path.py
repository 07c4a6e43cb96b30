"""The anomaly detector's fast path (integer nano-unit baselines, history read only where a spike
is possible, reads shared between questions) finds exactly what the reference implementation
(tests/analytics/reference_anomalies.py, the Decimal one it replaced) finds: every figure, every
root cause and contributor, in the same order. Run on SQLite and, under bin/with-postgres, on
PostgreSQL (whose rows are read through prepared statements)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.anomalies import AnomalyReads, _int_baseline, _spread_factors, baseline, spend_anomalies
from analytics.selectors import anomaly_summaries, anomaly_summary
from core.money import from_nanos
from tests.analytics import reference_anomalies as reference
from tests.analytics.conftest import HOUR, T0, entry, seasonal_entries, write
from tests.analytics.test_anomalies import INJECTED

pytestmark = pytest.mark.django_db

SCOPES = (
    None,
    ["global"],
    ["provider:openai"],
    ["provider:anthropic"],
    ["model:gpt-4o"],
    ["model:claude-haiku-4-5"],
    ["service:support"],
    ["subject:cust-c"],
    ["subject:runaway-bot"],
    ["operation:chat"],
)
SETTINGS = (
    {},
    {"threshold": Decimal(2), "min_excess": Decimal(0)},
    {"threshold": Decimal("1.5"), "min_excess": Decimal("0.01")},
    {"threshold": Decimal(0), "min_excess": Decimal(0)},
    {"threshold": Decimal("-1"), "min_excess": Decimal("-100")},
    {"weeks": 3},
)


def noisy_extras(seed: int) -> list:
    """Odd amounts (to the nano-unit) at random hours: medians of an even count fall on half a
    nano-unit, equal samples tie, some hours spike and some subjects are new."""
    rng = random.Random(seed)
    found = []
    for i in range(400):
        hour = T0 - HOUR * rng.randrange(1, 24 * 28)
        found.append(
            entry(
                hour,
                key=f"extra:{seed}:{i}",
                amount=Decimal(rng.choice([1, 3, 7, 1_000_001, 123_456_789, 2_500_000_001])).scaleb(-9),
                provider=rng.choice(["openai", "anthropic"]),
                model=rng.choice(["gpt-4o", "gpt-4o-mini", "claude-haiku-4-5", "o1-new"]),
                service=rng.choice(["lead-gen", "support", "search"]),
                subject=rng.choice(["cust-a", "cust-b", "cust-c", f"new-{i % 7}"]),
                operation=rng.choice(["chat", "embedding"]),
            )
        )
    return found


def same(found: list, expected: list) -> bool:
    """Equal field by field, Decimal strings included (as_dict writes every figure as str)."""
    return [a.as_dict() for a in found] == [a.as_dict() for a in expected]


@pytest.mark.parametrize("seed", [1, 2])
def test_the_fast_path_finds_exactly_what_the_reference_finds(catalog, seed):
    write(seasonal_entries(last_hours=30, seed=seed) + [e for group in INJECTED for e in group] + noisy_extras(seed))
    reads = AnomalyReads()
    compared = 0
    for start, end in ((T0 - 24 * HOUR, T0), (T0 - 6 * HOUR, T0 - 2 * HOUR), (T0 - 30 * HOUR, T0 - 5 * HOUR)):
        for scopes in SCOPES:
            for settings in SETTINGS:
                question = {"start": start, "end": end, "scopes": scopes, **settings}
                expected = reference.spend_anomalies(**question)
                assert same(spend_anomalies(**question), expected), question
                assert same(spend_anomalies(**question, reads=reads), expected), question
                compared += len(expected)
    assert compared > 200  # the comparison covered plenty of anomalies, root causes and contributors


def test_a_spike_of_a_few_cents_in_a_quiet_scope_is_found_as_before(catalog):
    # A scope that usually spends nothing at 03:00 and now spends a few cents: under the absolute
    # floor, not an anomaly, in both.
    write(
        seasonal_entries(last_hours=24)
        + [
            entry(
                T0 - 9 * HOUR,
                key=f"cents:{i}",
                amount=Decimal("0.04"),
                provider="openai",
                model="gpt-4o",
                service="search",
                subject="quiet",
            )
            for i in range(6)
        ]
    )
    for threshold in (Decimal(5), Decimal(1), Decimal("0.5")):
        question = {"start": T0 - 24 * HOUR, "end": T0, "threshold": threshold, "min_excess": Decimal(0)}
        assert same(spend_anomalies(**question), reference.spend_anomalies(**question))


def test_anomaly_summaries_answer_each_question_as_anomaly_summary_does_with_fewer_reads(catalog):
    write(seasonal_entries(last_hours=30) + [e for group in INJECTED for e in group])
    day, six = (T0 - 24 * HOUR, T0), (T0 - 6 * HOUR, T0)
    questions = [
        ("global", *day),
        ("provider:openai", *day),
        ("subject:cust-c", *day),
        ("model:claude-haiku-4-5", *day),
        ("service:support", *six),
        ("global", *day),  # asked twice: answered once
    ]

    with CaptureQueriesContext(connection) as together:
        summaries = anomaly_summaries(questions)
    with CaptureQueriesContext(connection) as apart:
        one_by_one = {q: anomaly_summary(scope=q[0], start=q[1], end=q[2]) for q in questions}

    assert list(summaries) == list(dict.fromkeys(questions))
    for question, summary in one_by_one.items():
        assert summaries[question].score == summary.score
        assert same(summaries[question].anomalies, summary.anomalies)
    assert summaries[("global", *day)].score > 0
    assert len(together.captured_queries) < len(apart.captured_queries)


def test_the_integer_baseline_is_exactly_the_decimal_one():
    rng = random.Random(7)
    factors = _spread_factors()
    denominator = factors[0]
    for _ in range(3000):
        n = rng.randrange(0, 10)
        pool = [0, 1, 2, 3, 5, 10**9, 50_000_000, rng.randrange(-(10**12), 10**12)]
        values = [rng.choice(pool) if rng.random() < 0.5 else rng.randrange(-(10**10), 10**13) for _ in range(n)]
        expected = baseline([from_nanos(v) for v in values])

        median4, spread, samples = _int_baseline(values, factors)

        assert samples == expected.samples
        assert Decimal(median4).scaleb(-9) / 4 == expected.expected, values
        assert Decimal(spread).scaleb(-9) / 4 / denominator == expected.spread, values
