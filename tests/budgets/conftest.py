from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

import pytest

from tracking.services import cost_entry_record

_keys = itertools.count()


@pytest.fixture
def spend(gpt4o_prices):
    """Record an explicit cost at a moment (through the real ledger + rollup path)."""

    def record(amount: str | Decimal, at: datetime, **fields: object):
        return cost_entry_record(
            provider="openai",
            model="gpt-4o",
            amount=str(amount),
            occurred_at=at,
            idempotency_key=f"budget-test-{next(_keys)}",
            **fields,
        ).entry

    return record
