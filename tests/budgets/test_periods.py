from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.periods import LIFETIME_START, period_bounds

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


def test_a_berlin_monthly_budget_resets_at_berlin_midnight_on_the_first():
    # 22:59 UTC on 31 Jan is 23:59 in Berlin: still January.
    start, end = period_bounds("monthly", datetime(2026, 1, 31, 22, 59, tzinfo=UTC), BERLIN)
    assert start == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    # One minute later it is February in Berlin, though still 31 Jan in UTC.
    start, _ = period_bounds("monthly", datetime(2026, 1, 31, 23, 0, tzinfo=UTC), BERLIN)
    assert start.astimezone(BERLIN) == local(BERLIN, 2026, 2, 1)


def test_a_berlin_month_across_the_spring_dst_change_ends_at_local_midnight():
    start, end = period_bounds("monthly", local(BERLIN, 2026, 3, 15, 12), BERLIN)
    assert start.astimezone(BERLIN) == local(BERLIN, 2026, 3, 1)
    assert end.astimezone(BERLIN) == local(BERLIN, 2026, 4, 1)
    assert end - start == timedelta(days=31) - timedelta(hours=1)


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK], ids=["berlin", "new_york"])
@pytest.mark.parametrize(
    ("moment", "hours"),
    [((2026, 3, 29, 12), 167), ((2026, 10, 25, 12), 169), ((2026, 3, 8, 12), None), ((2026, 11, 1, 12), None)],
)
def test_a_week_across_a_dst_change_runs_monday_midnight_to_monday_midnight(tz, moment, hours):
    start, end = period_bounds("weekly", local(tz, *moment), tz)
    assert start.astimezone(tz).weekday() == 0
    assert start.astimezone(tz).time().hour == 0 and end.astimezone(tz).time().hour == 0
    assert end.astimezone(tz).date() - start.astimezone(tz).date() == timedelta(days=7)
    if hours is not None and tz is BERLIN:
        assert end - start == timedelta(hours=hours)


def test_new_york_weeks_around_the_march_change_do_not_overlap_or_leave_a_gap():
    first = period_bounds("weekly", local(NEW_YORK, 2026, 3, 4), NEW_YORK)
    second = period_bounds("weekly", first[1], NEW_YORK)
    third = period_bounds("weekly", second[1], NEW_YORK)
    assert first[1] == second[0] and second[1] == third[0]
    assert first[1] - first[0] == timedelta(hours=167)  # Sunday 8 March 2026 loses an hour
    assert first[0] == datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # Monday 00:00 EST
    assert second[0] == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # Monday 00:00 EDT
    assert second[1] - second[0] == timedelta(hours=168)


def test_the_last_instant_of_a_period_belongs_to_it_and_the_end_to_the_next():
    start, end = period_bounds("daily", local(NEW_YORK, 2026, 11, 1, 23, 59), NEW_YORK)
    assert end - start == timedelta(hours=25)
    assert period_bounds("daily", end - timedelta(microseconds=1), NEW_YORK) == (start, end)
    assert period_bounds("daily", end, NEW_YORK)[0] == end


def test_february_has_29_days_in_a_leap_year():
    start, end = period_bounds("monthly", datetime(2028, 2, 10, tzinfo=UTC), UTC)
    assert (start, end) == (datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC))
    assert end - start == timedelta(days=29)
    start, end = period_bounds("yearly", datetime(2028, 7, 1, tzinfo=UTC), UTC)
    assert end - start == timedelta(days=366)


@pytest.mark.parametrize(
    ("month", "first", "following"),
    [(1, (2026, 1, 1), (2026, 4, 1)), (6, (2026, 4, 1), (2026, 7, 1)), (12, (2026, 10, 1), (2027, 1, 1))],
)
def test_quarters_are_calendar_quarters(month, first, following):
    start, end = period_bounds("quarterly", local(BERLIN, 2026, month, 15), BERLIN)
    assert start == local(BERLIN, *first).astimezone(UTC)
    assert end == local(BERLIN, *following).astimezone(UTC)


def test_a_lifetime_budget_has_one_period_without_end():
    assert period_bounds("none", datetime(2031, 5, 5, tzinfo=UTC), BERLIN) == (LIFETIME_START, None)


def test_an_unknown_period_or_a_naive_moment_is_refused():
    with pytest.raises(ValueError, match="unknown period"):
        period_bounds("fortnightly", datetime(2026, 1, 1, tzinfo=UTC), UTC)
    with pytest.raises(ValueError, match="aware"):
        period_bounds("daily", datetime(2026, 1, 1), UTC)
