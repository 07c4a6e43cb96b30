from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError

from budgets.models import BudgetPeriod
from budgets.selectors import _hour_of_day_profile, budget_forecasts_prefetch, forecast_thresholds_crossed
from budgets.services import budget_check, budget_status
from core.money import from_nanos, to_nanos
from tests.factories import BudgetFactory

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
    status = budget_status(budget=budget)
    assert status.level == level
    assert status.spent == Decimal(spent)
    assert status.remaining == Decimal(100) - Decimal(spent)


@time_machine.travel(at(15), tick=False)
def test_custom_thresholds_map_by_position_and_extra_ones_mean_exceeded(spend):
    budget = BudgetFactory(amount=Decimal("100"), thresholds=[10, 20, 30, 40, 60])
    spend("25", at(2))
    assert budget_status(budget=budget).level == "warning"
    spend("30", at(3))
    assert budget_status(budget=budget).level == "exceeded"  # 55 % is past the 4th threshold (40)


@time_machine.travel(at(16), tick=False)
def test_status_reads_only_its_scope_and_the_current_period(spend):
    budget = BudgetFactory(scope="service:image-api", amount=Decimal("10"))
    spend("1.25", at(2), service="image-api")
    spend("4.00", at(3), service="chat")
    spend("7.00", datetime(2026, 10, 31, 23, tzinfo=UTC), service="image-api")  # October
    status = budget_status(budget=budget)
    assert status.spent == Decimal("1.25")
    assert status.utilisation == Decimal("12.50")
    assert status.period.start == NOV


@time_machine.travel(at(16), tick=False)
def test_an_amount_change_mid_period_takes_effect_at_once(spend):
    budget = BudgetFactory(amount=Decimal("100"))
    spend("60", at(2))
    assert budget_status(budget=budget).level == "info"
    budget.amount = Decimal("70")
    budget.save()
    status = budget_status(budget=budget)
    assert status.limit == Decimal("70")
    assert status.level == "warning"  # 60 / 70 = 85.7 %
    assert status.period.start == NOV  # same period row, not a new one


def test_forecast_is_the_linear_run_rate_while_there_is_less_than_a_week_of_history(spend):
    budget = BudgetFactory(amount=Decimal("300"))  # November has 30 days
    with time_machine.travel(at(1, 0), tick=False):
        spend("100", at(1, 0))
    with time_machine.travel(at(6, 0), tick=False):
        status = budget_status(budget=budget)
    # 100 in 5 days: 600 by the end; 300 is crossed after 15 days, on the 16th at 00:00.
    assert status.forecast_method == "linear"
    assert status.forecast == Decimal("600")
    assert status.projected_exceed_at == at(16, 0)
    assert status.days_left == 25
    with time_machine.travel(at(3, 0), tick=False):
        spend("0", at(3, 0))  # nothing more
    with time_machine.travel(at(7, 0), tick=False):
        status = budget_status(budget=budget)
    # 100 in 6 days -> 500; the limit is crossed on day 18.
    assert (status.forecast, status.projected_exceed_at) == (Decimal("500"), at(19, 0))


def test_forecast_follows_the_hour_of_day_once_a_week_of_history_exists(settings, spend):
    """Spend only in office hours (09-17 Berlin): the forecast adds office hours, not nights."""
    settings.TIME_ZONE = "Europe/Berlin"
    berlin = ZoneInfo("Europe/Berlin")
    budget = BudgetFactory(amount=Decimal("200"))
    with time_machine.travel(datetime(2026, 11, 21, 9, tzinfo=berlin), tick=False):
        for day in range(1, 21):
            for hour in range(9, 17):
                spend("1", datetime(2026, 11, day, hour, 30, tzinfo=berlin))
        status = budget_status(budget=budget)
    assert status.spent == Decimal("160")
    assert status.forecast_method == "hour-of-day"
    # 10 days left (the 21st to the 30th) of 8 paid hours each; linear would say 235.58.
    assert status.forecast == Decimal("240")
    # 40 more hours reach 200: the 5th office day, the 25th, at 17:00 Berlin (linear: the 26th, 00:00).
    assert status.projected_exceed_at == datetime(2026, 11, 25, 17, tzinfo=berlin)
    assert status.forecast_result.amount == status.forecast


def test_a_quiet_last_week_forecasts_no_more_spend(spend):
    budget = BudgetFactory(amount=Decimal("300"))
    with time_machine.travel(at(1, 0), tick=False):
        spend("100", at(1, 0))
    with time_machine.travel(at(11, 0), tick=False):
        status = budget_status(budget=budget)
    assert (status.forecast_method, status.forecast, status.projected_exceed_at) == ("hour-of-day", 100, None)


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
        status = budget_status(budget=budget)
    assert status.period.start == datetime(2026, 11, 15, 23, tzinfo=UTC)
    assert status.spent == Decimal("2")


def test_forecast_alerts_report_the_thresholds_the_period_end_forecast_reaches(spend):
    quiet = BudgetFactory(amount=Decimal("300"))
    loud = BudgetFactory(amount=Decimal("300"), forecast_alerts=True)
    with time_machine.travel(at(5, 0), tick=False):
        spend("90", at(5, 0))
    with time_machine.travel(at(11, 0), tick=False):
        # 90 in 10 of 30 days (less than a week of history: linear): 270 at the end, 90 % of the limit.
        assert forecast_thresholds_crossed(budget_status(budget=loud)) == [50, 80]
        assert forecast_thresholds_crossed(budget_status(budget=quiet)) == []
        assert budget_status(budget=loud).level is None  # today's spend is only 30 %


@time_machine.travel(at(15), tick=False)
def test_check_reads_every_budget_in_one_statement_once_its_periods_are_open(spend, django_assert_num_queries):
    BudgetFactory(scope="global", amount=Decimal("100"), period="daily")
    BudgetFactory(scope="model:gpt-4o", amount=Decimal("50"), hard_limit=True, rollover=True)
    BudgetFactory(scope="model:gpt-4o", amount=Decimal("500"), period="none")
    spend("3.5", at(15, 9))
    spend("20", at(2))
    first = budget_check(scope="model:gpt-4o", amount="1")  # opens the three periods
    with django_assert_num_queries(1):
        again = budget_check(scope="model:gpt-4o", amount="1")
    assert [(s.budget.pk, s.spent, s.limit, s.reserved, s.level) for s in again] == [
        (s.budget.pk, s.spent, s.limit, s.reserved, s.level) for s in first
    ]
    assert [s.spent for s in again] == [Decimal("3.5"), Decimal("23.5"), Decimal("23.5")]
    for status in again:
        slow = budget_status(budget=status.budget)  # the ORM path, query by query
        assert (status.period.pk, status.spent, status.limit, status.reserved) == (
            slow.period.pk,
            slow.spent,
            slow.limit,
            slow.reserved,
        )


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

    assert second.budget is not first.budget  # ...changes nothing the next call sees
    assert second.budget.thresholds == [50, 80, 95, 100]
    assert second.budget.metadata == {"owner": {"team": "ml"}}
    assert second.level == "info"
    stored = BudgetPeriod.objects.get(pk=second.period.pk)
    assert (
        (second.period.start, second.period.end)
        == (stored.start, stored.end)
        == (NOV, datetime(2026, 12, 1, tzinfo=UTC))
    )
    assert second.period.budget is second.budget

    budget.thresholds = [10, 20, 30, 60]
    budget.save()
    assert budget_check(scope="model:gpt-4o")[0].level == "exceeded"


def _hourly_forecast_reference(status, profile, tz):
    """The forecast stepped hour by hour, as first written (budget_forecast skips whole days)."""
    hour = timedelta(hours=1)
    micro = timedelta(microseconds=1)
    projected, limit, crossing, cursor = to_nanos(status.spent), to_nanos(status.limit), None, status.at
    while cursor < status.period.end:
        step_end = min(cursor.replace(minute=0, second=0, microsecond=0) + hour, status.period.end)
        rate = profile[cursor.astimezone(tz).hour]
        added = rate * ((step_end - cursor) // micro) // (hour // micro)
        if crossing is None and projected < limit <= projected + added and rate > 0:
            crossing = cursor + micro * ((hour // micro) * (limit - projected) // rate)
        projected += added
        cursor = step_end
    return from_nanos(projected), crossing


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata"])
def test_forecasts_read_together_match_one_by_one_and_an_hourly_projection_across_a_dst_change(settings, spend, zone):
    settings.TIME_ZONE = zone
    tz = ZoneInfo(zone)
    scopes = ["global", "provider:openai", "model:gpt-4o", "service:a", "service:quiet"]
    budgets = [
        BudgetFactory(scope=scope, amount=Decimal(amount), forecast_alerts=True)
        for scope, amount in zip(scopes, ["50", "90", "40", "60", "5"], strict=True)
    ]
    now = datetime(2026, 10, 12, 7, 20, tzinfo=UTC)  # the month ahead holds the end of summer time
    with time_machine.travel(now, tick=False):
        for day in range(1, 12):
            for hour in (2, 9, 13, 20):
                spend(f"0.{day}{hour}", datetime(2026, 10, day, hour, 15, tzinfo=UTC), service="a")
        spend("1", datetime(2026, 10, 1, 1, tzinfo=UTC), service="quiet")  # history, then a quiet week
        together = [budget_status(budget=b) for b in budgets]
        budget_forecasts_prefetch(together)
        one_by_one = [budget_status(budget=b) for b in budgets]

    for joint, single in zip(together, one_by_one, strict=True):
        assert joint.forecast_method == single.forecast_method == "hour-of-day"
        assert joint.forecast_result == single.forecast_result
        profile = _hour_of_day_profile(budget=joint.budget, at=now, tz=tz)
        assert (joint.forecast, joint.projected_exceed_at) == _hourly_forecast_reference(joint, profile, tz)
    assert [s.projected_exceed_at is not None for s in together] == [True, False, True, True, False]
