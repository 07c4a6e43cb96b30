from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError

from budgets.levels import budget_level, forecast_label, level_label
from budgets.models import BudgetPeriod
from budgets.selectors import budget_check
from tests.factories import BudgetFactory, status_of

pytestmark = pytest.mark.django_db

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@time_machine.travel(at(15), tick=False)
@pytest.mark.parametrize(
    ("spent", "level"),
    [
        ("49.99", None),
        ("50", "info"),
        ("79.99", "info"),
        ("80", "warning"),
        ("95", "critical"),
        ("100", "exceeded"),
        ("130", "exceeded"),
    ],
)
def test_the_level_is_the_highest_threshold_crossed(spend, spent, level):
    budget = BudgetFactory(amount=Decimal("100"))
    spend(spent, at(2))
    status = status_of(budget)
    assert status.level == level
    assert status.spent == Decimal(spent)
    assert status.remaining == Decimal(100) - Decimal(spent)


@pytest.mark.parametrize(
    ("thresholds", "utilisation", "level"),
    [
        ([80, 100], "80", "warning"),  # the first threshold of two is not "info": 80 % is warning
        ([80, 100], "79.99", None),
        ([50], "60", "info"),
        ([95], "96", "critical"),
        ([120], "125", "exceeded"),
        ([10, 20, 30, 40, 60], "55", "info"),  # five thresholds below 80 %: still info, never exceeded
        ([50, 80, 95, 100], "99.99", "critical"),
        ([50, 80, 95, 100], "100", "exceeded"),
    ],
)
def test_a_thresholds_level_comes_from_its_value_not_its_place_in_the_list(thresholds, utilisation, level):
    assert budget_level(Decimal(utilisation), thresholds) == level


def test_one_function_names_every_level_and_a_forecast_is_never_called_exceeded(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    assert [level_label(level) for level in (None, "info", "warning", "critical", "exceeded")] == [
        "ok",
        "info",
        "warning",
        "critical",
        "exceeded",
    ]
    assert forecast_label(datetime(2026, 12, 27, 23, 30, tzinfo=UTC)) == "forecast to exceed on 28 Dec"
    assert budget_level(None, [50], over=True) == "exceeded"  # spend over a zero limit
    assert budget_level(None, [50], over=False) is None


@time_machine.travel(at(15), tick=False)
def test_a_budget_with_thresholds_80_and_100_is_at_warning_from_80_percent(spend):
    budget = BudgetFactory(amount=Decimal("100"), thresholds=[80, 100])
    spend("79", at(2))
    assert status_of(budget).level is None
    spend("1", at(3))
    status = status_of(budget)
    assert (status.level, status.level_label) == ("warning", "warning")


@time_machine.travel(at(16), tick=False)
def test_status_reads_only_its_scope_and_the_current_period(spend):
    budget = BudgetFactory(scope="service:image-api", amount=Decimal("10"))
    spend("1.25", at(2), service="image-api")
    spend("4.00", at(3), service="chat")
    spend("7.00", datetime(2026, 10, 31, 23, tzinfo=UTC), service="image-api")  # October
    status = status_of(budget)
    assert status.spent == Decimal("1.25")
    assert status.utilisation == Decimal("12.50")
    assert status.period.start == NOV


@time_machine.travel(at(16), tick=False)
def test_an_amount_change_mid_period_takes_effect_at_once(spend):
    budget = BudgetFactory(amount=Decimal("100"))
    spend("60", at(2))
    assert status_of(budget).level == "info"
    budget.amount = Decimal("70")
    budget.save()
    status = status_of(budget)
    assert status.limit == Decimal("70")
    assert status.level == "warning"  # 60 / 70 = 85.7 %
    assert status.period.start == NOV  # same period row, not a new one


@time_machine.travel(at(15), tick=False)
def test_check_lists_the_scope_and_global_budgets_and_denies_only_hard_limits(spend):
    soft = BudgetFactory(scope="provider:openai", amount=Decimal("10"))
    hard = BudgetFactory(scope="global", amount=Decimal("10"), hard_limit=True)
    BudgetFactory(scope="provider:anthropic", amount=Decimal("1"))
    BudgetFactory(scope="provider:openai", amount=Decimal("1"), is_active=False)
    spend("9", at(2))
    results = {s.budget.pk: s for s in budget_check(scope="provider:openai", amount=Decimal("1.5"))}
    assert set(results) == {soft.pk, hard.pk}
    assert results[soft.pk].allowed is True
    assert results[hard.pk].allowed is False
    assert all(s.allowed for s in budget_check(scope="provider:openai", amount=Decimal("1")))


def test_a_berlin_budget_counts_spend_from_berlin_midnight(settings, spend):
    settings.TIME_ZONE = "Europe/Berlin"
    budget = BudgetFactory(amount=Decimal("100"), period="daily")
    berlin = ZoneInfo("Europe/Berlin")
    with time_machine.travel(datetime(2026, 11, 16, 10, tzinfo=berlin), tick=False):
        spend("5", datetime(2026, 11, 15, 22, 30, tzinfo=UTC))  # 23:30 Berlin, the day before
        spend("2", datetime(2026, 11, 15, 23, 30, tzinfo=UTC))  # 00:30 Berlin, today
        status = status_of(budget)
    assert status.period.start == datetime(2026, 11, 15, 23, tzinfo=UTC)
    assert status.spent == Decimal("2")


@time_machine.travel(at(15), tick=False)
def test_check_answers_for_every_period_kind_with_few_statements_whatever_the_number_of_budgets(
    spend, django_assert_max_num_queries
):
    BudgetFactory(scope="global", amount=Decimal("100"), period="daily")
    BudgetFactory(scope="model:gpt-4o", amount=Decimal("50"), hard_limit=True, rollover=True)
    BudgetFactory(scope="model:gpt-4o", amount=Decimal("500"), period="none")
    spend("3.5", at(15, 9))
    spend("20", at(2))
    # The budgets, their spend per period kind among them (3), the periods.
    with django_assert_max_num_queries(5):
        first = budget_check(scope="model:gpt-4o", amount="1")  # no period opened yet: shown as they would open
    assert [s.spent for s in first] == [Decimal("3.5"), Decimal("23.5"), Decimal("23.5")]
    assert all(s.period.pk is None for s in first)
    for _ in range(20):
        BudgetFactory(scope="model:gpt-4o", amount=Decimal("500"), period="weekly")
    with django_assert_max_num_queries(6):  # one more period kind, not 20 more statements
        again = budget_check(scope="model:gpt-4o", amount="1")
    assert len(again) == 23
    assert [(s.budget.pk, s.spent, s.limit, s.level) for s in again[:3]] == [
        (s.budget.pk, s.spent, s.limit, s.level) for s in first
    ]


def test_check_refuses_an_unknown_scope_kind_and_a_negative_amount():
    with pytest.raises(ValidationError) as excinfo:
        budget_check(scope="region:eu", amount="1")
    assert "scope" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        budget_check(scope="global", amount="-1")
    assert "amount" in excinfo.value.message_dict


@time_machine.travel(at(15), tick=False)
def test_each_check_gets_its_own_budget_objects_and_sees_every_saved_change(spend):
    budget = BudgetFactory(scope="model:gpt-4o", amount=Decimal("100"), metadata={"owner": {"team": "ml"}})
    spend("60", at(2))

    first = budget_check(scope="model:gpt-4o")[0]
    first.budget.thresholds.append(1000)  # a caller changing what it got...
    first.budget.metadata["owner"]["team"] = "changed"
    second = budget_check(scope="model:gpt-4o")[0]
    status_of(budget)  # opens nothing either

    assert second.budget is not first.budget  # ...changes nothing the next call sees
    assert second.budget.thresholds == [50, 80, 95, 100]
    assert second.budget.metadata == {"owner": {"team": "ml"}}
    assert second.level == "info"
    assert not BudgetPeriod.objects.exists()  # a check writes nothing
    assert (second.period.start, second.period.end) == (NOV, datetime(2026, 12, 1, tzinfo=UTC))
    assert second.period.budget is second.budget

    budget.thresholds = [10, 20, 30, 100]
    budget.amount = Decimal("60")
    budget.save()
    assert budget_check(scope="model:gpt-4o")[0].level == "exceeded"
