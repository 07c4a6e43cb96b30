from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from analytics.series import spend_series
from analytics.trends import scope_forecast, spend_trend
from budgets.forecast import line_fit, t_two_sided_p
from core.periods import period_bounds
from tests.analytics.conftest import HOUR, T0, Stream, entry, seasonal_entries, write
from tracking.selectors import spend_total

pytestmark = pytest.mark.django_db

ONE = (Stream("openai", "gpt-4o", "chat", "lead-gen", Decimal("1.00")),)


def test_student_t_p_values_match_the_tables():
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=5e-4)
    assert t_two_sided_p(2.0, 1000) == pytest.approx(0.0458, abs=5e-4)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)


def test_a_line_fit_recovers_a_known_slope_in_decimal():
    fit = line_fit([Decimal(3) + Decimal("0.5") * i for i in range(10)])

    assert fit.slope == Decimal("0.5")
    assert fit.intercept == Decimal(3)
    assert fit.confidence == 1


@pytest.mark.parametrize(
    ("growth", "direction"),
    [(Decimal("0.03"), "rising"), (Decimal("-0.02"), "falling"), (Decimal(0), "stable")],
)
def test_the_direction_of_a_seasonal_series_with_a_known_trend(growth, direction):
    write(seasonal_entries(streams=ONE, days=28, growth_per_day=growth, noise=0.10))

    trend = spend_trend(scope="global", at=T0, days=28)

    assert trend.direction == direction
    assert trend.seasonal  # four weeks: weekday-corrected
    if direction != "stable":
        assert trend.confidence >= Decimal("0.99")
        # The generated weekday spend is 1 USD x (11 office hours + 13 x 0.3) = 14.9 USD a day at the
        # start; growth is a share of it per day (weekends 40 % of that): the slope is near 14.9 x 0.87 x growth.
        expected = Decimal("14.9") * Decimal("0.829") * growth
        assert abs(trend.slope_per_day - expected) <= abs(expected) * Decimal("0.25")
    assert len(trend.daily) == 28 and len(trend.hourly) == 168
    assert sum(p.amount for p in trend.daily) == spend_total(
        scope="global", start=trend.daily[0].start, end=trend.daily[-1].start + timedelta(days=1)
    )


def test_the_forecast_repeats_the_hour_of_week_profile_once_there_are_two_weeks():
    # Exactly the same week twice and a bit (no noise): the rest of the month is the profile.
    write(seasonal_entries(streams=ONE, days=21, noise=0.0))

    forecast = scope_forecast(scope="global", at=T0 - timedelta(minutes=30), period="monthly")
    start, end = period_bounds("monthly", T0)
    spent = spend_total(scope="global", start=start, end=T0)

    assert forecast.method == "hour-of-week"
    # 18 March 11:30 -> the rest of March: hours 12:00 on the 18th to the 1st of April; no trend in
    # the history (the same weeks), so no slope either.
    expected_rest = Decimal(0)
    hour = T0
    while hour < end:
        office = 8 <= hour.hour < 19
        weekend = hour.weekday() >= 5
        expected_rest += (Decimal(1) if office else Decimal("0.3")) * (Decimal("0.4") if weekend else 1)
        hour += HOUR
    assert abs(forecast.amount - spent - expected_rest) < Decimal("0.01")
    assert forecast.low <= forecast.amount <= forecast.high


def test_a_short_history_forecasts_linearly_with_a_wide_interval():
    write(seasonal_entries(streams=ONE, days=5, noise=0.0))

    forecast = scope_forecast(scope="global", at=T0 - timedelta(minutes=30), period="monthly")
    start, _ = period_bounds("monthly", T0)

    assert forecast.method == "linear"
    assert forecast.low >= spend_total(scope="global", start=start, end=T0)
    assert forecast.low < forecast.amount < forecast.high


def test_series_fill_hours_and_days_without_spend_with_zero():
    write(
        [entry(T0 - 3 * HOUR, key="one", amount=Decimal("2.5"), provider="openai", model="m", service="s", subject="")]
    )

    hourly = spend_series(scope="model:m", start=T0 - 5 * HOUR, end=T0, step="hour")
    daily = spend_series(scope="model:m", start=T0 - timedelta(days=3), end=T0, step="day")

    assert [p.amount for p in hourly] == [0, 0, Decimal("2.5"), 0, 0]
    assert [p.amount for p in daily] == [0, 0, 0, Decimal("2.5")]


def test_a_scope_without_data_has_no_direction():
    trend = spend_trend(scope="model:nothing", at=T0)

    assert trend.direction == "unknown"
    assert trend.forecast is not None and trend.forecast.amount == 0
