"""python manage.py import_prices model_prices.json [--provider openai] [--dry-run] [--json]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.progress import progress_bar
from tracking.catalog import CatalogError, price_catalog_import


class Command(BaseCommand):
    help = (
        "Import unit prices from a file in LiteLLM's model_prices_and_context_window.json format. "
        "A new price closes the version in force (events keep the price of their time); the same file "
        "imported twice changes nothing. A malformed file imports nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path to the catalog (LiteLLM's JSON format).")
        parser.add_argument("--provider", help="Import only this provider's prices (litellm_provider, e.g. openai).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; write nothing.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise CommandError(f"{path}: is a directory, not a catalog file") from None
        except OSError as exc:
            raise CommandError(f"{path}: cannot read ({exc.strerror})") from None
        bars: list[Any] = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bars.append(progress_bar(total=total, label="prices", stream=self.stderr, enabled=not options["json"]))
            bars[0].advance(done - bars[0].done)

        try:
            report = price_catalog_import(
                data=data,
                source=path.name,
                dry_run=options["dry_run"],
                provider=options["provider"],
                progress=progress,
            )
        except CatalogError as exc:
            raise CommandError(f"{exc} (nothing was imported)") from None
        if bars:
            bars[0].close()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            for line in report.summary_lines():
                self.stdout.write(line)
