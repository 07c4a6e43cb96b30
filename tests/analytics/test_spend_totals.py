"""tracking.selectors.spend_totals (many windows in one statement) answers what
tracking.selectors.spend_total answers for each window, to the nano-unit."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.analytics.conftest import HOUR, T0, entry, seasonal_entries, write
from tracking.selectors import spend_total, spend_totals

pytestmark = pytest.mark.django_db


def test_spend_totals_equal_spend_total_for_every_window(catalog):
    write(
        seasonal_entries(days=20, seed=3)
        + [
            entry(
                T0 - 7 * HOUR,
                key=f"odd:{i}",
                amount=Decimal("0.000000007"),
                provider="openai",
                model="gpt-4o",
                service="search",
                subject="cust-a",
            )
            for i in range(3)
        ]
    )
    rng = random.Random(11)
    scopes = ["global", "provider:openai", "model:gpt-4o", "subject:cust-c", "service:search", "model:none", "job:x"]
    windows = []
    for _ in range(300):
        start = T0 - timedelta(days=22) + timedelta(minutes=rng.randrange(0, 60 * 24 * 23))
        start = start.replace(minute=0) if rng.random() < 0.7 else start
        end = start + timedelta(hours=rng.choice([0, 1, 5, 24, 30, 24 * 7, 24 * 31]), minutes=rng.choice([0, 0, 13]))
        windows.append((rng.choice(scopes), rng.choice(["USD", "USD", "EUR"]), start, end))

    with CaptureQueriesContext(connection) as queries:
        totals = spend_totals(windows)

    expected = [spend_total(scope=s, currency=c, start=lo, end=hi) for s, c, lo, hi in windows]
    assert totals == expected
    assert [str(t) for t in totals] == [str(e) for e in expected]  # the same places too (shown as is)
    assert any(t > 0 for t in totals) and len(queries.captured_queries) == 2  # 300 windows: 256 + 44
    assert spend_totals([]) == []
