"""python manage.py rebuild_rollups: recompute the hourly rollups from the ledger."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tracking.services import rollups_rebuild


class Command(BaseCommand):
    help = "Recompute every hourly rollup from the ledger in one transaction (writers wait meanwhile)."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = rollups_rebuild()
        self.stdout.write(f"Rebuilt {rows} rollup rows from the ledger.")
