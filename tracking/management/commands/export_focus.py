"""python manage.py export_focus --from 2026-11-01 --to 2026-12-01 [--format csv|parquet] [--out PATH]"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracking.focus import FORMATS, focus_export_write


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = (
        "Write the ledger's cost and usage of the UTC days FROM .. TO - 1 as FOCUS 1.2 rows (one per day, provider, "
        "model, service, team, subject, job and pricing unit), to a file or standard output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", help="First UTC day (default: the first of this month).")
        parser.add_argument("--to", dest="end", help="The day after the last (default: today; that day is left out).")
        parser.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or parquet.")
        parser.add_argument("--out", help="The file to write (default: standard output; parquet needs a file).")

    def handle(self, *args: Any, **options: Any) -> None:
        today = timezone.now().date()
        start = _day(options["start"]) if options["start"] else today.replace(day=1)
        end = _day(options["end"]) if options["end"] else today
        if end <= start:
            raise CommandError(f"--to {end} must be after --from {start} (--to is the day after the last)")
        if end - start > timedelta(days=3660):
            raise CommandError("a FOCUS export covers at most ten years: split it")
        out = options["out"]
        if options["format"] == "parquet" and not out:
            raise CommandError("--format parquet needs --out PATH (it is not written to standard output)")
        if out and Path(out).is_dir():
            raise CommandError(f"--out {out} is a directory: name the file")
        rows = focus_export_write(Path(out) if out else self.stdout, start, end, options["format"])
        if out:
            self.stderr.write(f"{rows:,} FOCUS rows of {start} .. {end - timedelta(days=1)} written to {out}")
