#!/usr/bin/env python
"""Benchmark of a Prometheus scrape: GET /metrics with the business metrics read from the database.

    make bench                                          # every benchmark, SQLite and PostgreSQL
    bin/with-postgres .venv/bin/python bench/metrics_scrape.py
    .venv/bin/python bench/metrics_scrape.py            # SQLite only (no PostgreSQL in DATABASE_URL)
    ... bench/metrics_scrape.py --samples 50 --sizes 10000,100000 --json

Each database is measured in a fresh subprocess on a fresh database (bench/_common.py, as in
record_path.py and budget_path.py), migrated, with the ledger and its rollups loaded in bulk by
bench/budget_path.py's LedgerLoader, here over 50 models (its 4 chat models and 46 more) of 4
providers, then the metric series (tracking.MetricSeries, the lifetime totals the record path
keeps) recomputed from that ledger with the SQL of migration tracking 0008. Beside them: 200
active USD budgets of every scope kind and period (their current periods opened, as beat does),
8 GPUs with 90 days of hourly samples and daily GPU cost, 2 pipelines with 90 finished batches
each, 20 firing alerts and 30 notifications waiting.

What is timed is one whole scrape: the /metrics view (monitoring.views.metrics) called with a
GET request, uncached (the business collector's METRICS_CACHE_SECONDS cache is emptied first), so
every business metric is read from the database (every budget's status and forecast from
budgets.selectors.budget_statuses) and the exposition rendered, django-prometheus's own metrics
included; in the steady state of a running process (each GPU's samples counted up to its newest).
Also printed: the same scrape served from that cache, the first scrape of a fresh process and the
median of each reader alone. The reference, as in the other benchmarks, is a bare one-row INSERT
in its own transaction, timed alternately before or after each scrape. Target (issue 16): the
scrape's p50 at the largest ledger / its p50 at the smallest <= 1.5 on PostgreSQL: a scrape must
not grow with the ledger.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import budget_path  # noqa: E402 - needs BASE_DIR on sys.path when run as a script
from bench._common import (  # noqa: E402
    TARGET_METRICS_GROWTH,
    fmt,
    is_postgresql_url,
    latency_summary,
    log,
    machine_cores,
    result_write,
    run_on_databases,
)
from bench.budget_path import LedgerLoader, interleaved, ledger_consistency, parse_sizes  # noqa: E402

DEFAULT_SIZES = (10_000, 1_000_000)
MODELS = 50
BUDGETS = 200
GPUS = 8
HISTORY_DAYS = 90
PROVIDERS = ("openai", "anthropic", "google", "mistral")


def bench_models() -> tuple[tuple[str, str, int, int, int], ...]:
    """LedgerLoader's 4 priced chat models and 46 more, as (provider, model, input, output, cached nano-USD/token)."""
    models = list(budget_path.LOAD_MODELS)
    for i in range(len(models), MODELS):
        models.append((PROVIDERS[i % len(PROVIDERS)], f"bench-model-{i + 1:02d}", 1000 + i * 50, 4000 + i * 100, 500))
    return tuple(models)


def setup_world(now: datetime) -> dict[str, Any]:
    """Budgets, GPUs, batches, alerts and notifications of a busy installation (none through the ledger)."""
    from django.db import connection

    from alerts.models import Alert, AlertSource, AlertState, Channel, Notification
    from budgets.models import Budget
    from budgets.services import budget_periods_advance
    from tracking.models import Batch, GpuDevice, GpuSample, SpendRollupDay

    models = bench_models()
    scopes = ["global"]
    scopes += [f"provider:{p}" for p in PROVIDERS]
    scopes += [f"model:{m[1]}" for m in models]
    scopes += [f"service:{s}" for s in budget_path.SERVICES]
    scopes += [f"tag:feature={f}" for f in budget_path.FEATURES] + [f"tag:env={e}" for e in budget_path.ENVIRONMENTS]
    scopes += [f"team:{t}" for t in budget_path.TEAMS]
    periods = ("monthly", "monthly", "daily", "weekly", "quarterly", "yearly", "none")
    budgets = [
        Budget(
            name=f"bench budget {i:03d}",
            scope=scopes[i % len(scopes)],
            amount=Decimal(1000 + 37 * i),
            period=periods[i % len(periods)],
            forecast_alerts=i % 3 == 0,
        )
        for i in range(BUDGETS)
    ]
    Budget.objects.bulk_create(budgets)
    budget_periods_advance(now=now)

    start = (now - timedelta(days=HISTORY_DAYS)).replace(minute=0, second=0, microsecond=0)
    devices = GpuDevice.objects.bulk_create(
        GpuDevice(
            uuid=f"GPU-{uuid.UUID(int=i + 1)}",
            name="NVIDIA H100 80GB HBM3",
            memory_total=80 * 2**30,
            first_seen=start,
            last_seen=now,
        )
        for i in range(GPUS)
    )
    samples, days = [], []
    for device in devices:
        for hour in range(HISTORY_DAYS * 24):
            at = start + timedelta(hours=hour)
            samples.append(
                GpuSample(
                    device=device,
                    sampled_at=at,
                    utilisation_percent=(hour * 7 + device.pk) % 101,
                    memory_used=2**30,
                    memory_total=80 * 2**30,
                    elapsed_seconds=None if hour == 0 else Decimal(3600),
                )
            )
        for day in range(HISTORY_DAYS + 1):
            days.append(
                SpendRollupDay(
                    scope=f"tag:gpu={device.uuid}",
                    bucket=(start + timedelta(days=day)).replace(hour=0),
                    currency="USD",
                    amount=Decimal("12.000000000"),
                    events=48,
                )
            )
    GpuSample.objects.bulk_create(samples, batch_size=5000)
    SpendRollupDay.objects.bulk_create(days, batch_size=5000, ignore_conflicts=True)

    batches = []
    for pipeline in ("nightly-leads", "weekly-enrichment"):
        for day in range(HISTORY_DAYS):
            finished = start + timedelta(days=day, hours=5)
            batches.append(
                Batch(
                    name=pipeline,
                    job=f"{pipeline}-{day}",
                    started_at=finished - timedelta(hours=1),
                    finished_at=finished,
                    leads=100 + day,
                    cost=Decimal("120.5"),
                    cost_per_lead=Decimal("1.2"),
                    cost_computed_at=finished,
                )
            )
    Batch.objects.bulk_create(batches)

    channel = Channel.objects.create(name="bench email", kind="email", target="ops@example.com")
    levels = ("info", "warning", "critical", "exceeded")
    alerts = Alert.objects.bulk_create(
        Alert(
            key=f"bench:{i}",
            source=AlertSource.RULE,
            scope="global",
            level=levels[i % 4],
            state=AlertState.FIRING if i < 20 else AlertState.RESOLVED,
            title=f"bench alert {i}",
            message="bench",
            first_fired_at=now,
            last_fired_at=now,
        )
        for i in range(40)
    )
    Notification.objects.bulk_create(
        Notification(
            channel=channel,
            alert=alerts[i % len(alerts)],
            kind="firing",
            dedup_key=f"bench:{i}",
            subject="bench",
            text="bench",
            status="pending" if i < 30 else "sent",
        )
        for i in range(60)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {"budgets": BUDGETS, "gpus": GPUS, "gpu_samples": len(samples), "batches": len(batches)}


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costcontrol.settings.local")
    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import Count, Sum
    from django.test import RequestFactory

    from core.models import Team
    from monitoring import metrics
    from monitoring.views import metrics as metrics_view
    from tracking.models import MetricSeries

    budget_path.LOAD_MODELS = bench_models()  # LedgerLoader draws its rows' models from this
    label, deadline = args.worker, args.deadline
    run_id = uuid.uuid4().hex[:12]
    log(f"{label}: migrating a fresh database")
    call_command("migrate", verbosity=0, interactive=False)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            db_version = f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
    else:
        import sqlite3

        db_version = f"SQLite {sqlite3.sqlite_version}"
    teams = [Team.objects.create(name=name).pk for name in budget_path.TEAMS]
    now = datetime.now(UTC)
    world = setup_world(now)
    request = RequestFactory().get("/metrics", REMOTE_ADDR="127.0.0.1")

    def scrape() -> Any:
        metrics.COLLECTOR.clear()
        response = metrics_view(request)
        assert response.status_code == 200, response.status_code
        return response

    def cached_scrape() -> Any:
        return metrics_view(request)

    ref_count = 0

    def reference() -> None:
        nonlocal ref_count
        ref_count += 1
        with transaction.atomic():
            Team.objects.create(name=f"bench-ref-{run_id}-{ref_count}")

    out: dict[str, Any] = {
        "database": connection.vendor,
        "database_version": db_version,
        "debug": settings.DEBUG,
        "world": world,
        "sizes": [],
        "truncated_by_deadline": False,
    }
    # LedgerLoader also recomputes the metric series (tracking.MetricSeries) after each growth.
    loader = LedgerLoader(teams=teams, run_id=run_id, seed=20251123)
    for size in args.sizes:
        log(f"{label}: growing the ledger to {size:,} rows")
        t0 = time.monotonic()
        chunk = 250_000 if connection.vendor == "postgresql" else 200_000
        if not loader.grow_to(size, chunk=chunk, deadline=deadline):
            log(f"{label}: out of time at {loader.rows:,} ledger rows; not measuring {size:,}")
            out["truncated_by_deadline"] = True
            break
        loader.settle()
        load_seconds = time.monotonic() - t0
        consistency = ledger_consistency()
        series = MetricSeries.objects.filter(currency="USD").aggregate(amount=Sum("amount"), rows=Count("pk"))
        # The first scrape of a fresh process: every GPU sample summed once.
        metrics.GPU_IDLE = metrics.GpuIdle()
        t = time.perf_counter_ns()
        response = scrape()
        first_ms = (time.perf_counter_ns() - t) / 1e6
        body = response.content.decode()
        samples_count = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        exported = sum(
            Decimal(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("costcontrol_cost_dollars_total{")
        )
        phase: dict[str, Any] = {
            "ledger_rows": size,
            "load_seconds": load_seconds,
            "consistency": consistency,
            "series_rows": series["rows"],
            "series_equal_ledger": str(series["amount"]) == consistency["ledger_amount"],
            "exported_cost": str(exported),
            "ledger_cost": consistency["ledger_amount"],
            "exposition_bytes": len(response.content),
            "exposition_samples": samples_count,
            "first_scrape_ms": first_ms,
        }
        log(f"{label}: {size:,} rows: {args.warmup} warm-up + {args.samples} scrapes, interleaved reference")
        op, ref, truncated = interleaved(scrape, reference, warmup=args.warmup, samples=args.samples, deadline=deadline)
        phase["scrape"], phase["reference"] = latency_summary(op), latency_summary(ref)
        phase["truncated"] = truncated
        cached, _, _ = interleaved(
            cached_scrape, reference, warmup=1, samples=min(args.samples, 50), deadline=deadline + 30
        )
        phase["cached_scrape"] = latency_summary(cached)
        parts: dict[str, float] = {}
        for name, reader in (
            ("series", metrics.series_families),
            ("budgets", lambda: metrics.budget_families(at=datetime.now(UTC))),
            ("batches", lambda: metrics.batch_families(at=datetime.now(UTC))),
            ("gpu", metrics.gpu_families),
            ("alerts", metrics.alert_families),
        ):
            times = []
            for _ in range(15):
                t = time.perf_counter_ns()
                reader()
                times.append(time.perf_counter_ns() - t)
            parts[name] = statistics.median(times) / 1e6
        phase["parts_ms"] = parts
        out["sizes"].append(phase)
        result_write(args.result_file, out)
        log(
            f"{label}: {size:,} rows: scrape p50 {phase['scrape']['p50_ms']:.1f} ms "
            f"(parts {', '.join(f'{k} {v:.1f}' for k, v in parts.items())})"
        )
    out["series_rows_final"] = MetricSeries.objects.count()
    result_write(args.result_file, out)


def worker_args(args: argparse.Namespace, deadline: float) -> list[str]:
    return [
        "--samples",
        str(args.samples),
        "--warmup",
        str(args.warmup),
        "--sizes",
        ",".join(str(s) for s in args.sizes),
        "--deadline",
        str(deadline),
    ]


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"metrics scrape (GET /metrics, uncached), N={meta['samples']} per size, machine: {meta['cores']} cores, "
        f"Python {meta['python']}, Django {meta['django']}",
        "database    ledger rows  p50 ms  p99 ms  mean ms  cached p50 ms  first ms  ref p50 ms  p50/ref",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"{result['database']:<11} error: {result['error']}")
            continue
        for phase in result["sizes"]:
            s, r, c = phase["scrape"], phase["reference"], phase["cached_scrape"]
            ratio = s["p50_ms"] / r["p50_ms"] if r["p50_ms"] else None
            lines.append(
                f"{result['database']:<11} {phase['ledger_rows']:>11,}  {fmt(s['p50_ms']):>6}  {fmt(s['p99_ms']):>6}"
                f"  {fmt(s['mean_ms']):>7}  {fmt(c['p50_ms']):>13}  {fmt(phase['first_scrape_ms']):>8}"
                f"  {fmt(r['p50_ms']):>10}  {fmt(ratio, 1):>7}"
            )
    verdicts = []
    for result in results:
        if result.get("database") == "postgresql" and len(result.get("sizes", [])) > 1:
            smallest, largest = result["sizes"][0], result["sizes"][-1]
            growth = largest["scrape"]["p50_ms"] / smallest["scrape"]["p50_ms"]
            verdicts.append(
                f"postgresql {largest['ledger_rows']:,} / {smallest['ledger_rows']:,} rows: {growth:.2f} "
                f"-> {'PASS' if growth <= TARGET_METRICS_GROWTH else 'MISS'}"
            )
    lines.append(
        f"target: scrape p50 at the largest ledger / at the smallest <= {TARGET_METRICS_GROWTH:g} on PostgreSQL; "
        + ("; ".join(verdicts) or "not measured on PostgreSQL at two sizes")
    )
    for result in results:
        if "error" in result:
            continue
        world = result["world"]
        lines.append(
            f"  {result['database_version']}: {world['budgets']} budgets, {world['gpus']} GPUs "
            f"({world['gpu_samples']:,} samples), {world['batches']} batches, 50 models"
        )
        for phase in result["sizes"]:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in phase["parts_ms"].items())
            lines.append(
                f"    {phase['ledger_rows']:,} rows (loaded in {phase['load_seconds']:.0f} s): {phase['series_rows']} "
                f"metric series, {phase['exposition_samples']:,} samples / {phase['exposition_bytes'] / 1024:.0f} KiB "
                f"exposition; readers p50 ms: {parts}; exported cost {phase['exported_cost']} = ledger "
                f"{phase['ledger_cost']}: {'yes' if phase['series_equal_ledger'] else 'NO'}"
            )
        if result.get("truncated_by_deadline"):
            lines.append("    (out of time: the larger sizes were not measured)")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100, help="measured scrapes per size (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up scrapes, not counted (default 10)")
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="ledger sizes (10000,1000000)")
    parser.add_argument(
        "--sqlite-sizes", type=parse_sizes, default=None, help="ledger sizes for SQLite (default: the smallest)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the whole run (default 300)")
    parser.add_argument("--worker", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    import django

    started = time.monotonic()
    deadline = time.time() + args.timeout
    database_url = os.environ.get("DATABASE_URL", "")
    has_pg = is_postgresql_url(database_url)
    if not has_pg:
        log("DATABASE_URL is not PostgreSQL: measuring SQLite only (run `make bench` for both)")
    script = Path(__file__).resolve()
    sqlite_args = argparse.Namespace(**{**vars(args), "sizes": args.sqlite_sizes or args.sizes[:1]})
    results = run_on_databases(
        script,
        database_url=database_url,
        with_sqlite=True,
        with_postgresql=has_pg,
        sqlite_worker_args=lambda until: worker_args(sqlite_args, until),
        postgresql_worker_args=lambda until: worker_args(args, until),
        timeout=args.timeout,
        deadline=deadline,
    )
    meta = {
        "samples": args.samples,
        "cores": machine_cores(),
        "python": ".".join(platform.python_version_tuple()[:2]),
        "django": ".".join(str(p) for p in django.VERSION[:2]),
        "seconds": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print(table(results, meta))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    gc.collect()
    sys.exit(main())
