from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from tests.factories import ChannelFactory
from tracking.services import cost_entry_record

_keys = itertools.count()


@pytest.fixture
def spend(gpt4o_prices):
    """Record an explicit cost at a moment (through the real ledger and rollups)."""

    def record(amount: str, at: datetime, **fields: object):
        return cost_entry_record(
            provider="openai",
            model="gpt-4o",
            amount=amount,
            occurred_at=at,
            idempotency_key=f"alert-test-{next(_keys)}",
            **fields,
        ).entry

    return record


@pytest.fixture
def channel():
    """The default channel: a webhook to a closed port (delivery is not what these tests look at)."""
    return ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
