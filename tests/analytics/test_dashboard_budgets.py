"""budgets.selectors.budget_statuses_peek (the dashboard's budgets at risk, the daily report):
periods, spend, reservations and forecasts of many budgets read in bulk, with the figures
budget_status_peek gives one budget at a time."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.dashboard import DashboardData, DashboardFilters
from budgets.models import BudgetPeriod
from budgets.selectors import budget_status_peek, budget_statuses_peek
from budgets.services import budget_reserve, budget_status
from core.periods import period_bounds
from tests.analytics.conftest import T0, seasonal_entries, write
from tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db

# One budget of every period kind (amount, scope).
EVERY_PERIOD = (
    ("daily", "3", "global"),
    ("weekly", "5", "provider:openai"),
    ("monthly", "40", "global"),
    ("monthly", "1", "model:gpt-4o"),
    ("quarterly", "2", "service:support"),
    ("yearly", "1000", "global"),
    ("none", "4", "subject:cust-a"),
)


def test_unopened_periods_show_what_budget_status_peek_shows(catalog):
    write(seasonal_entries(days=10, seed=5))
    for period, amount, scope in EVERY_PERIOD:
        BudgetFactory(period=period, amount=Decimal(amount), scope=scope)
    opened = BudgetFactory(period="monthly", amount=Decimal("2"), scope="provider:anthropic")
    filters = DashboardFilters(start=(T0 - timedelta(days=29)).date(), end=T0.date())
    with time_machine.travel(T0, tick=False):
        budget_status(budget=opened, at=T0)  # one period opened, the others not
        fast = DashboardData(filters=filters, now=T0).budgets_at_risk.rows
        with patch("budgets.selectors.budget_positions", autospec=True, return_value=[]):
            one_by_one = DashboardData(filters=filters, now=T0).budgets_at_risk.rows  # every budget peeked

    assert fast == one_by_one
    assert len(fast) >= 5


def _figures(status):
    return (
        status.budget.pk,
        status.period.start,
        status.period.end,
        status.spent,
        status.limit,
        status.remaining,
        status.utilisation,
        status.level,
        status.reserved,
        status.days_left,
        status.forecast,
        status.projected_exceed_at,
        status.forecast_method,
    )


def _budgets_of_every_kind(at):
    made = [BudgetFactory(period=period, amount=Decimal(amount), scope=scope) for period, amount, scope in EVERY_PERIOD]
    # Rollover from a closed previous month: the unopened period carries its unspent amount.
    rolled = BudgetFactory(period="monthly", amount=Decimal("30"), scope="service:lead-gen", rollover=True)
    start, _ = period_bounds("monthly", at)
    previous, _ = period_bounds("monthly", start - timedelta(hours=1))
    BudgetPeriod.objects.create(
        budget=rolled,
        start=previous,
        end=start,
        limit=Decimal("30"),
        spent_at_close=Decimal("12.5"),
        closed_at=start,
    )
    made.append(rolled)
    return made


def test_budget_statuses_peek_gives_budget_status_peeks_figures_at_any_moment(catalog):
    write(seasonal_entries(days=12, seed=9))
    budgets = _budgets_of_every_kind(T0)
    hard = BudgetFactory(period="monthly", amount=Decimal("500"), scope="provider:anthropic", hard_limit=True)
    with time_machine.travel(T0 - timedelta(minutes=5), tick=False):
        # Opens its period and holds 7.25 until T0 + 55 min.
        budget_reserve(scopes=["provider:anthropic"], amount="7.25", ttl=timedelta(hours=1))
    inactive = BudgetFactory(period="weekly", amount=Decimal("9"), scope="global", is_active=False)
    everyone = [*budgets, hard, inactive]

    for at in (T0, T0 - timedelta(minutes=1), T0 - timedelta(days=3, minutes=17), T0 + timedelta(days=20)):
        bulk = budget_statuses_peek(budgets=everyone, at=at)
        one_by_one = [budget_status_peek(budget=b, at=at) for b in everyone]
        assert [_figures(s) for s in bulk] == [_figures(s) for s in one_by_one], at
    held = budget_statuses_peek(budgets=[hard], at=T0)[0]
    assert held.reserved == Decimal("7.25") and held.spent > 0
    rolled = next(s for s in budget_statuses_peek(budgets=budgets, at=T0) if s.budget.rollover)
    assert rolled.limit == Decimal("47.5")  # 30 + the 17.5 left last month
    assert budget_statuses_peek(budgets=[], at=T0) == []


def test_budget_statuses_peek_reads_as_many_statements_for_twenty_budgets_as_for_two(catalog):
    # (On SQLite a forecast's history check is one statement per scope, so both sets share their scopes.)
    write(seasonal_entries(days=9, seed=2))
    few = [BudgetFactory(period="monthly", scope="global"), BudgetFactory(period="weekly", scope="provider:openai")]
    with CaptureQueriesContext(connection) as queries:
        budget_statuses_peek(budgets=few, at=T0)
    many = few + [
        BudgetFactory(period=p, scope=s)
        for p in ("monthly", "daily", "weekly", "quarterly", "yearly")
        for s in ("global", "provider:openai")
        for _ in range(2)
    ]
    with CaptureQueriesContext(connection) as more_queries:
        statuses = budget_statuses_peek(budgets=many, at=T0)
    assert len(statuses) == 22 and all(s.forecast is not None for s in statuses)
    assert len(more_queries.captured_queries) == len(queries.captured_queries) <= 6
