"""django-celery-beat's schedules in the admin, in the admin's one date and time format (settings:
DATETIME_FORMAT, 24-hour): the library writes cron schedules in 12-hour time ("At 03:30 AM") and a
clocked schedule as a raw timestamp ("2026-12-05 15:32:59.984085+00:00") in its titles and choices.

Its models' two texts are replaced here, once, so every screen that shows them (lists, change pages,
the schedule choices of a periodic task) reads the same; and the periodic task list is narrowed to
the columns that fit at 1440 px.
"""

from __future__ import annotations

from cron_descriptor import FormatException, MissingFieldException, Options, WrongArgumentException, get_description
from django.contrib import admin
from django.utils import formats, timezone
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask


def crontab_described(schedule: CrontabSchedule) -> str:
    """ "At 03:30, UTC" rather than the library's "At 03:30 AM UTC"."""
    expression = " ".join(
        (schedule.minute, schedule.hour, schedule.day_of_month, schedule.month_of_year, schedule.day_of_week)
    )
    options = Options()
    options.use_24hour_time_format = True
    try:
        described = get_description(expression, options)
    except (MissingFieldException, FormatException, WrongArgumentException):
        described = expression
    return f"{described} ({schedule.timezone})"


def clocked_described(schedule: ClockedSchedule) -> str:
    return formats.date_format(timezone.localtime(schedule.clocked_time), "DATETIME_FORMAT")


CrontabSchedule.human_readable = property(crontab_described)  # type: ignore[assignment,method-assign]
ClockedSchedule.__str__ = clocked_described  # type: ignore[assignment,method-assign]


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):
    # The library's list less the interval and start time columns: "schedule" names the interval, and
    # no task of ours sets a start time.
    list_display = ("name", "enabled", "scheduler", "last_run_at", "one_off")
