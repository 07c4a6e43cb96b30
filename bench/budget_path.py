#!/usr/bin/env python
"""Benchmark of the budget path: budget_check and reserve+settle latency, with a small and a large ledger.

    make bench                                   # both benchmarks, SQLite and PostgreSQL (bin/with-postgres)
    bin/with-postgres .venv/bin/python bench/budget_path.py
    .venv/bin/python bench/budget_path.py        # SQLite only (no PostgreSQL in DATABASE_URL)
    ... bench/budget_path.py --samples 500 --sizes 10000,100000 --json

Each database is measured in a fresh subprocess of this script, on a fresh database (a temporary
SQLite file; a PostgreSQL database with a unique name created on the server of DATABASE_URL and
dropped at the end), migrated, with two monthly budgets: a global one (soft) and a hard-limit one
on model:gpt-4o. The ledger (tracking_costentry) and its hourly rollups (tracking_spendrollup) are
loaded in bulk, without the record path, to the first ledger size; both operations are measured;
the same database then grows to the next size and they are measured again. Latencies are reported
as p50/p99/mean and compared with a reference measured in the same process, interleaved with the
measured calls: a bare one-row INSERT in its own transaction (Team.objects.create inside
transaction.atomic()). See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402 - needs BASE_DIR on sys.path when run as a script
    TARGET_CHECK_GROWTH,
    TARGET_CHECK_P50_RATIO,
    TARGET_RESERVE_SETTLE_P50_RATIO,
    fmt,
    is_postgresql_url,
    latency_summary,
    log,
    machine_cores,
    result_write,
    run_on_databases,
)
from bench.record_path import BENCH_MODELS, ENVIRONMENTS, FEATURES, SERVICES  # noqa: E402

DEFAULT_SIZES = (10_000, 1_000_000)
CHECK_SCOPE = "model:gpt-4o"
CHECK_AMOUNT = Decimal("0.01")
SETTLE_ACTUAL = Decimal("0.008")
TEAMS = ("ml-platform", "search", "support")
SUBJECTS = 500
JOBS = 200
# A ledger this small or smaller is also audited with the write path's own scope and counter
# functions (tracking.selectors.ledger_differences), which checks the loader's rollup SQL.
AUDIT_MAX_ROWS = 50_000
PROFILE_CALLS = 200

# Nano-USD per token (MoneyField stores nano-units) of the models the ledger uses, from the
# same price list as record_path.py: input, output, cached input.
LOAD_MODELS: tuple[tuple[str, str, int, int, int], ...] = tuple(
    (
        provider,
        model,
        int(Decimal(units["input_token"]).scaleb(9)),
        int(Decimal(units["output_token"]).scaleb(9)),
        int(Decimal(units["cached_input_token"]).scaleb(9)),
    )
    for (provider, model), units in BENCH_MODELS.items()
)


# --- loading the ledger and its rollups ---------------------------------------------------------------

# PostgreSQL: the values the loader draws for rows lo..hi of the ledger, by column, as SQL over `y`
# (below). Every other column of CostEntry (its concrete fields, read from _meta) gets its field's
# default, prepared by the field: a column added to the model is loaded without touching this file.
PG_DRAWN = {
    "occurred_at": "y.at",
    "recorded_at": "y.at + y.lag * interval '1 second'",
    "provider": "(%(providers)s::text[])[y.mi]",
    "model": "(%(models)s::text[])[y.mi]",
    "operation": "%(operation)s",
    "service": "y.service",
    "subject": "y.subject",
    "job": "y.job",
    "team_id": "y.team_id",
    "tags": "y.tags",
    "input_tokens": "y.input_tokens",
    "output_tokens": "y.output_tokens",
    "cached_input_tokens": "y.cached",
    "amount": "(y.input_tokens - y.cached) * (%(input_nano)s::bigint[])[y.mi]"
    " + y.cached * (%(cached_nano)s::bigint[])[y.mi] + y.output_tokens * (%(output_nano)s::bigint[])[y.mi]",
    "pricing_status": "%(pricing_status)s",
    "outcome": "y.outcome",
    "duration_ms": "y.duration_ms",
    "idempotency_key": "%(key_prefix)s || y.i",
}
OPERATION = "chat"

# The innermost level draws the random numbers (OFFSET 0 keeps the planner from merging it, so
# each random() is drawn once per row), the middle one applies the outcome (errors bill no output,
# rate-limited calls nothing); occurred_at is uniform over [t0, t1).
PG_LEDGER_INSERT = """
INSERT INTO {table} ({columns})
SELECT {values}
FROM (
    SELECT x.i, x.at, x.lag, x.mi, x.service, x.subject, x.job, x.team_id, x.tags, x.duration_ms,
           CASE WHEN x.r_outcome < 0.02 THEN 'error' WHEN x.r_outcome < 0.03 THEN 'rate_limited'
                ELSE 'success' END AS outcome,
           CASE WHEN x.r_outcome >= 0.02 AND x.r_outcome < 0.03 THEN 0 ELSE x.input_tokens END AS input_tokens,
           CASE WHEN x.r_outcome < 0.03 THEN 0 ELSE x.output_tokens END AS output_tokens,
           CASE WHEN x.r_outcome >= 0.02 AND x.r_outcome < 0.03 THEN 0
                ELSE LEAST(x.cached_raw, x.input_tokens) END AS cached
    FROM (
        SELECT g AS i,
               %(t0)s::timestamptz + (%(t1)s::timestamptz - %(t0)s::timestamptz) * random() AS at,
               random() * 2 AS lag,
               1 + floor(random() * %(n_models)s)::int AS mi,
               (%(services)s::text[])[1 + floor(random() * %(n_services)s)::int] AS service,
               'user-' || floor(random() * %(subjects)s)::int AS subject,
               CASE WHEN random() < 0.1 THEN 'job-' || floor(random() * %(jobs)s)::int ELSE '' END AS job,
               CASE WHEN random() < 0.5
                    THEN (%(teams)s::bigint[])[1 + floor(random() * %(n_teams)s)::int] END AS team_id,
               jsonb_build_object(
                   'env', CASE WHEN random() < 0.8 THEN %(env_main)s ELSE %(env_other)s END,
                   'feature', (%(features)s::text[])[1 + floor(random() * %(n_features)s)::int]
               ) AS tags,
               50 + floor(random() * 7951)::bigint AS input_tokens,
               10 + floor(random() * 1491)::bigint AS output_tokens,
               CASE WHEN random() < 0.3 THEN 100 + floor(random() * 3901)::bigint ELSE 0 END AS cached_raw,
               random() AS r_outcome,
               150 + floor(random() * 11851)::int AS duration_ms
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
        OFFSET 0
    ) x
) y
"""

# Both databases: add ledger rows lo < id <= hi to their hourly rollups, for every scope
# tracking.rollups.entry_scopes derives (global, provider:, model:, operation:, service:, subject:,
# job:, team:, tag:K=V), with the counters of entry_counters; an existing (scope, hour) row is added
# to. The audit at the small size (ledger_differences) says if entry_scopes has changed since.
# New rows go in hour order, as the record path writes them (the heap's layout is production's).
# What each rollup counter sums, as entry_counters computes it; the token counters (TOKEN_FIELDS)
# sum their ledger column.
COUNTER_SUMS = {
    "amount": "SUM(amount)",
    "events": "SUM(CASE WHEN corrects_id IS NULL THEN 1 ELSE 0 END)",
    "errors": "SUM(CASE WHEN corrects_id IS NULL AND outcome = 'error' THEN 1 ELSE 0 END)",
    "rate_limited": "SUM(CASE WHEN corrects_id IS NULL AND outcome = 'rate_limited' THEN 1 ELSE 0 END)",
    "unpriced": "SUM(CASE WHEN corrects_id IS NULL AND pricing_status = 'unpriced' THEN 1 ELSE 0 END)",
}
ROLLUP_UPSERT = """
WITH scoped AS (
    SELECT CASE k.n
               WHEN 1 THEN 'global'
               WHEN 2 THEN 'provider:' || e.provider
               WHEN 3 THEN 'model:' || e.model
               WHEN 4 THEN CASE WHEN e.service <> '' THEN 'service:' || e.service END
               WHEN 5 THEN CASE WHEN e.subject <> '' THEN 'subject:' || e.subject END
               WHEN 6 THEN CASE WHEN e.job <> '' THEN 'job:' || e.job END
               WHEN 7 THEN 'team:' || t.name
               WHEN 8 THEN CASE WHEN e.operation <> '' THEN 'operation:' || e.operation END
           END AS scope,
           {entry_columns}
    FROM {ledger} e
    LEFT JOIN {team} t ON t.id = e.team_id
    CROSS JOIN (SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
                UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8) k
    WHERE e.id > %(lo)s AND e.id <= %(hi)s
    UNION ALL
    SELECT 'tag:' || kv.key || '=' || kv.value, {entry_columns}
    FROM {ledger} e, {json_each}(e.tags) kv
    WHERE e.id > %(lo)s AND e.id <= %(hi)s
)
INSERT INTO {hourly} (scope, bucket, currency, {counters})
SELECT scope, {bucket}, currency, {sums}
FROM scoped
WHERE scope IS NOT NULL
GROUP BY 1, 2, 3
ORDER BY 2, 1
ON CONFLICT (scope, bucket, currency) DO UPDATE SET {added}
"""
# Then the daily rollups, recomputed from the hourly ones (the record path writes both together).
DAILY_REBUILD = (
    "DELETE FROM {daily}",
    """INSERT INTO {daily} (scope, bucket, currency, {counters})
SELECT scope, {day}, currency, {counter_sums} FROM {hourly} GROUP BY 1, 2, 3 ORDER BY 2, 1""",
)
ROLLUP_DIALECT = {
    "postgresql": {
        "json_each": "jsonb_each_text",
        "bucket": "date_trunc('hour', occurred_at, 'UTC')",
        "day": "date_trunc('day', bucket, 'UTC')",
    },
    # Django stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC); a bucket is the hour's start.
    "sqlite": {
        "json_each": "json_each",
        "bucket": "strftime('%%Y-%%m-%%d %%H:00:00', occurred_at)",
        "day": "strftime('%%Y-%%m-%%d 00:00:00', bucket)",
    },
}


def rollup_sql(vendor: str) -> dict[str, Any]:
    """The loader's rollup statements for `vendor`, their tables and counters read from the models."""
    from core.models import Team
    from tracking.models import ROLLUP_COUNTERS, TOKEN_FIELDS, CostEntry, SpendRollup, SpendRollupDay

    sums = []
    for counter in ROLLUP_COUNTERS:
        if counter in COUNTER_SUMS:
            sums.append(COUNTER_SUMS[counter])
        elif counter in TOKEN_FIELDS:
            sums.append(f"SUM({counter})")
        else:
            raise RuntimeError(f"rollup counter {counter!r} is new: say what it sums in bench/budget_path.py")
    hourly, daily = SpendRollup._meta.db_table, SpendRollupDay._meta.db_table
    names = {
        **ROLLUP_DIALECT[vendor],
        "ledger": CostEntry._meta.db_table,
        "team": Team._meta.db_table,
        "hourly": hourly,
        "daily": daily,
        "counters": ", ".join(ROLLUP_COUNTERS),
        "counter_sums": ", ".join(f"SUM({c})" for c in ROLLUP_COUNTERS),
        "sums": ", ".join(sums),
        "added": ", ".join(f"{c} = {hourly}.{c} + excluded.{c}" for c in ROLLUP_COUNTERS),
        "entry_columns": ", ".join(
            f"e.{c}"
            for c in ("occurred_at", "currency", "amount", "corrects_id", "outcome", "pricing_status", *TOKEN_FIELDS)
        ),
    }
    return {
        "upsert": ROLLUP_UPSERT.format(**names),
        "daily": [statement.format(**names) for statement in DAILY_REBUILD],
    }


def ledger_fields() -> list[Any]:
    """The ledger's columns: CostEntry's concrete fields but its primary key."""
    from tracking.models import CostEntry

    return [f for f in CostEntry._meta.concrete_fields if not f.primary_key]


def load_window(now: datetime) -> tuple[datetime, datetime]:
    """[first day of the month two months back, now): the current month so far and the two before it."""
    index = now.year * 12 + now.month - 1 - 2
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC), now


# PostgreSQL, with LedgerLoader(parts=...): prices_used as the write path's quote writes it (tracking.pricing:
# a part per unit with a quantity, {price_id, unit_price, quantity, amount, service_tier, above_tokens,
# valid_from}), each part the model's template (the quote's part, less quantity and amount) and these two.
PG_PRICED_UNITS = (  # unit, its quantity over `y` (the loader's input_tokens count the cached ones too)
    ("input_token", "y.input_tokens - y.cached"),
    ("cached_input_token", "y.cached"),
    ("output_token", "y.output_tokens"),
)
PG_PRICES_USED = (
    "jsonb_strip_nulls(jsonb_build_object("
    + ", ".join(
        f"'{unit}', CASE WHEN {q} > 0 THEN ((%(part_{unit})s::text[])[y.mi])::jsonb || jsonb_build_object("
        f"'quantity', ({q})::text, 'amount', "
        f"trim_scale(({q}) * (((%(part_{unit})s::text[])[y.mi])::jsonb ->> 'unit_price')::numeric)::text) END"
        for unit, q in PG_PRICED_UNITS
    )
    + "))"
)


class LedgerLoader:
    """Grows the ledger to a given number of rows, in chunks, and adds the new rows to the rollups.

    `window`: [t0, t1) of occurred_at (default load_window). `parts` (PostgreSQL): each LOAD_MODELS model's
    prices_used part template per unit of PG_PRICED_UNITS, {(provider, model): {unit: part}}, the quote's
    part less quantity and amount: the rows get prices_used as the write path fills it, and their amounts
    from the parts' unit prices (default: no prices_used, amounts from LOAD_MODELS).
    """

    def __init__(
        self,
        *,
        teams: list[int],
        run_id: str,
        seed: int,
        window: tuple[datetime, datetime] | None = None,
        parts: dict[tuple[str, str], dict[str, dict[str, Any]]] | None = None,
    ) -> None:
        from django.db import connection

        self.connection = connection
        self.vendor = connection.vendor
        if parts is not None and self.vendor != "postgresql":
            raise ValueError("LedgerLoader(parts=...) is PostgreSQL only")
        self.teams = teams
        self.window = window
        self.parts = parts
        self.key_prefix = f"bench-load-{run_id}-"
        self.seed = seed
        self.rows = 0
        self.last_id = 0  # ledger rows with id <= last_id are in the rollups
        self.sql = rollup_sql(self.vendor)
        self.method = (
            "INSERT ... SELECT FROM generate_series + INSERT ... SELECT ... GROUP BY ... ON CONFLICT"
            if self.vendor == "postgresql"
            else "bulk_create (Python rows) + INSERT ... SELECT ... GROUP BY ... ON CONFLICT"
        )

    def grow_to(self, target: int, *, chunk: int, deadline: float) -> bool:
        """Add rows until the ledger has `target`; False if the deadline stopped it short."""
        from django.db.models import Max

        from tracking.models import CostEntry, MetricSeries

        t0, t1 = self.window or load_window(datetime.now(UTC))
        with self.connection.cursor() as cursor:
            if self.vendor == "postgresql":
                # Loader-only settings of this session (the grouping of millions of scope rows).
                cursor.execute("SET work_mem = '256MB'")
                cursor.execute("SET maintenance_work_mem = '256MB'")
            try:
                while self.rows < target:
                    if time.time() > deadline:
                        return False
                    count = min(chunk, target - self.rows)
                    self._ledger_insert(cursor, self.rows + 1, self.rows + count, t0, t1)
                    self.rows += count
                    new_last = CostEntry.objects.aggregate(last=Max("id"))["last"]
                    cursor.execute(self.sql["upsert"], {"lo": self.last_id, "hi": new_last})
                    self.last_id = new_last
                for statement in self.sql["daily"]:
                    cursor.execute(statement, [])
                # And the metrics' lifetime series, recomputed from the whole ledger with the SQL
                # migration tracking 0008 backfills an existing ledger with.
                migration = importlib.import_module("tracking.migrations.0008_metric_series")
                MetricSeries.objects.all().delete()
                cursor.execute(migration.backfill_sql())
            finally:
                if self.vendor == "postgresql":
                    cursor.execute("RESET work_mem")
                    cursor.execute("RESET maintenance_work_mem")
        return True

    def _ledger_insert(self, cursor: Any, lo: int, hi: int, t0: datetime, t1: datetime) -> None:
        from tracking.models import CostEntry, PricingStatus

        if self.vendor == "postgresql":
            fields = ledger_fields()
            drawn = PG_DRAWN if self.parts is None else {**PG_DRAWN, "prices_used": PG_PRICES_USED}
            missing = set(drawn) - {f.column for f in fields}
            if missing:
                raise RuntimeError(f"CostEntry has no column {', '.join(sorted(missing))}: update bench/budget_path.py")
            values, defaults = [], {}
            for field in fields:
                if field.column in drawn:
                    values.append(drawn[field.column])
                    continue
                default = field.get_default()
                if default is None and not field.null:
                    raise RuntimeError(f"CostEntry.{field.name} has no default: draw it in bench/budget_path.py")
                defaults[f"default_{field.column}"] = field.get_db_prep_save(default, self.connection)
                values.append(f"%(default_{field.column})s")
            sql = PG_LEDGER_INSERT.format(
                table=CostEntry._meta.db_table, columns=", ".join(f.column for f in fields), values=", ".join(values)
            )
            # setseed: the same ledger every run; a different seed for each chunk (rows are not repeated).
            cursor.execute("SELECT setseed(%s)", [random.Random(self.seed + lo).uniform(-1, 1)])
            cursor.execute(
                sql,
                {
                    **defaults,
                    "lo": lo,
                    "hi": hi,
                    "t0": t0,
                    "t1": t1,
                    "key_prefix": self.key_prefix,
                    "operation": OPERATION,
                    "pricing_status": PricingStatus.PRICED.value,
                    "providers": [m[0] for m in LOAD_MODELS],
                    "models": [m[1] for m in LOAD_MODELS],
                    **self._prices(),
                    "n_models": len(LOAD_MODELS),
                    "services": list(SERVICES),
                    "n_services": len(SERVICES),
                    "subjects": SUBJECTS,
                    "jobs": JOBS,
                    "teams": self.teams,
                    "n_teams": len(self.teams),
                    "env_main": ENVIRONMENTS[0],
                    "env_other": ENVIRONMENTS[1],
                    "features": list(FEATURES),
                    "n_features": len(FEATURES),
                },
            )
            return
        # SQLite: the same distribution, drawn in Python, written with bulk_create.
        from datetime import timedelta

        rnd = random.Random(self.seed + lo)
        span = (t1 - t0).total_seconds()
        batch: list[CostEntry] = []
        for i in range(lo, hi + 1):
            at = t0 + timedelta(seconds=span * rnd.random())
            provider, model, input_nano, output_nano, cached_nano = LOAD_MODELS[rnd.randrange(len(LOAD_MODELS))]
            input_tokens = rnd.randint(50, 8000)
            output_tokens = rnd.randint(10, 1500)
            cached = min(rnd.randint(100, 4000), input_tokens) if rnd.random() < 0.3 else 0
            r_outcome = rnd.random()
            outcome = "error" if r_outcome < 0.02 else "rate_limited" if r_outcome < 0.03 else "success"
            if outcome == "rate_limited":
                input_tokens = cached = 0
            if outcome != "success":
                output_tokens = 0
            nanos = (input_tokens - cached) * input_nano + cached * cached_nano + output_tokens * output_nano
            batch.append(
                CostEntry(
                    occurred_at=at,
                    recorded_at=at + timedelta(seconds=2 * rnd.random()),
                    provider=provider,
                    model=model,
                    operation=OPERATION,
                    service=rnd.choice(SERVICES),
                    subject=f"user-{rnd.randrange(SUBJECTS)}",
                    job=f"job-{rnd.randrange(JOBS)}" if rnd.random() < 0.1 else "",
                    team_id=rnd.choice(self.teams) if rnd.random() < 0.5 else None,
                    tags={
                        "env": ENVIRONMENTS[0] if rnd.random() < 0.8 else ENVIRONMENTS[1],
                        "feature": rnd.choice(FEATURES),
                    },
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cached_input_tokens=cached,
                    amount=Decimal(nanos).scaleb(-9),
                    pricing_status=PricingStatus.PRICED,
                    outcome=outcome,
                    duration_ms=rnd.randint(150, 12000),
                    idempotency_key=f"{self.key_prefix}{i}",
                )
            )
        CostEntry.objects.bulk_create(batch, batch_size=2000)

    def _prices(self) -> dict[str, list[Any]]:
        """The PostgreSQL loader's price parameters: nano-USD per token of each model (and its part templates)."""
        if self.parts is None:
            return {
                "input_nano": [m[2] for m in LOAD_MODELS],
                "output_nano": [m[3] for m in LOAD_MODELS],
                "cached_nano": [m[4] for m in LOAD_MODELS],
            }
        out: dict[str, list[Any]] = {}
        for unit, key in (
            ("input_token", "input_nano"),
            ("output_token", "output_nano"),
            ("cached_input_token", "cached_nano"),
        ):
            templates = [self.parts[(m[0], m[1])][unit] for m in LOAD_MODELS]
            nanos = [Decimal(t["unit_price"]).scaleb(9) for t in templates]
            if any(n != n.to_integral_value() for n in nanos):
                raise ValueError(f"a {unit} price is not a whole number of nano-USD: the loader's amounts would round")
            out[key] = [int(n) for n in nanos]
            out[f"part_{unit}"] = [json.dumps(t) for t in templates]
        return out

    def settle(self) -> None:
        """After a load: statistics (PostgreSQL) and a clean WAL, so measuring does not pay for loading."""
        from tracking.models import CostEntry, SpendRollup, SpendRollupDay

        with self.connection.cursor() as cursor:
            if self.vendor == "postgresql":
                # VACUUM: the visibility map a long-lived table has (index-only scans) and no autovacuum
                # of the freshly inserted rows in the middle of the measurement; ANALYZE: statistics.
                for model in (CostEntry, SpendRollup, SpendRollupDay):
                    cursor.execute(f"VACUUM (ANALYZE) {model._meta.db_table}")
                cursor.execute("ANALYZE")
                try:
                    cursor.execute("CHECKPOINT")
                except Exception as exc:  # noqa: BLE001 - needs superuser or pg_checkpoint; only a nicety
                    log(f"postgresql: no CHECKPOINT after loading ({exc.__class__.__name__})")
            else:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def ledger_consistency() -> dict[str, Any]:
    """Count and sum of the ledger against the `global` rollups' events and amount."""
    from django.db.models import Count, Sum

    from core.money import ZERO
    from tracking.models import CostEntry, SpendRollup

    ledger = CostEntry.objects.aggregate(entries=Count("id"), amount=Sum("amount"))
    rollups = SpendRollup.objects.filter(scope="global").aggregate(events=Sum("events"), amount=Sum("amount"))
    entries, amount = ledger["entries"], ledger["amount"] or ZERO
    return {
        "entries": entries,
        "ledger_amount": str(amount),
        "global_rollup_events": rollups["events"] or 0,
        "global_rollup_amount": str(rollups["amount"] or ZERO),
        "rollup_rows": SpendRollup.objects.count(),
        "ledger_equals_rollups": entries == (rollups["events"] or 0) and amount == (rollups["amount"] or ZERO),
    }


# --- measuring -----------------------------------------------------------------------------------------


def interleaved(
    operation: Callable[[], Any], reference: Callable[[], Any], *, warmup: int, samples: int, deadline: float
) -> tuple[list[int], list[int], bool]:
    """Time `operation` and `reference` alternately (which goes first alternates); gc off while timing."""
    op_ns: list[int] = []
    ref_ns: list[int] = []
    clock = time.perf_counter_ns
    truncated = False
    gc.collect()
    gc.disable()
    try:
        for i in range(warmup + samples):
            if time.time() > deadline:
                truncated = True
                break
            if i % 2:
                t0 = clock()
                reference()
                t1 = clock()
                operation()
                t2 = clock()
                ref, op = t1 - t0, t2 - t1
            else:
                t0 = clock()
                operation()
                t1 = clock()
                reference()
                t2 = clock()
                op, ref = t1 - t0, t2 - t1
            if i >= warmup:
                op_ns.append(op)
                ref_ns.append(ref)
    finally:
        gc.enable()
    return op_ns, ref_ns, truncated


_TABLE_RE = re.compile(r'\b(?:FROM|INTO|JOIN|(?<!FOR )UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


def statement_label(sql: str) -> str:
    """SELECT/INSERT/... and the tables named (in order of appearance), with FOR UPDATE and SUM marked."""
    words = sql.split()
    verb = words[0].upper() if words else "?"
    if verb in {"SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT"}:
        return verb
    tables = list(dict.fromkeys(m.group(1) for m in _TABLE_RE.finditer(sql)))
    label = verb
    if tables:
        label += " " + (tables[0] if len(tables) == 1 else "[" + "+".join(tables) + "]")
    upper = sql.upper()
    if "SUM(" in upper:
        label += " SUM"
    if "FOR UPDATE" in upper:
        label += " FOR UPDATE"
    return label


def statement_profile(operation: Callable[[], Any], calls: int) -> dict[str, Any]:
    """Median time per statement of `operation`, in order, over `calls` calls (django execute_wrapper)."""
    from django.db import connection

    clock = time.perf_counter_ns
    sequences: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = clock()
        try:
            return execute(sql, params, many, context)
        finally:
            current.append((statement_label(sql), clock() - t0))

    totals: list[int] = []
    with connection.execute_wrapper(wrapper):
        for _ in range(calls):
            current.clear()
            t0 = clock()
            operation()
            totals.append(clock() - t0)
            sequences.append(list(current))
    shapes = Counter(tuple(label for label, _ in seq) for seq in sequences)
    shape, _ = shapes.most_common(1)[0]
    same = [seq for seq in sequences if tuple(label for label, _ in seq) == shape]
    statements = [
        {"label": label, "median_ms": statistics.median(seq[i][1] for seq in same) / 1e6}
        for i, label in enumerate(shape)
    ]
    return {
        "calls": len(same),
        "call_median_ms": statistics.median(totals) / 1e6,
        "statements": statements,
        "statements_ms": sum(s["median_ms"] for s in statements),
    }


_PLAN_TIME_RE = re.compile(r"^(Planning|Execution) Time: ([0-9.]+) ms")
_PLAN_BUFFERS_RE = re.compile(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?")


def explain_reads(captured_sql: list[str]) -> list[dict[str, Any]]:
    """PostgreSQL: EXPLAIN (ANALYZE, BUFFERS) of the captured reads that sum rollups (not the locking ones)."""
    from django.db import connection

    plans = []
    for sql in captured_sql:
        upper = sql.upper()
        # Only reads: EXPLAIN ANALYZE runs the statement (reserve's check-and-hold inserts).
        reads = upper.lstrip().startswith(("SELECT", "WITH")) and not any(w in upper for w in ("INSERT ", "UPDATE "))
        if not reads or "SUM(" not in upper or "FOR UPDATE" in upper:
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            lines = [row[0] for row in cursor.fetchall()]
        plan: dict[str, Any] = {"label": statement_label(sql), "plan": lines}
        for line in lines:
            if match := _PLAN_TIME_RE.match(line.strip()):
                plan[f"{match.group(1).lower()}_ms"] = float(match.group(2))
        # The first Buffers line is the top node's: the statement's total.
        for line in lines:
            if match := _PLAN_BUFFERS_RE.search(line):
                plan["shared_hit"] = int(match.group(1) or 0)
                plan["shared_read"] = int(match.group(2) or 0)
                break
        plans.append(plan)
    return plans


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costcontrol.settings.local")
    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from budgets.models import Budget
    from budgets.selectors import budget_check
    from budgets.services import budget_reserve, reservation_settle
    from core.models import Team

    started = time.monotonic()
    deadline = args.deadline
    label = args.worker
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

    teams = [Team.objects.create(name=name).pk for name in TEAMS]
    for budget in (
        Budget(name="Global monthly", scope="global", amount=Decimal("50000"), period="monthly", hard_limit=False),
        Budget(
            name="gpt-4o monthly (hard)",
            scope=CHECK_SCOPE,
            amount=Decimal("1000000000"),
            period="monthly",
            hard_limit=True,
        ),
    ):
        budget.full_clean()
        budget.save()

    def check() -> Any:
        return budget_check(scope=CHECK_SCOPE, amount=CHECK_AMOUNT)

    def reserve_settle() -> Any:
        reservations = budget_reserve(scopes=[CHECK_SCOPE], amount=CHECK_AMOUNT)
        for reservation in reservations:
            reservation_settle(reservation=reservation, actual=SETTLE_ACTUAL)
        return reservations

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
        "time_zone": settings.TIME_ZONE,
        "sizes": [],
        "truncated_by_deadline": False,
    }
    loader = LedgerLoader(teams=teams, run_id=run_id, seed=20251123)
    out["loader"] = loader.method
    sizes = args.sizes
    for index, size in enumerate(sizes):
        last = index == len(sizes) - 1
        log(f"{label}: growing the ledger to {size:,} rows ({loader.method.split(' + ')[0]})")
        t0 = time.monotonic()
        chunk = 250_000 if connection.vendor == "postgresql" else 200_000
        complete = loader.grow_to(size, chunk=chunk, deadline=deadline)
        if not complete:
            log(f"{label}: out of time at {loader.rows:,} ledger rows; not measuring {size:,}")
            out["truncated_by_deadline"] = True
            out["stopped_loading_at"] = loader.rows
            break
        loader.settle()
        load_seconds = time.monotonic() - t0
        consistency = ledger_consistency()
        log(
            f"{label}: {consistency['entries']:,} ledger rows, {consistency['rollup_rows']:,} rollup rows in "
            f"{load_seconds:.1f} s; ledger = rollups: {'yes' if consistency['ledger_equals_rollups'] else 'NO'}"
        )
        from core.periods import period_bounds

        period_start = period_bounds("monthly", datetime.now(UTC))[0]
        phase: dict[str, Any] = {
            "ledger_rows": size,
            # The rollup rows a budget's spend sums: one per scope and hour elapsed in the period.
            "period_start": period_start.isoformat(),
            "period_hours_elapsed": int((datetime.now(UTC) - period_start).total_seconds() // 3600) + 1,
            "load_seconds": load_seconds,
            "consistency": consistency,
        }
        if size <= AUDIT_MAX_ROWS:
            from tracking.selectors import ledger_differences

            differences, expected_rows, actual_rows = ledger_differences()
            phase["audit"] = {
                "differences": len(differences),
                "ledger_derived_rows": expected_rows,
                "rollup_rows": actual_rows,
                "first": [str(d) for d in differences[:3]],
            }
            log(f"{label}: audit (ledger_differences): {len(differences)} differences")
            if differences:
                log(f"{label}: WARNING the loader's rollups differ from the write path's: {differences[0]}")

        # Sanity: the calls do what the benchmark says (two budgets; one hard reservation).
        statuses = check()
        if len(statuses) != 2 or not all(s.allowed for s in statuses):
            raise RuntimeError(f"budget_check: expected 2 allowing budgets, got {statuses!r}")
        if len(reserve_settle()) != 1:
            raise RuntimeError("budget_reserve: expected exactly one reservation (the hard-limit budget)")

        for name, operation in (("budget_check", check), ("reserve_settle", reserve_settle)):
            # Not the last size: leave most of the time for loading the next one.
            remaining = deadline - time.time()
            until = deadline if last else time.time() + max(5.0, 0.1 * remaining)
            log(f"{label}: {size:,} rows: {args.warmup} warm-up + {args.samples} {name}, interleaved reference")
            op_ns, ref_ns, truncated = interleaved(
                operation, reference, warmup=args.warmup, samples=args.samples, deadline=until
            )
            summary, ref = latency_summary(op_ns), latency_summary(ref_ns)
            with CaptureQueriesContext(connection) as captured:
                operation()
            phase[name] = {
                "latency": summary,
                "reference": ref,
                "p50_over_reference": summary["p50_ms"] / ref["p50_ms"] if ref["n"] else None,
                "queries": [statement_label(q["sql"]) for q in captured.captured_queries],
                "explain": explain_reads([q["sql"] for q in captured.captured_queries])
                if connection.vendor == "postgresql"
                else [],
                "truncated_by_deadline": truncated,
            }
            if truncated:
                out["truncated_by_deadline"] = True
            if time.time() < deadline:
                phase[name]["profile"] = statement_profile(operation, min(PROFILE_CALLS, args.samples))
        out["sizes"].append(phase)
        out["seconds"] = time.monotonic() - started
        result_write(args.result_file, out)  # what is measured so far survives a kill at the deadline
    out["seconds"] = time.monotonic() - started
    connection.close()
    result_write(args.result_file, out)


# --- the driver: fresh databases, one subprocess each, the table ------------------------------------------


def worker_args(args: argparse.Namespace, deadline: float) -> list[str]:
    return [
        "--deadline",
        # Stop loading/measuring early enough to leave time for the last writes of the result.
        str(deadline - min(10.0, 0.1 * max(0.0, deadline - time.time()))),
        "--samples",
        str(args.samples),
        "--warmup",
        str(args.warmup),
        "--sizes",
        ",".join(str(s) for s in args.sizes),
    ]


def short_size(n: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{name}"
    return f"{n:,}"


OPERATIONS = (("budget_check", "budget_check"), ("reserve_settle", "reserve+settle"))


def growth(result: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    """(p50 at the largest size / p50 at the smallest, same for p50/ref), None where not both measured."""
    measured = [p for p in result.get("sizes", []) if key in p and p[key]["latency"]["n"]]
    if len(measured) < 2:
        return None, None
    small, large = measured[0][key], measured[-1][key]
    raw = large["latency"]["p50_ms"] / small["latency"]["p50_ms"]
    normalised = (
        large["p50_over_reference"] / small["p50_over_reference"]
        if large["p50_over_reference"] and small["p50_over_reference"]
        else None
    )
    return raw, normalised


def targets_line(results: list[dict[str, Any]], sizes: list[int]) -> str:
    pg = next((r for r in results if r["database"] == "postgresql"), None)
    head = "targets on PostgreSQL: "
    if pg is None:
        return head + "NOT MEASURED (DATABASE_URL is not PostgreSQL; `make bench` starts one)"
    if "error" in pg:
        return head + "NOT MEASURED (" + pg["error"] + ")"
    parts = []
    for key, name, target in (
        ("budget_check", "budget_check", TARGET_CHECK_P50_RATIO),
        ("reserve_settle", "reserve+settle", TARGET_RESERVE_SETTLE_P50_RATIO),
    ):
        values = [(p["ledger_rows"], p[key]["p50_over_reference"]) for p in pg["sizes"] if key in p]
        if not values or any(v is None for _, v in values):
            parts.append(f"{name} p50/ref <= {target:g} -> NOT MEASURED")
            continue
        ok = all(v <= target for _, v in values)
        detail = ", ".join(f"{fmt(v)} at {short_size(n)}" for n, v in values)
        parts.append(f"{name} p50/ref <= {target:g} -> {'PASS' if ok else 'MISS'} ({detail})")
    ratio = growth(pg, "budget_check")[0]
    label = f"budget_check p50 {short_size(sizes[-1])}/{short_size(sizes[0])} <= {TARGET_CHECK_GROWTH:g}"
    if ratio is None:
        parts.append(f"{label} -> NOT MEASURED")
    else:
        parts.append(f"{label} -> {'PASS' if ratio <= TARGET_CHECK_GROWTH else 'MISS'} ({ratio:.2f})")
    line = head + "; ".join(parts)
    if pg.get("truncated_by_deadline") or pg.get("killed_at_deadline"):
        line += " (run cut short by the time limit)"
    return line


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    sizes = meta["sizes"]
    lines = [
        f"budget path (budget_check, budget_reserve + reservation_settle), N={meta['samples']} per operation "
        f"and ledger size, machine: {meta['cores']} cores, Python {meta['python']}, Django {meta['django']}",
        f"{'database':<11} {'ledger rows':>11}  {'operation':<15} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} "
        f"{'ref p50 ms':>11} {'p50/ref':>8}",
    ]
    for r in results:
        name = r["database"]
        if "error" in r:
            lines.append(f"{name:<11} not measured: {r['error']}")
            continue
        for phase in r["sizes"]:
            for key, op_name in OPERATIONS:
                if key not in phase:
                    continue
                m = phase[key]
                lat, ref = m["latency"], m["reference"]
                lines.append(
                    f"{name:<11} {phase['ledger_rows']:>11,}  {op_name:<15} {fmt(lat['p50_ms']):>7} "
                    f"{fmt(lat['p99_ms']):>7} {fmt(lat['mean_ms']):>8} {fmt(ref['p50_ms']):>11} "
                    f"{fmt(m['p50_over_reference'], 1):>8}" + ("  (cut short)" if m["truncated_by_deadline"] else "")
                )
        if r.get("stopped_loading_at") is not None:
            lines.append(f"{name:<11} stopped loading at {r['stopped_loading_at']:,} rows: out of time")
    ratio_parts = []
    for r in results:
        if "error" in r:
            continue
        for key, op_name in OPERATIONS:
            raw, normalised = growth(r, key)
            if raw is not None:
                ratio_parts.append(f"{r['database']} {op_name} {raw:.2f} ({fmt(normalised)})")
    if ratio_parts:
        lines.append(
            f"ratio {short_size(sizes[-1])}/{short_size(sizes[0])} of p50 (of p50/ref): " + "; ".join(ratio_parts)
        )
    lines.append(targets_line(results, sizes))
    for r in results:
        if "error" in r:
            continue
        loads = ", ".join(
            f"{short_size(p['ledger_rows'])} in {p['load_seconds']:.0f} s ({p['consistency']['rollup_rows']:,} rollup rows)"
            for p in r["sizes"]
        )
        agree = ", ".join(
            f"{short_size(p['ledger_rows'])} {'yes' if p['consistency']['ledger_equals_rollups'] else 'NO'}"
            for p in r["sizes"]
        )
        audits = [p for p in r["sizes"] if "audit" in p]
        audit = "".join(
            f"; audit at {short_size(p['ledger_rows'])} (tracking.selectors.ledger_differences): "
            f"{p['audit']['differences']} differences"
            for p in audits
        )
        hours = f"; monthly period: {r['sizes'][-1]['period_hours_elapsed']} hours so far" if r["sizes"] else ""
        lines.append(
            f"  {r['database_version']}: loaded {loads}; ledger = rollups: {agree}{audit}{hours}; "
            f"{r.get('process_seconds', 0):.0f} s"
            + (" (CUT SHORT by --timeout)" if r.get("killed_at_deadline") else "")
        )
        if r["sizes"]:
            largest = r["sizes"][-1]
            for key, op_name in OPERATIONS:
                if key not in largest:
                    continue
                m = largest[key]
                counts = Counter(m["queries"])
                lines.append(
                    f"    {op_name}: {len(m['queries'])} queries ("
                    + ", ".join(f"{c}x {q}" if c > 1 else q for q, c in counts.items())
                    + ")"
                )
                for plan in m.get("explain", []):
                    lines.append(
                        f"      EXPLAIN ANALYZE of its {plan['label'].split()[0]} SUM at {short_size(largest['ledger_rows'])}: "
                        f"planning {fmt(plan.get('planning_ms'), 3)} ms, execution {fmt(plan.get('execution_ms'), 3)} ms, "
                        f"shared buffers hit {plan.get('shared_hit', 0):,} read {plan.get('shared_read', 0):,}"
                    )
                profile = m.get("profile")
                if profile:
                    top = sorted(profile["statements"], key=lambda s: -s["median_ms"])[:4]
                    lines.append(
                        f"      at {short_size(largest['ledger_rows'])}: median call {fmt(profile['call_median_ms'], 3)} ms, "
                        f"of which statements {fmt(profile['statements_ms'], 3)} ms; slowest: "
                        + ", ".join(f"{s['label']} {fmt(s['median_ms'], 3)}" for s in top)
                    )
    measured = [r for r in results if "error" not in r]
    if measured:
        loaders = "; ".join(f"{r['database']}: {r['loader']}" for r in measured)
        lines.append(f"  ledger loaded with: {loaders}")
        if any(r["database"] == "sqlite" for r in measured) and meta["sqlite_sizes"] != sizes:
            lines.append(
                f"  SQLite measured at {', '.join(short_size(n) for n in meta['sqlite_sizes'])} rows only "
                "(--sqlite-sizes to grow it further; its Python loader takes minutes per million rows)"
            )
        lines.append(f"  DEBUG={measured[0]['debug']}, TIME_ZONE={measured[0]['time_zone']}")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("ledger sizes must be positive integers, e.g. 10000,1000000")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000, help="measured calls per operation and size (2000)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls, not counted (default 200)")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="ledger sizes, ascending, comma-separated (default 10000,1000000)",
    )
    parser.add_argument(
        "--sqlite-sizes",
        type=parse_sizes,
        default=None,
        help="ledger sizes for SQLite (default: the smallest of --sizes; its loader is slow: ~4 min per million)",
    )
    parser.add_argument(
        "--database",
        choices=["both", "sqlite", "postgresql"],
        default="both",
        help="which to measure (default both; PostgreSQL only where DATABASE_URL is PostgreSQL)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument(
        "--timeout", type=float, default=270, help="seconds for the whole run; each database stops by then"
    )
    parser.add_argument("--worker", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.samples < 1 or args.warmup < 0:
        parser.error("--samples must be >= 1, --warmup >= 0")

    if args.worker:
        worker(args)
        return 0

    import django

    started = time.monotonic()
    deadline = time.time() + args.timeout
    database_url = os.environ.get("DATABASE_URL", "")
    has_pg = is_postgresql_url(database_url) and args.database != "sqlite"
    if not has_pg and args.database != "sqlite":
        log("DATABASE_URL is not PostgreSQL: measuring SQLite only (run `make bench` for both)")
    with_sqlite = args.database != "postgresql" or not has_pg
    sqlite_sizes = args.sqlite_sizes or args.sizes[:1]
    script = Path(__file__).resolve()

    sqlite_args = argparse.Namespace(**{**vars(args), "sizes": sqlite_sizes})
    results = run_on_databases(
        script,
        database_url=database_url,
        with_sqlite=with_sqlite,
        with_postgresql=has_pg,
        sqlite_worker_args=lambda until: worker_args(sqlite_args, until),
        postgresql_worker_args=lambda until: worker_args(args, until),
        timeout=args.timeout,
        deadline=deadline,
    )

    meta = {
        "samples": args.samples,
        "warmup": args.warmup,
        "sizes": args.sizes,
        "sqlite_sizes": sqlite_sizes,
        "cores": machine_cores(),
        "python": ".".join(platform.python_version_tuple()[:2]),
        "django": ".".join(str(p) for p in django.VERSION[:2]),
        "postgresql_measured": has_pg,
        "targets": {
            "postgresql_budget_check_p50_over_reference": TARGET_CHECK_P50_RATIO,
            "postgresql_reserve_settle_p50_over_reference": TARGET_RESERVE_SETTLE_P50_RATIO,
            "postgresql_budget_check_p50_largest_over_smallest": TARGET_CHECK_GROWTH,
        },
        "seconds": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print(table(results, meta))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
