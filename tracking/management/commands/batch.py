"""Open and close batches from a pipeline script.

python manage.py batch start nightly-leads            # prints the job id to record usage with
JOB=$(python manage.py batch start nightly-leads --quiet)
python manage.py batch finish nightly-leads --leads 120
python manage.py batch list
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.money import format_money
from tracking.batches import (
    BATCH_CURRENCY,
    batch_cost_compute,
    batch_finish,
    batch_running,
    batch_start,
    lead_unit,
)
from tracking.models import Batch


def _per_lead(value: Any) -> str:
    return f"undefined (no {lead_unit()}s)" if value is None else format_money(value, BATCH_CURRENCY, places=4)


def _duration(batch: Batch) -> str:
    seconds = int(((batch.finished_at or timezone.now()) - batch.started_at).total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m {rest % 60:02d}s"


class Command(BaseCommand):
    help = "Start or finish a batch (a pipeline run that produces leads), or list recent batches."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        start = sub.add_parser("start", help="Open a batch; prints its job id.")
        start.add_argument("name", help="The pipeline's name, e.g. nightly-leads.")
        start.add_argument("--job", default=None, help="Job id to use (default: <name>-<UTC start time>).")
        start.add_argument("--note", default="", help="A note shown in the admin.")
        start.add_argument("--quiet", action="store_true", help="Print only the job id (for scripts).")
        finish = sub.add_parser("finish", help="Close the running batch of a pipeline with its lead count.")
        finish.add_argument("name", help="The pipeline's name.")
        finish.add_argument("--leads", required=True, help="How many leads the batch produced (0 or more).")
        listing = sub.add_parser("list", help="The last batches with cost and cost per lead.")
        listing.add_argument("--limit", type=int, default=20)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            ) from None

    def _start(self, options: dict[str, Any]) -> None:
        batch = batch_start(name=options["name"], job=options["job"], note=options["note"])
        if options["quiet"]:
            self.stdout.write(batch.job)
            return
        self.stdout.write(f"Batch {batch.name} started: job {batch.job}. Record its usage with job={batch.job}.")

    def _finish(self, options: dict[str, Any]) -> None:
        batch = batch_finish(batch=batch_running(name=options["name"]), leads=options["leads"])
        # The task enqueued by batch_finish stores the same figures; compute them here to print them.
        batch = batch_cost_compute(batch=batch)
        unit = lead_unit()
        self.stdout.write(
            f"Batch {batch.name} finished after {_duration(batch)}: job {batch.job}, "
            f"cost {format_money(batch.cost, BATCH_CURRENCY, places=4)}, {batch.leads} {unit}s, "
            f"cost per {unit} {_per_lead(batch.cost_per_lead)}.\n"
            f"Month to date: {format_money(batch.month_cost, BATCH_CURRENCY)} for {batch.month_leads} {unit}s, "
            f"cost per {unit} {_per_lead(batch.month_cost_per_lead)}."
        )

    def _list(self, options: dict[str, Any]) -> None:
        for batch in Batch.objects.order_by("-started_at")[: options["limit"]]:
            state = "running" if batch.finished_at is None else f"{batch.leads} {lead_unit()}s"
            cost = "-" if batch.cost is None else format_money(batch.cost, BATCH_CURRENCY, places=4)
            self.stdout.write(
                f"{batch.started_at:%Y-%m-%d %H:%M} {batch.name} {batch.job} {_duration(batch)} {state} "
                f"cost {cost} per {lead_unit()} {_per_lead(batch.cost_per_lead) if batch.cost is not None else '-'}"
            )
