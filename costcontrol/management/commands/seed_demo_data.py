"""python manage.py seed_demo_data [--days 60] [--json]: a living dashboard right after `make run`.

Demo usage of several providers and models at the catalog's real prices, with a daily rhythm
(office hours in TIME_ZONE), a quiet weekend, slow growth, a few errors and rate limits, a few
anomalies, a nightly lead-generation batch with its leads, an hourly GPU in burst mode, and OpenAI's
invoice lines for each closed day (a CSV billing source) to compare the metered spend with.

Everything goes through the real write paths (cost_entry_record_many, gpu_sample_record,
batch_cost_compute), so the rollups, budgets and reports are exactly what real usage would give.
Idempotent: every event has a key derived from its hour (demo:<hour>:<n>), random numbers are
seeded by the hour, GPU samples are unique per device and time, batches per job id, budgets and
rules per name; running it again adds only the hours that have passed since.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from alerts.models import AlertRule, Metric, Window
from budgets.models import Budget
from core.progress import progress_bar
from tracking.batches import batch_cost_compute
from tracking.billing import bills_import_csv
from tracking.catalog import price_catalog_load_default
from tracking.gpu import GpuReading, gpu_sample_record
from tracking.models import Batch, BillingSource, Price, SpendRollupDay
from tracking.services import cost_entry_record_many

HOUR = timedelta(hours=1)
PIPELINE = "nightly-leads"
GPU_UUID = "GPU-demo-0000-0000-0000-000000000001"
GPU_NAME = "NVIDIA L4 (demo)"
DEMO_BILLS = "OpenAI invoices (demo)"


@dataclass(frozen=True)
class Workload:
    service: str
    provider: str
    model: str
    operation: str
    weight: int
    input_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    cached_share: float = 0.0  # share of the input read from the provider's prompt cache


WORKLOADS = (
    Workload("support-bot", "anthropic", "claude-haiku-4-5", "chat", 30, (6_000, 16_000), (300, 900)),
    Workload("support-bot", "anthropic", "claude-sonnet-4-5", "chat", 10, (8_000, 20_000), (500, 1_500)),
    Workload("lead-gen", "openai", "gpt-4o", "chat", 18, (5_000, 12_000), (800, 2_000), cached_share=0.05),
    Workload("lead-gen", "openai", "gpt-4o-mini", "chat", 16, (4_000, 10_000), (500, 1_500)),
    Workload("search", "openai", "text-embedding-3-small", "embedding", 14, (20_000, 80_000), (0, 0)),
    Workload("search", "gemini", "gemini-2.5-flash", "chat", 8, (3_000, 9_000), (400, 1_200)),
    Workload("research", "mistral", "mistral-small-latest", "chat", 4, (2_000, 6_000), (500, 1_500)),
)
SUBJECTS = [f"cust-{n:03d}" for n in range(1, 41)]


def _tokens(rng: random.Random, workload: Workload, scale: float = 1.0) -> dict[str, int]:
    total_in = int(rng.randint(*workload.input_tokens) * scale)
    cached = int(total_in * workload.cached_share)
    quantities = {"input_tokens": total_in - cached, "output_tokens": int(rng.randint(*workload.output_tokens) * scale)}
    if cached:
        quantities["cached_input_tokens"] = cached
    return quantities


class Command(BaseCommand):
    help = (
        "Create realistic demo data (providers, models, rhythm, anomalies, batches, GPU samples) through the "
        "real record path. Safe to run again: nothing is recorded twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=60, help="Days of history up to now (default 60).")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
        parser.add_argument("--no-gpu", action="store_true", help="No GPU samples.")
        parser.add_argument("--json", action="store_true", help="Print a JSON summary; no progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if not 1 <= days <= 730:
            raise CommandError("--days must be between 1 and 730")
        seed = options["seed"]
        catalog = price_catalog_load_default()
        missing = [w.model for w in WORKLOADS if not Price.objects.filter(provider=w.provider, model=w.model).exists()]
        if missing:
            raise CommandError(f"the default catalog has no price for {', '.join(missing)}")
        end = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=days)
        hours = [start + HOUR * i for i in range(days * 24)]
        bar = progress_bar(total=len(hours), label="demo data", stream=self.stderr, enabled=not options["json"])
        summary = {"accepted": 0, "duplicate": 0, "rejected": 0, "gpu_samples": 0, "batches": 0}
        pending: list[dict[str, Any]] = []
        for hour in hours:
            pending += self._hour_events(hour, seed=seed, start=start, end=end)
            if len(pending) >= 500 or hour == hours[-1]:
                self._record(pending, summary)
                pending = []
            if not options["no_gpu"]:
                summary["gpu_samples"] += self._gpu_sample(hour + HOUR - timedelta(minutes=1), seed=seed)
            bar.advance()
        bar.close()
        summary["batches"] = self._batches(start=start, end=end, seed=seed)
        summary["billed_days"] = self._bills(end=end, seed=seed)
        created = self._budgets_and_rules()
        result = {
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "prices_added": catalog.added,
            **summary,
            "budgets_and_rules_created": created,
        }
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(
            f"Demo data {start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} UTC: {summary['accepted']} entries recorded, "
            f"{summary['duplicate']} already there, {summary['rejected']} rejected; {summary['gpu_samples']} GPU "
            f"samples; {summary['batches']} batches; {len(created)} budgets/rules created."
        )

    # --- usage ---------------------------------------------------------------------------------

    def _activity(self, hour: datetime, *, start: datetime, rng: random.Random) -> float:
        local = hour.astimezone(timezone.get_default_timezone())
        daily = 0.25 + (1.0 if 8 <= local.hour < 19 else 0.35 if 6 <= local.hour < 22 else 0.0)
        weekly = 0.35 if local.weekday() >= 5 else 1.0
        growth = 1.0 + 0.006 * ((hour - start) / timedelta(days=1))
        return daily * weekly * growth * rng.uniform(0.85, 1.15)

    def _hour_events(self, hour: datetime, *, seed: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
        rng = random.Random(f"{seed}:{hour.isoformat()}")
        key = f"demo:{hour:%Y%m%dT%H}"
        count = round(27 * self._activity(hour, start=start, rng=rng))
        weights = [w.weight for w in WORKLOADS]
        events = []
        for n in range(count):
            workload = rng.choices(WORKLOADS, weights=weights)[0]
            events.append(self._event(workload, rng, hour, f"{key}:{n}"))
        events += self._spikes(hour, rng=rng, key=key, end=end)
        job = self._batch_job(hour)
        if job:
            lead_gen = [w for w in WORKLOADS if w.service == "lead-gen"]
            for n in range(rng.randint(20, 30)):
                event = self._event(rng.choice(lead_gen), rng, hour, f"{key}:batch:{n}")
                event.update(job=job, subject="")
                events.append(event)
        return events

    def _event(
        self, workload: Workload, rng: random.Random, hour: datetime, key: str, scale: float = 1.0
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "provider": workload.provider,
            "model": workload.model,
            "operation": workload.operation,
            "service": workload.service,
            "subject": rng.choice(SUBJECTS),
            "tags": {"env": "staging" if rng.random() < 0.1 else "prod"},
            "occurred_at": hour + timedelta(seconds=rng.randint(0, 3599)),
            "idempotency_key": key,
            "duration_ms": rng.randint(200, 9000),
        }
        if workload.operation == "embedding":
            event["input_tokens"] = rng.randint(*workload.input_tokens)
        else:
            event.update(_tokens(rng, workload, scale))
        roll = rng.random()
        if roll < 0.03:  # failed after reading the prompt: billed for input only
            event.update(outcome="error", output_tokens=0)
        elif roll < 0.04:
            event.update(outcome="rate_limited", input_tokens=0, output_tokens=0, cached_input_tokens=0)
        return event

    def _spikes(self, hour: datetime, *, rng: random.Random, key: str, end: datetime) -> list[dict[str, Any]]:
        """A few anomalies: placed by the calendar (so a re-run finds the same ones) and one 3 hours ago."""
        day = hour.date().toordinal()
        events: list[dict[str, Any]] = []
        if day % 9 == 0 and hour.hour == 14:  # a runaway script of a new subject on gpt-4o-mini
            workload = next(w for w in WORKLOADS if w.model == "gpt-4o-mini")
            for n in range(150):
                event = self._event(workload, rng, hour, f"{key}:spike-subject:{n}", scale=4.0)
                event.update(subject="runaway-agent", service="lead-gen", outcome="success")
                events.append(event)
        if day % 16 == 3 and hour.hour == 10:  # gpt-4o used for everything for an hour
            workload = next(w for w in WORKLOADS if w.model == "gpt-4o")
            for n in range(60):
                events.append(self._event(workload, rng, hour, f"{key}:spike-model:{n}"))
        if hour == end - 3 * HOUR:  # a customer hammering the support bot right now
            workload = next(w for w in WORKLOADS if w.model == "claude-sonnet-4-5")
            for n in range(80):
                event = self._event(workload, rng, hour, f"{key}:spike-recent:{n}")
                event.update(subject="acme-corp", outcome="success")
                events.append(event)
        return events

    def _record(self, events: list[dict[str, Any]], summary: dict[str, int]) -> None:
        if not events:
            return
        for result in cost_entry_record_many(events):
            summary[result.status] += 1
            if result.status == "rejected":
                raise CommandError(f"a demo event was refused: {result.errors}")

    # --- batches -------------------------------------------------------------------------------

    def _batch_job(self, hour: datetime) -> str:
        """The nightly batch runs 01:00-03:00 UTC."""
        return f"{PIPELINE}-{hour:%Y%m%d}" if hour.hour in (1, 2) else ""

    def _batches(self, *, start: datetime, end: datetime, seed: int) -> int:
        done = 0
        day = start.replace(hour=0)
        while day < end:
            started, finished = day + HOUR, day + 3 * HOUR
            if started >= start and finished <= end:
                rng = random.Random(f"{seed}:batch:{day:%Y%m%d}")
                batch, created = Batch.objects.get_or_create(
                    job=f"{PIPELINE}-{day:%Y%m%d}",
                    defaults={
                        "name": PIPELINE,
                        "started_at": started,
                        "finished_at": finished,
                        "leads": rng.randint(70, 140),
                        "note": "demo data",
                    },
                )
                if created or batch.cost_computed_at is None:
                    batch_cost_compute(batch=batch)
                    done += 1
            day += timedelta(days=1)
        return done

    # --- GPU -----------------------------------------------------------------------------------

    def _gpu_sample(self, at: datetime, *, seed: int) -> int:
        if at > timezone.now():
            return 0
        rng = random.Random(f"{seed}:gpu:{at.isoformat()}")
        local = at.astimezone(timezone.get_default_timezone())
        busy = local.weekday() < 5 and 9 <= local.hour < 18
        reading = GpuReading(
            index=0,
            uuid=GPU_UUID,
            name=GPU_NAME,
            utilisation_percent=rng.randint(55, 95) if busy else rng.randint(0, 12),
            memory_used=(18 if busy else 2) * 2**30,
            memory_total=24 * 2**30,
            power_watts=Decimal(rng.randint(40, 72)),
        )
        result = gpu_sample_record(reading=reading, sampled_at=at, interval_seconds=3600, burst=True)
        return int(result.created)

    # --- what OpenAI billed --------------------------------------------------------------------------

    def _bills(self, *, end: datetime, seed: int) -> int:
        """OpenAI's invoice lines for each closed UTC day of the demo, through the CSV import a finance lead would
        use: close to what was metered (a few percent of usage that reached no client), one day well over it.
        Returns the days imported."""
        source, _ = BillingSource.objects.get_or_create(
            name=DEMO_BILLS, defaults={"kind": BillingSource.Kind.CSV, "provider": "openai"}
        )
        today = end.astimezone(UTC).date()
        rollups = SpendRollupDay.objects.filter(scope__startswith="model:", currency="USD", bucket__lt=end)
        openai_models = set(Price.objects.filter(provider="openai").values_list("model", flat=True))
        rows = ["day,model,amount,currency,description"]
        for rollup in rollups.order_by("bucket", "scope"):
            day, model = rollup.bucket.astimezone(UTC).date(), rollup.scope.removeprefix("model:")
            if day >= today or model not in openai_models:
                continue
            rng = random.Random(f"{seed}:{day}:{model}")
            share = Decimal("1.25") if day == today - timedelta(days=2) else Decimal(1 + rng.uniform(0.0, 0.06))
            amount = (rollup.amount * share).quantize(Decimal("0.01"))
            rows.append(f"{day},{model},{amount},USD,{model} usage")
        if len(rows) == 1:
            return 0
        return len(bills_import_csv(source, io.StringIO("\n".join(rows) + "\n"), today=today))

    # --- budgets and an anomaly rule -------------------------------------------------------------

    def _budgets_and_rules(self) -> list[str]:
        created = []
        for name, scope, amount, period in (
            ("Demo: OpenAI monthly", "provider:openai", Decimal("60"), "monthly"),
            ("Demo: support bot weekly", "service:support-bot", Decimal("400"), "weekly"),
        ):
            _, made = Budget.objects.get_or_create(
                name=name, defaults={"scope": scope, "amount": amount, "period": period, "forecast_alerts": True}
            )
            if made:
                created.append(name)
        rules = {
            "Demo: OpenAI bill": (Metric.BILL_DRIFT, "provider:openai", Window.LAST_BILLED_DAY, Decimal(10)),
            "Demo: spend anomaly": (Metric.ANOMALY, "global", Window.LAST_DAY, Decimal(8)),
        }
        for name, (metric, scope, window, threshold) in rules.items():
            _, made = AlertRule.objects.get_or_create(
                name=name,
                defaults={
                    "metric": metric,
                    "scope": scope,
                    "window": window,
                    "threshold": threshold,
                    "level": "warning",
                },
            )
            if made:
                created.append(name)
        return created
