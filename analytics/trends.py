"""The trend of a scope's spend, from the rollups, and its forecast from budgets' one forecaster.

Direction: a line through the daily totals of the last `days` complete local days (weekday-corrected
from two weeks on, budgets.forecast.daily_trend): rising / falling at 90 % confidence when it moves at
least 5 % of the mean over the window; stable otherwise.

The forecast of the current period is budgets.forecast.spend_forecasts' for the scope, so the
dashboard's "forecast this month" is the forecast a monthly budget on the same scope shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from budgets.forecast import Forecast, Question, daily_trend, spend_forecasts
from core.money import round_money
from core.periods import hour_floor, period_bounds
from tracking.selectors import spend_total

from .series import HOUR, Point, local_midnight, local_tz, spend_series


@dataclass(frozen=True)
class Trend:
    scope: str
    at: datetime
    days: int
    daily: list[Point]
    hourly: list[Point]
    direction: str  # "rising", "falling", "stable" or "unknown" (fewer than 3 days of data)
    slope_per_day: Decimal
    confidence: Decimal  # 0..1
    change_percent: Decimal | None  # slope x days / mean daily spend
    seasonal: bool  # weekday correction in use
    period: str  # the budget period kind forecast
    forecast: Forecast | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        f = self.forecast
        return {
            "scope": self.scope,
            "at": self.at.isoformat(),
            "direction": self.direction,
            "slope_per_day": str(self.slope_per_day),
            "confidence": str(self.confidence),
            "change_percent": None if self.change_percent is None else str(self.change_percent),
            "seasonal": self.seasonal,
            "daily": [{"start": p.start.isoformat(), "amount": str(p.amount)} for p in self.daily],
            "hourly": [{"start": p.start.isoformat(), "amount": str(p.amount)} for p in self.hourly],
            "forecast": None
            if f is None
            else {
                "period": self.period,
                "amount": str(f.amount),
                "low": str(f.low),
                "high": str(f.high),
                "interval": str(f.interval),
                "method": f.method,
            },
            "notes": self.notes,
        }


def spend_trend(
    *,
    scope: str,
    at: datetime,
    days: int = 28,
    period: str = "monthly",
    hourly_hours: int = 168,
    currency: str = "USD",
) -> Trend:
    """Direction, slope and confidence of `scope`'s daily spend over the `days` complete local days
    before `at`, its hourly series over the last `hourly_hours` hours, and the forecast of the current
    `period` (a budget period kind)."""
    tz = local_tz()
    today = at.astimezone(tz).date()
    daily = spend_series(
        scope=scope,
        start=local_midnight(today - timedelta(days=days), tz),
        end=local_midnight(today, tz),
        step="day",
        currency=currency,
    )
    next_hour = hour_floor(at) + HOUR
    hourly = spend_series(
        scope=scope, start=next_hour - HOUR * hourly_hours, end=next_hour, step="hour", currency=currency
    )
    trend = daily_trend([p.amount for p in daily], [p.start for p in daily])
    notes = ["fewer than 3 days with spend: no direction yet"] if trend.direction == "unknown" else []
    return Trend(
        scope=scope,
        at=at,
        days=days,
        daily=daily,
        hourly=hourly,
        direction=trend.direction,
        slope_per_day=round_money(trend.slope_per_day),
        confidence=trend.confidence,
        change_percent=trend.change_percent,
        seasonal=trend.seasonal,
        period=period,
        forecast=scope_forecast(scope=scope, at=at, period=period, currency=currency),
        notes=notes,
    )


def scope_forecast(*, scope: str, at: datetime, period: str = "monthly", currency: str = "USD") -> Forecast | None:
    """The forecast of `scope`'s spend in the current `period`: what a budget of that period on that
    scope forecasts (the same spend window, the same forecaster)."""
    start, end = period_bounds(period, at)
    if end is None:
        return None
    spent = spend_total(scope=scope, start=start, end=min(hour_floor(at) + HOUR, end), currency=currency)
    [forecast] = spend_forecasts([Question(scope, currency, start, end, spent)], at=at)
    return forecast


__all__ = ["Trend", "scope_forecast", "spend_trend"]
