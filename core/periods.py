"""Calendar periods of a budget, as pure functions of (period, moment, time zone).

Boundaries are local midnights in the configured time zone, found on the calendar first and
only then converted to UTC, so a DST change makes a day 23 or 25 hours long instead of
shifting the next period's start or opening a period twice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import formats, timezone

DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
QUARTERLY = "quarterly"
YEARLY = "yearly"
NONE = "none"
PERIODS = (DAILY, WEEKLY, MONTHLY, QUARTERLY, YEARLY, NONE)

# The start of a lifetime ("none") period: before any ledger entry this project can hold.
LIFETIME_START = datetime(2000, 1, 1, tzinfo=UTC)


def default_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local calendar day, in UTC.

    No zone in the tz database skips or repeats midnight in a way that matters here except a
    few historical ones; fold=0 picks the earlier instant when a midnight is ambiguous.
    """
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def period_first_day(period: str, day: date) -> tuple[date, date] | None:
    """The local calendar days [first, next first) of the period holding `day`; None for lifetime."""
    if period == DAILY:
        return day, day + timedelta(days=1)
    if period == WEEKLY:
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if period == MONTHLY:
        first = day.replace(day=1)
        return first, _add_months(first, 1)
    if period == QUARTERLY:
        first = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        return first, _add_months(first, 3)
    if period == YEARLY:
        return date(day.year, 1, 1), date(day.year + 1, 1, 1)
    if period == NONE:
        return None
    raise ValueError(f"unknown period {period!r} (expected one of {', '.join(PERIODS)})")


def period_bounds(period: str, at: datetime, tz: ZoneInfo | None = None) -> tuple[datetime, datetime | None]:
    """[start, end) in UTC of the period holding the aware moment `at`; end is None for lifetime."""
    if at.tzinfo is None:
        raise ValueError("period_bounds needs an aware datetime")
    tz = tz or default_tz()
    days = period_first_day(period, at.astimezone(tz).date())
    if days is None:
        return LIFETIME_START, None
    first, following = days
    return _local_midnight(first, tz), _local_midnight(following, tz)


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour holding `moment` (the rollups' bucket)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def moment_text(moment: datetime) -> str:
    """A moment as the admin writes every date and time: local time, the site's one format
    (settings.DATETIME_FORMAT, e.g. 2026-12-04 14:05)."""
    return str(formats.localize(timezone.template_localtime(moment)))
