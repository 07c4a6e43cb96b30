"""The one forecaster (budgets.forecast): its methods on shaped series, its accuracy on generated months
with weekly seasonality, a trend and noise (the backtest the README quotes), and that every screen's
forecast of one scope and period is the same number."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from budgets.forecast import Question, spend_forecasts
from core.periods import period_bounds
from tests.factories import BudgetFactory, status_of
from tracking.selectors import spend_total
from tracking.services import cost_entry_record_many

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


def record(amounts: dict[datetime, Decimal], *, service: str) -> None:
    """Each hour's amount as one ledger entry, through the real record path."""
    events = [
        {
            "provider": "openai",
            "model": "gpt-4o",
            "service": service,
            "amount": str(amount),
            "occurred_at": hour + timedelta(minutes=30),
            "idempotency_key": f"{service}-{hour.isoformat()}",
        }
        for hour, amount in sorted(amounts.items())
        if amount
    ]
    for first in range(0, len(events), 500):
        results = cost_entry_record_many(events[first : first + 500])
        assert {r.status for r in results} == {"accepted"}


def forecast(scope: str, at: datetime, period: str = "monthly", limit: Decimal | None = None):
    start, end = period_bounds(period, at)
    spent = spend_total(scope=scope, start=start, end=min(at.replace(minute=0) + HOUR, end))
    [found] = spend_forecasts([Question(scope, "USD", start, end, spent, limit)], at=at)
    return found


def test_with_less_than_two_weeks_the_rate_since_first_seen_continues(gpt4o_prices):
    record({datetime(2026, 11, 3, h, tzinfo=UTC): Decimal("2") for h in range(24)}, service="young")
    at = datetime(2026, 11, 5, 12, 20, tzinfo=UTC)
    found = forecast("service:young", at, limit=Decimal("100"))
    # 48 USD in the 60 hours since the first: 0.8 an hour for the 611 hours after this one (to 1 December).
    assert found.method == "linear"
    assert found.amount == Decimal("48") + Decimal("0.8") * 611
    assert found.low <= found.amount <= found.high
    # 52 more reach the limit after 65 hours: from 13:00 on the 5th, at 06:00 on the 8th.
    assert found.exceed_at == datetime(2026, 11, 8, 6, tzinfo=UTC)


def test_with_two_weeks_office_hours_are_forecast_and_nights_and_weekends_are_not(gpt4o_prices):
    """1 USD in each office hour (09-17 UTC) of each weekday since 2 November; nothing else."""
    amounts = {
        datetime(2026, 11, day, hour, tzinfo=UTC): Decimal(1)
        for day in range(2, 25)
        for hour in range(9, 17)
        if datetime(2026, 11, day, tzinfo=UTC).weekday() < 5
    }
    record(amounts, service="office")
    at = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # Tuesday evening, after office hours
    found = forecast("service:office", at, limit=Decimal("150"))
    assert found.method == "hour-of-week"
    # Spent: 17 weekdays x 8 = 136. Left: Wed 25 to Mon 30, 4 weekdays x 8 hours = 32; a linear run-rate
    # would add 6 days' average including nights and weekends.
    assert found.amount == Decimal(136 + 32)
    # 14 more reach 150 in the 6th office hour of Thursday the 26th: 14:00-15:00, at 15:00.
    assert found.exceed_at == datetime(2026, 11, 26, 15, tzinfo=UTC)


def test_a_rising_trend_raises_the_forecast_above_the_weeks_average(gpt4o_prices):
    """Spend rising 5 % a day, every hour the same within a day."""
    start = datetime(2026, 10, 1, tzinfo=UTC)
    amounts = {start + HOUR * h: (Decimal("1.05") ** (h // 24)).quantize(Decimal("0.000001")) for h in range(24 * 40)}
    record(amounts, service="growing")
    at = datetime(2026, 11, 10, 0, 30, tzinfo=UTC)
    found = forecast("service:growing", at)
    flat_rest = sum(amounts[at.replace(minute=0) - HOUR * (h + 1)] for h in range(28 * 24)) / 28 / 24
    spent = spend_total(scope="service:growing", start=datetime(2026, 11, 1, tzinfo=UTC), end=at + HOUR)
    hours_left = (datetime(2026, 12, 1, tzinfo=UTC) - at.replace(minute=0) - HOUR) // HOUR
    assert found.amount > spent + flat_rest * hours_left * Decimal("1.3")


def _generated_series(seed: int) -> dict[datetime, Decimal]:
    """Hourly spend with weekly seasonality (weekends at 40 %), an office-hours shape, a trend of 0.8 %
    a day, day-level noise (lognormal, sigma 0.12) and hour-level noise (+/- 30 %)."""
    rng = random.Random(seed)
    weekday = [1.0, 1.0, 1.0, 1.0, 1.0, 0.45, 0.35]
    shape = [0.3] * 8 + [1.6] * 11 + [0.8] * 5
    start = datetime(2026, 7, 1, tzinfo=UTC)
    amounts = {}
    for day in range(153):  # July to November
        moment = start + timedelta(days=day)
        level = 2.0 * weekday[moment.weekday()] * (1 + 0.008 * day) * math.exp(rng.gauss(0, 0.12))
        for hour in range(24):
            value = level * shape[hour] * rng.uniform(0.7, 1.3)
            amounts[moment + HOUR * hour] = Decimal(f"{value:.6f}")
    return amounts


def test_the_month_forecast_from_day_7_14_and_21_is_within_10_percent_on_seasonal_trending_noisy_series(
    gpt4o_prices,
):
    """Backtest: three generated series, the totals of August to November forecast at noon on days 7,
    14 and 21: the mean absolute percentage error stays under 10 % (README, "How good is the forecast")."""
    errors: list[Decimal] = []
    inside = 0
    for seed in (1, 2, 3):
        amounts = _generated_series(seed)
        record(amounts, service=f"backtest-{seed}")
        for month in (8, 9, 10, 11):
            first = datetime(2026, month, 1, tzinfo=UTC)
            following = datetime(2026, month + 1, 1, tzinfo=UTC)
            actual = sum(a for hour, a in amounts.items() if first <= hour < following)
            for day in (7, 14, 21):
                found = forecast(f"service:backtest-{seed}", datetime(2026, month, day, 12, tzinfo=UTC))
                errors.append(abs(found.amount - actual) / actual)
                inside += found.low <= actual <= found.high
    mape = sum(errors) / len(errors)
    print(
        f"backtest: MAPE {mape * 100:.2f} % over {len(errors)} forecasts, worst {max(errors) * 100:.2f} %, "
        f"{inside} of {len(errors)} actual totals inside the 90 % interval"
    )
    assert mape < Decimal("0.10")
    assert max(errors) < Decimal("0.25")


def test_forecasts_read_together_equal_each_read_alone_in_four_statements(gpt4o_prices, django_assert_max_num_queries):
    for n, service in enumerate(["a", "b", "c"]):
        record(
            {datetime(2026, 11, d, h, tzinfo=UTC): Decimal(n + 1) for d in range(1, 21) for h in (3, 9, 15)},
            service=service,
        )
    at = datetime(2026, 11, 20, 18, tzinfo=UTC)
    questions = [
        Question(f"service:{s}", "USD", *period_bounds(period, at), Decimal(7), Decimal(500))
        for s in ("a", "b", "c", "never-seen")
        for period in ("daily", "weekly", "monthly", "quarterly")
    ]
    with django_assert_max_num_queries(4):
        together = spend_forecasts(questions, at=at)
    assert together == [spend_forecasts([q], at=at)[0] for q in questions]
    assert {f.method for f in together} == {"hour-of-week", "linear"}  # the unseen scope has no history


def test_the_dashboards_month_forecast_is_a_monthly_budgets_forecast_on_the_same_scope(gpt4o_prices):
    from analytics.trends import scope_forecast

    record(_generated_series(7), service="shared")
    at = datetime(2026, 11, 12, 15, 45, tzinfo=UTC)
    budget = BudgetFactory(scope="service:shared", amount=Decimal("3000"))
    with time_machine.travel(at, tick=False):
        budget_forecast = status_of(budget).forecast
    assert scope_forecast(scope="service:shared", at=at, period="monthly") == budget_forecast
    assert budget_forecast.method == "hour-of-week"


def test_the_rest_of_a_period_summed_in_closed_form_equals_adding_hour_by_hour():
    """total() sums by hour of the week and along the trend at once; hour by hour is the definition
    (including a falling trend clamped at zero)."""
    from budgets.forecast import _Model

    rng = random.Random(4)
    middle = datetime(2026, 11, 1, 7, tzinfo=UTC)
    for _ in range(200):
        profile = [rng.choice([0, rng.randrange(0, 10**9)]) for _ in range(168)]
        model = _Model("hour-of-week", profile, rng.choice([0, 1, -1]) * rng.randrange(0, 10**7), middle, [])
        first = middle + HOUR * rng.randrange(-400, 400)
        hours = rng.randrange(0, 3000)
        assert model.total(first, hours) == sum(model.expected(first + HOUR * i) for i in range(hours))
        if (total := model.total(first, hours)) > 0:
            needed = rng.randrange(1, total + 1)
            crossing = model.crossing(first, needed)
            whole = (crossing - first) // HOUR
            assert model.total(first, whole) < needed <= model.total(first, whole + 1)
