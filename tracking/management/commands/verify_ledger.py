"""python manage.py verify_ledger: do the rollups hold exactly what the ledger says? Exit 1 if not."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.selectors import ledger_differences, ledger_totals_by_currency


class Command(BaseCommand):
    help = "Recompute every hourly rollup from the ledger and compare; exits non-zero on any difference."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--show", type=int, default=20, help="How many differences to print (default 20).")

    def handle(self, *args: Any, **options: Any) -> None:
        differences, expected_rows, rollup_rows = ledger_differences()
        totals = ", ".join(
            f"{total.normalize():f} {currency}" for currency, total in ledger_totals_by_currency().items()
        )
        if not differences:
            self.stdout.write(
                f"OK: ledger and rollups agree ({rollup_rows} hourly rollup rows and their daily totals;"
                f" ledger total {totals or '0'})."
            )
            return
        for diff in differences[: options["show"]]:
            self.stderr.write(
                f"{diff.table} {diff.scope} @ {diff.bucket:%Y-%m-%d %H:00}Z {diff.currency} {diff.field}: "
                f"ledger {diff.ledger} != rollup {diff.rollup}"
            )
        raise CommandError(
            f"{len(differences)} difference(s) between ledger and rollups "
            f"({expected_rows} rows expected, {rollup_rows} present). "
            "Run `python manage.py rebuild_rollups` to recompute them from the ledger.",
            returncode=1,
        )
