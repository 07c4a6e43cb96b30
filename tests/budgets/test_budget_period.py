from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from budgets.models import BudgetPeriod
from budgets.services import budget_period_close, budget_period_current, budget_periods_advance
from tests.factories import BudgetFactory, status_of

pytestmark = pytest.mark.django_db

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def in_october(day: int = 10) -> datetime:
    return datetime(2026, 10, day, 12, tzinfo=UTC)


def in_november(day: int = 10) -> datetime:
    return datetime(2026, 11, day, 12, tzinfo=UTC)


def october_with(spend, budget, amount: str) -> None:
    with time_machine.travel(in_october(), tick=False):
        budget_period_current(budget=budget)
        spend(amount, in_october(5))


def test_rollover_carries_the_unspent_amount_into_the_next_period(spend):
    budget = BudgetFactory(amount=Decimal("100"), rollover=True)
    october_with(spend, budget, "30")
    with time_machine.travel(in_november(), tick=False):
        before_the_beat = status_of(budget)  # October still open: shown as closing it would carry
        budget_periods_advance()
        status = status_of(budget)
    october = BudgetPeriod.objects.get(budget=budget, start=OCT)
    assert october.closed_at is not None and october.spent_at_close == Decimal("30")
    assert status.period.carried_over == before_the_beat.period.carried_over == Decimal("70")
    assert status.limit == before_the_beat.limit == Decimal("170")
    assert status.period.pk is not None and before_the_beat.period.pk is None


def test_rollover_is_capped(spend):
    budget = BudgetFactory(amount=Decimal("100"), rollover=True, rollover_cap=Decimal("25"))
    october_with(spend, budget, "30")
    with time_machine.travel(in_november(), tick=False):
        status = status_of(budget)
    assert status.period.carried_over == Decimal("25")
    assert status.limit == Decimal("125")


def test_without_rollover_nothing_is_carried_and_an_overspent_period_never_carries_debt(spend):
    plain = BudgetFactory(amount=Decimal("100"))
    october_with(spend, plain, "30")
    overspent = BudgetFactory(amount=Decimal("20"), rollover=True)
    with time_machine.travel(in_november(), tick=False):
        assert status_of(plain).limit == Decimal("100")
        assert status_of(overspent).limit == Decimal("20")  # spent 30 of 20: carries 0, not -10


def test_a_closed_period_keeps_its_old_limit_when_the_amount_changes(spend):
    budget = BudgetFactory(amount=Decimal("100"))
    october_with(spend, budget, "96")
    with time_machine.travel(in_november(), tick=False):
        budget_periods_advance()
    budget.amount = Decimal("500")
    budget.save()
    october = BudgetPeriod.objects.get(budget=budget, start=OCT)
    assert (october.limit, october.spent_at_close, october.peak_level) == (Decimal("100"), Decimal("96"), "critical")
    with time_machine.travel(in_november(), tick=False):
        assert status_of(budget).limit == Decimal("500")


def test_the_period_row_is_opened_once_per_budget_and_start(spend):
    budget = BudgetFactory()
    with time_machine.travel(in_november(3), tick=False):
        first = budget_period_current(budget=budget)
    with time_machine.travel(in_november(20), tick=False):
        again = budget_period_current(budget=budget)
        budget_periods_advance()
    assert first.pk == again.pk
    assert BudgetPeriod.objects.filter(budget=budget).count() == 1
    assert (first.start, first.end) == (NOV, DEC)


def test_closing_twice_changes_nothing_the_second_time(spend):
    budget = BudgetFactory(amount=Decimal("100"))
    october_with(spend, budget, "10")
    october = BudgetPeriod.objects.get(budget=budget, start=OCT)
    with time_machine.travel(in_november(), tick=False):
        budget_period_close(period=october)
        spend("5", in_october(20))  # a late event after the close
        again = budget_period_close(period=october)
    assert again.spent_at_close == Decimal("10")


def test_a_missed_beat_never_blocks_the_reset(spend):
    budget = BudgetFactory(amount=Decimal("100"))
    october_with(spend, budget, "90")
    with time_machine.travel(in_november(2), tick=False):
        spend("1", in_november(1))
        status = status_of(budget)  # first use in November, no beat ran
    assert status.period.start == NOV
    assert status.spent == Decimal("1")
    assert status.level is None


def test_changing_the_period_kind_closes_the_open_period_early(spend):
    budget = BudgetFactory(amount=Decimal("100"))
    with time_machine.travel(in_november(3), tick=False):
        spend("7", in_november(2))
        monthly = budget_period_current(budget=budget)
    budget.period = "weekly"
    budget.save()
    with time_machine.travel(in_november(18), tick=False):  # a Wednesday
        budget_periods_advance()
        weekly = status_of(budget)
    monthly.refresh_from_db()
    assert weekly.period.start == datetime(2026, 11, 16, tzinfo=UTC)
    assert monthly.closed_at is not None and monthly.spent_at_close == Decimal("7")


def test_a_lifetime_budget_counts_everything_and_has_no_forecast(spend):
    budget = BudgetFactory(amount=Decimal("100"), period="none")
    with time_machine.travel(in_november(), tick=False):
        spend("3", in_october(2))
        spend("4", in_november(2))
        status = status_of(budget)
    assert status.spent == Decimal("7")
    assert (status.period.end, status.forecast, status.days_left) == (None, None, None)
