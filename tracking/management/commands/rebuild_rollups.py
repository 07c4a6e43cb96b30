"""python manage.py rebuild_rollups [--json]: recompute the rollups from the ledger."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.progress import progress_bar
from tracking.models import CostEntry
from tracking.services import rollups_rebuild


class Command(BaseCommand):
    help = "Recompute every rollup from the ledger in one transaction (writers wait meanwhile)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the result as JSON (no progress bar).")

    def handle(self, *args: Any, **options: Any) -> None:
        bar = progress_bar(
            total=CostEntry.objects.count(), label="ledger", stream=self.stderr, enabled=not options["json"]
        )
        rows = rollups_rebuild(progress=bar.advance)
        bar.close()
        if options["json"]:
            self.stdout.write(json.dumps({"rollup_rows": rows}))
        else:
            self.stdout.write(f"Rebuilt {rows} rollup rows from the ledger.")
