"""python manage.py cost_report [--date YYYY-MM-DD] [--json | --html FILE]: the daily report on demand."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from alerts.report_email import daily_report_html, daily_report_text
from alerts.reports import daily_report_build, report_day_default


def parse_day(value: str | None) -> date:
    """The --date option: a local calendar day (YYYY-MM-DD) not after today; default yesterday."""
    if value is None:
        return report_day_default()
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise CommandError(f"--date: {value!r} is not a date in the form YYYY-MM-DD") from None
    today = timezone.localdate(timezone.now(), ZoneInfo(settings.TIME_ZONE))
    if day > today:
        raise CommandError(
            f"--date: {day.isoformat()} is in the future (today is {today.isoformat()} in {settings.TIME_ZONE})"
        )
    return day


class Command(BaseCommand):
    help = (
        "Print the daily cost report of a local calendar day (default: yesterday in TIME_ZONE) as text, "
        "or as JSON (--json), or write its HTML email to a file (--html FILE)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", metavar="YYYY-MM-DD", help="The day to report on (default: yesterday).")
        output = parser.add_mutually_exclusive_group()
        output.add_argument("--json", action="store_true", help="Print the report as JSON (amounts as strings).")
        output.add_argument("--html", metavar="FILE", help="Write the HTML email to FILE ('-': standard output).")

    def handle(self, *args: Any, **options: Any) -> None:
        day = parse_day(options["date"])
        report = daily_report_build(day=day)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        if options["html"]:
            html = daily_report_html(report)
            if options["html"] == "-":
                self.stdout.write(html)
                return
            path = Path(options["html"])
            try:
                path.write_text(html, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"--html: cannot write {path}: {exc.strerror or exc}") from None
            self.stdout.write(f"Wrote the report of {day.isoformat()} to {path}")
            return
        self.stdout.write(daily_report_text(report), ending="")
