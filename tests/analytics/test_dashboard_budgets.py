"""The dashboard's budgets at risk: periods not opened yet are built and their spend read in bulk,
with the figures budget_status_peek gives one budget at a time."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
import time_machine

from analytics.dashboard import DashboardData, DashboardFilters
from budgets.services import budget_status
from tests.analytics.conftest import T0, seasonal_entries, write
from tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db


def test_unopened_periods_show_what_budget_status_peek_shows(catalog):
    write(seasonal_entries(days=10, seed=5))
    for period, amount, scope in (
        ("daily", "3", "global"),
        ("weekly", "5", "provider:openai"),
        ("monthly", "40", "global"),
        ("monthly", "1", "model:gpt-4o"),
        ("quarterly", "2", "service:support"),
        ("yearly", "1000", "global"),
        ("none", "4", "subject:cust-a"),
    ):
        BudgetFactory(period=period, amount=Decimal(amount), scope=scope)
    opened = BudgetFactory(period="monthly", amount=Decimal("2"), scope="provider:anthropic")
    filters = DashboardFilters(start=(T0 - timedelta(days=29)).date(), end=T0.date())
    with time_machine.travel(T0, tick=False):
        budget_status(budget=opened, at=T0)  # one period opened, the others not
        fast = DashboardData(filters=filters, now=T0).budgets_at_risk.rows
        with patch("analytics.dashboard.budget_positions", autospec=True, return_value=[]):
            one_by_one = DashboardData(filters=filters, now=T0).budgets_at_risk.rows  # every budget peeked

    assert fast == one_by_one
    assert len(fast) >= 5
