"""python manage.py pull_bills [--source NAME] [--days N]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.billing import BillingError, DayResult, bills_pull
from tracking.models import BillingSource


class Command(BaseCommand):
    help = (
        "Import what the providers' cost APIs say they billed (beside the ledger, never in it): every enabled "
        "API billing source, or the one named, for its last closed UTC days and the days that failed before. "
        "One line per source and day; exits 1 when a day failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", help="The billing source's name (pulled even when not pulled daily).")
        parser.add_argument(
            "--days", type=int, help="Read the last N closed days (default: each source's days re-read)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is not None and not 0 <= days <= 366:
            raise CommandError(f"--days {days}: give 0 to 366")
        if options["source"]:
            sources = list(BillingSource.objects.filter(name=options["source"]))
            if not sources:
                raise CommandError(f"no billing source is named {options['source']!r}")
        else:
            sources = list(BillingSource.objects.filter(enabled=True).exclude(kind=BillingSource.Kind.CSV))
            if not sources:
                self.stdout.write("No enabled billing source with a cost API: add one in the admin (Billing sources).")
                return
        failed = 0
        for source in sources:
            try:
                results: list[DayResult] = bills_pull(source, days=days)
            except BillingError as exc:
                raise CommandError(str(exc)) from None
            for result in results:
                self.stdout.write(str(result))
            failed += sum(1 for result in results if not result.ok)
        if failed:
            raise CommandError(f"{failed} day(s) failed; they are tried again at the next pull")
