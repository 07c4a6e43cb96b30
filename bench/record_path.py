#!/usr/bin/env python
"""Benchmark of the record path: cost_entry_record latency and cost_entry_record_many throughput.

    make bench                                   # SQLite and PostgreSQL (bin/with-postgres)
    .venv/bin/python bench/record_path.py        # SQLite only (no PostgreSQL in DATABASE_URL)
    ... bench/record_path.py --events 500 --batches 5 --json

Each database is measured in a fresh subprocess of this script, on a fresh database (a temporary
SQLite file; a PostgreSQL database with a unique name created on the server of DATABASE_URL and
dropped at the end), migrated and loaded with prices. Latencies are reported as p50/p99/mean and
compared with a reference measured in the same process, interleaved with the measured calls: a
bare one-row INSERT in its own transaction (Team.objects.create inside transaction.atomic()).
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402 - needs BASE_DIR on sys.path when run as a script
    SETTINGS,
    TARGET_RECORD_P50_RATIO,
    fmt,
    is_postgresql_url,
    latency_summary,
    log,
    machine_cores,
    pg_database_create,
    pg_database_drop,
)
from bench._common import run_worker as _run_worker  # noqa: E402

# The record path's p50 over the reference's p50 (a one-row INSERT in its own transaction), on PostgreSQL.


# The models the events use, with their published prices (USD per token), used only where the
# default catalog (tracking.catalog) is missing or does not price them.
BENCH_MODELS: dict[tuple[str, str], dict[str, str]] = {
    ("openai", "gpt-4o"): {"input_token": "0.0000025", "output_token": "0.00001", "cached_input_token": "0.00000125"},
    ("openai", "gpt-4o-mini"): {
        "input_token": "0.00000015",
        "output_token": "0.0000006",
        "cached_input_token": "0.000000075",
    },
    ("anthropic", "claude-sonnet-4-5"): {
        "input_token": "0.000003",
        "output_token": "0.000015",
        "cached_input_token": "0.0000003",
        "cache_write_token": "0.00000375",
    },
    ("anthropic", "claude-haiku-4-5"): {
        "input_token": "0.000001",
        "output_token": "0.000005",
        "cached_input_token": "0.0000001",
        "cache_write_token": "0.00000125",
    },
}
SERVICES = ("chat-api", "search", "summariser", "support-bot")
FEATURES = ("answer", "rerank", "draft", "classify", "extract")
ENVIRONMENTS = ("prod", "staging")


# --- the worker: one database, in its own process ----------------------------------------------


class EventMaker:
    """Realistic usage events: 4 models of 2 providers, 7 rollup scopes each, unique keys, now."""

    def __init__(self, seed: int) -> None:
        import random

        self.random = random.Random(seed)
        self.models = list(BENCH_MODELS)
        self.operations: dict[tuple[str, str], str] = {pair: "chat" for pair in self.models}
        self.run_id = uuid.uuid4().hex[:12]
        self.count = 0

    def __call__(self) -> dict[str, Any]:
        from django.utils import timezone

        rnd = self.random
        provider, model = self.models[rnd.randrange(len(self.models))]
        self.count += 1
        event: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "operation": self.operations[(provider, model)],
            # global, provider:, model:, service:, subject:, tag:env=, tag:feature= -> 7 scopes
            "service": rnd.choice(SERVICES),
            "subject": f"user-{rnd.randrange(500)}",
            "tags": {"env": rnd.choice(ENVIRONMENTS), "feature": rnd.choice(FEATURES)},
            "input_tokens": rnd.randint(50, 8000),
            "output_tokens": rnd.randint(10, 1500),
            "duration_ms": rnd.randint(150, 12000),
            "idempotency_key": f"bench-{self.run_id}-{self.count}",
            "occurred_at": timezone.now(),
        }
        if rnd.random() < 0.3:
            event["cached_input_tokens"] = rnd.randint(100, 4000)
        return event


def prices_load(maker: EventMaker) -> str:
    """Load the default catalog if tracking.catalog exists; add the bench's prices where it lacks ours."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from tracking.models import Price, PricingStatus
    from tracking.pricing import PriceBook

    notes: list[str] = []
    try:
        from tracking.catalog import price_catalog_load_default  # type: ignore[import-not-found]
    except ImportError as exc:
        notes.append(f"no default catalog ({exc.__class__.__name__}: {exc})")
    else:
        try:
            price_catalog_load_default()
            notes.append(f"default catalog ({Price.objects.count()} prices)")
        except Exception as exc:  # noqa: BLE001 - a broken catalog must not stop the benchmark
            notes.append(f"default catalog failed to load ({exc.__class__.__name__}: {exc})")

    epoch = datetime(2020, 1, 1, tzinfo=UTC)
    sample = {"input_tokens": 1000, "output_tokens": 100, "cached_input_tokens": 100}
    added = []
    for (provider, model), units in BENCH_MODELS.items():
        book = PriceBook.load([(provider, model)])
        chosen = None
        for operation in ("chat", ""):
            quote = book.quote(
                provider=provider, model=model, operation=operation, variant="", at=datetime.now(UTC), quantities=sample
            )
            if quote.status == PricingStatus.PRICED:
                chosen = operation
                break
        if chosen is None:
            for unit, price in units.items():
                Price.objects.get_or_create(
                    provider=provider,
                    model=model,
                    operation="chat",
                    unit=unit,
                    variant="",
                    valid_from=epoch,
                    defaults={"unit_price": Decimal(price), "source": "bench/record_path.py"},
                )
            added.append(f"{provider}/{model}")
            chosen = "chat"
        maker.operations[(provider, model)] = chosen
    if added:
        notes.append("bench prices for " + ", ".join(added))
    return "; ".join(notes)


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS)
    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from core.models import Team
    from tracking.models import CostEntry, PricingStatus, SpendRollup
    from tracking.services import cost_entry_record, cost_entry_record_many

    deadline = args.deadline
    started = time.monotonic()
    label = args.worker
    log(f"{label}: migrating a fresh database")
    call_command("migrate", verbosity=0, interactive=False)
    maker = EventMaker(seed=20251123)
    catalog = prices_load(maker)
    log(f"{label}: prices: {catalog}")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            db_version = f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
    else:
        import sqlite3

        db_version = f"SQLite {sqlite3.sqlite_version}"

    # --- single events, interleaved with the reference ---------------------------------------
    def reference(i: int) -> None:
        with transaction.atomic():
            Team.objects.create(name=f"bench-ref-{maker.run_id}-{i}")

    record_ns: list[int] = []
    reference_ns: list[int] = []
    statuses: dict[str, int] = {}
    total = args.warmup + args.events
    truncated = False
    log(f"{label}: {args.warmup} warm-up + {args.events} single events (cost_entry_record), interleaved reference")
    gc.collect()
    clock = time.perf_counter_ns
    for i in range(total):
        if time.time() > deadline:
            truncated = True
            break
        event = maker()
        # Alternate which goes first so neither always runs on a warmer cache.
        if i % 2:
            t0 = clock()
            reference(i)
            t1 = clock()
            result = cost_entry_record(**event)
            t2 = clock()
            ref, rec = t1 - t0, t2 - t1
        else:
            t0 = clock()
            result = cost_entry_record(**event)
            t1 = clock()
            reference(i)
            t2 = clock()
            rec, ref = t1 - t0, t2 - t1
        if not result.created:
            raise RuntimeError(f"event {i} was not created (duplicate key?)")
        if i >= args.warmup:
            record_ns.append(rec)
            reference_ns.append(ref)
            statuses[result.entry.pricing_status] = statuses.get(result.entry.pricing_status, 0) + 1

    with CaptureQueriesContext(connection) as captured:
        cost_entry_record(**maker())
    queries_per_record = [q["sql"].split()[0].upper() for q in captured.captured_queries]

    # --- the bulk form --------------------------------------------------------------------------
    batch_rates: list[float] = []
    bulk_statuses: dict[str, int] = {}
    log(f"{label}: 1 warm-up + {args.batches} batches of {args.batch_size} (cost_entry_record_many)")
    for b in range(1 + args.batches):
        if time.time() > deadline:
            truncated = True
            break
        batch = [maker() for _ in range(args.batch_size)]
        t0 = clock()
        results = cost_entry_record_many(batch)
        elapsed = clock() - t0
        for r in results:
            bulk_statuses[r.status] = bulk_statuses.get(r.status, 0) + 1
        if any(r.status != "accepted" for r in results):
            raise RuntimeError(f"batch {b}: not all accepted: {bulk_statuses}")
        if b > 0:
            batch_rates.append(args.batch_size / (elapsed / 1e9))

    # --- consistency: what was measured really was written ---------------------------------------
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM {CostEntry._meta.db_table}")
        entries, ledger_amount = cursor.fetchone()
        cursor.execute(
            f"SELECT COALESCE(SUM(events), 0), COALESCE(SUM(amount), 0) FROM {SpendRollup._meta.db_table} "
            "WHERE scope = 'global'"
        )
        rollup_events, rollup_amount = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*) FROM {SpendRollup._meta.db_table}")
        rollup_rows = cursor.fetchone()[0]
    consistent = int(entries) == int(rollup_events) and int(ledger_amount) == int(rollup_amount)

    record = latency_summary(record_ns)
    ref = latency_summary(reference_ns)
    out = {
        "database": connection.vendor,
        "database_version": db_version,
        "debug": settings.DEBUG,
        "catalog": catalog,
        "record": record,
        "reference": ref,
        "p50_over_reference": record["p50_ms"] / ref["p50_ms"] if ref["n"] else None,
        "record_pricing_status": statuses,
        "queries_per_record": queries_per_record,
        "bulk": {
            "batch_size": args.batch_size,
            "batches": len(batch_rates),
            "median_events_per_s": statistics.median(batch_rates) if batch_rates else None,
            "min_events_per_s": min(batch_rates) if batch_rates else None,
            "max_events_per_s": max(batch_rates) if batch_rates else None,
        },
        "consistency": {
            "entries": int(entries),
            "rollup_rows": int(rollup_rows),
            "global_rollup_events": int(rollup_events),
            "ledger_equals_rollups": consistent,
        },
        "truncated_by_deadline": truncated,
        "seconds": time.monotonic() - started,
    }
    if statuses.get(PricingStatus.UNPRICED):
        log(f"{label}: WARNING {statuses[PricingStatus.UNPRICED]} events were unpriced")
    if not consistent:
        log(f"{label}: WARNING ledger and global rollup disagree: {out['consistency']}")
    connection.close()
    Path(args.result_file).write_text(json.dumps(out))


# --- the driver: fresh databases, one subprocess each, the table ------------------------------


def run_worker(label: str, database_url: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    worker_args = [
        "--deadline",
        # Stop measuring early enough to leave time for the last batch and the consistency check.
        str(deadline - min(15.0, 0.2 * max(0.0, deadline - time.time()))),
        "--events",
        str(args.events),
        "--warmup",
        str(args.warmup),
        "--batches",
        str(args.batches),
        "--batch-size",
        str(args.batch_size),
    ]
    return _run_worker(Path(__file__).resolve(), label, database_url, worker_args, deadline)


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"record path (cost_entry_record), N={meta['events']}, machine: {meta['cores']} cores, "
        f"Python {meta['python']}, Django {meta['django']}",
        f"{'database':<12} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'ref p50 ms':>11} {'p50/ref':>8}   "
        f"bulk ev/s (batches of {meta['batch_size']})",
    ]
    for r in results:
        name = "postgresql" if r["database"] == "postgresql" else r["database"]
        if "error" in r:
            lines.append(f"{name:<12} not measured: {r['error']}")
            continue
        rec, ref, bulk = r["record"], r["reference"], r["bulk"]
        rate = bulk["median_events_per_s"]
        lines.append(
            f"{name:<12} {fmt(rec['p50_ms']):>7} {fmt(rec['p99_ms']):>7} {fmt(rec['mean_ms']):>8} "
            f"{fmt(ref['p50_ms']):>11} {fmt(r['p50_over_reference'], 1):>8}   "
            + ("-" if rate is None else f"{rate:,.0f}")
        )
    pg = next((r for r in results if r["database"] == "postgresql"), None)
    target = f"target: p50 <= {TARGET_RECORD_P50_RATIO:g} x the reference's p50 on PostgreSQL -> "
    if pg is None:
        target += "NOT MEASURED (DATABASE_URL is not PostgreSQL; `make bench` starts one)"
    elif "error" in pg:
        target += "NOT MEASURED (" + pg["error"] + ")"
    else:
        target += "PASS" if pg["p50_over_reference"] <= TARGET_RECORD_P50_RATIO else "MISS"
        if pg.get("truncated_by_deadline"):
            target += " (run cut short by the time limit: fewer events than asked)"
    lines.append(target)
    for r in results:
        if "error" in r:
            continue
        c = r["consistency"]
        lines.append(
            f"  {r['database_version']}: {r['record']['n']} events, {len(r['queries_per_record'])} queries/record "
            f"({' '.join(r['queries_per_record'])}), ref p99 {fmt(r['reference']['p99_ms'])} ms, "
            f"bulk min-max {r['bulk']['min_events_per_s'] or 0:,.0f}-{r['bulk']['max_events_per_s'] or 0:,.0f} ev/s, "
            f"ledger = rollups: {'yes' if c['ledger_equals_rollups'] else 'NO'}, {r['process_seconds']:.0f} s"
            + (" (CUT SHORT by --timeout)" if r.get("truncated_by_deadline") else "")
        )
    measured = [r for r in results if "error" not in r]
    if measured:
        lines.append(f"  prices: {measured[0]['catalog']}; DEBUG={measured[0]['debug']}")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="measured single events (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up single events, not counted (default 200)")
    parser.add_argument("--batches", type=int, default=20, help="measured bulk batches (default 20)")
    parser.add_argument("--batch-size", type=int, default=500, help="events per bulk batch (default 500)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument(
        "--timeout", type=float, default=170, help="seconds for the whole run; each database stops by then"
    )
    parser.add_argument("--worker", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.events, args.batches, args.batch_size) < 1 or args.warmup < 0:
        parser.error("--events, --batches and --batch-size must be >= 1, --warmup >= 0")

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

    results: list[dict[str, Any]] = []
    tmpdir = tempfile.mkdtemp(prefix="costcontrol-bench-")
    try:
        # SQLite gets a share of the time so that PostgreSQL always has its turn.
        sqlite_deadline = time.time() + args.timeout * 0.5 if has_pg else deadline
        results.append(run_worker("sqlite", f"sqlite:///{tmpdir}/bench.sqlite3", args, sqlite_deadline))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if has_pg:
        name = None
        try:
            name, pg_url = pg_database_create(database_url)
            log(f"postgresql: created database {name}")
            results.append(run_worker("postgresql", pg_url, args, deadline))
        except Exception as exc:  # noqa: BLE001 - report, do not hide the SQLite figures
            results.append({"database": "postgresql", "error": f"{exc.__class__.__name__}: {exc}"})
        finally:
            if name:
                try:
                    pg_database_drop(database_url, name)
                    log(f"postgresql: dropped database {name}")
                except Exception as exc:  # noqa: BLE001
                    log(f"postgresql: could not drop database {name}: {exc}")

    cores = machine_cores()
    meta = {
        "events": args.events,
        "warmup": args.warmup,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "cores": cores,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "django": ".".join(str(p) for p in django.VERSION[:2]),
        "postgresql_measured": has_pg,
        "targets": {"postgresql_p50_over_reference": TARGET_RECORD_P50_RATIO},
        "seconds": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print(table(results, meta))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
