"""tracking.selectors.spend_totals / spend_total (the rollups' "how much in this window") answer what
the ledger says for each window, to the nano-unit: whole UTC days from the daily rollups, the ragged
ends from the hourly ones."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest

from core.periods import hour_floor
from tests.analytics.conftest import HOUR, T0, entry, seasonal_entries, write
from tracking.models import CostEntry
from tracking.selectors import spend_total, spend_totals

pytestmark = pytest.mark.django_db


def test_spend_totals_equal_the_ledger_for_every_window(catalog, django_assert_max_num_queries):
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

    ledger = list(
        CostEntry.objects.values_list("occurred_at", "currency", "amount", "provider", "model", "service", "subject")
    )

    def in_ledger(scope: str, currency: str, start, end) -> Decimal:
        kind, _, value = scope.partition(":")
        column = {"provider": 3, "model": 4, "service": 5, "subject": 6}.get(kind)
        return sum(
            (
                row[2]
                for row in ledger
                if row[1] == currency
                and start <= hour_floor(row[0]) < end
                and (scope == "global" or (column is not None and row[column] == value))
            ),
            Decimal("0E-9"),
        )

    with django_assert_max_num_queries(2 * len({(c, lo, hi) for _, c, lo, hi in windows})):
        totals = spend_totals(windows)

    expected = [in_ledger(*window) for window in windows]
    assert totals == expected
    assert [spend_total(scope=s, currency=c, start=lo, end=hi) for s, c, lo, hi in windows[:20]] == expected[:20]
    assert [str(t) for t in totals] == [str(e) for e in expected]  # the same places too (shown as is)
    assert sum(t > 0 for t in totals) > 100
    assert spend_totals([]) == []
