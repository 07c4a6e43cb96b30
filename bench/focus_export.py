#!/usr/bin/env python
"""Benchmark of the FOCUS 1.2 export (tracking/focus.py) of a 1 M-row ledger: rows/s beside COPY TO, and peak memory.

    make bench                                                    # every benchmark, one table at the end
    bin/with-postgres .venv/bin/python bench/focus_export.py      # this one only (PostgreSQL), ~9 min
    ... bench/focus_export.py --quick                             # 200 k ledger rows (a smoke run)
    ... bench/focus_export.py --json --profile                    # machine-readable; profiles too

On a fresh PostgreSQL database (created on the server of DATABASE_URL, dropped at the end), migrated and
priced (bench/record_path.py's prices_load: the default catalog, or the bench's prices where it lacks
one), the ledger is loaded by bench/budget_path.py's LedgerLoader (its mix: 4 chat models of 2 providers,
4 services, 500 subjects, 200 jobs, 3 teams, tags env and feature, 2 % errors, 1 % rate-limited) over the
--days (30) whole UTC days before today, with prices_used as the write path fills it: each model's parts
are the ones tracking.pricing.PriceBook.quote writes for it (price id, unit price, tier, context tier,
valid from), with each row's quantity and exact amount, and each amount the sum of its parts. --check
entries are then quoted again by PriceBook.quote and must give the same amount and prices_used.

Measured:

1. The export, `tracking.focus.focus_export_write(path, start, end)` (CSV), of the whole range in a
   child process (this script with --export-child), which reads its own peak RSS (/proc/self/status
   VmHWM) after it: ledger rows read per second (rows in the range / the call's wall time), FOCUS rows
   written, peak MiB. The same export of the first tenth of the days (~100 k rows of 1 M) in another
   child: peak(whole) / peak(tenth) <= TARGET_FOCUS_MEMORY_GROWTH (1.5), the export streams (memory holds
   one day's groups, never the ledger). The CSV is read back: its BilledCost sums to the ledger's amount.
2. The reference: `COPY (SELECT <focus._FIELDS> FROM tracking_costentry ... ORDER BY occurred_at, id)
   TO STDOUT` with psycopg (the export's own query, its team join included, as Django compiles it)
   streamed to a file, rows/s; once before and once after the exports, the median of those is the
   reference. Ratio export rows/s / COPY rows/s >= TARGET_FOCUS_COPY_RATIO (bench/_common.py says why).
3. The Parquet export (`fmt="parquet"`) of the whole range, rows/s and peak MiB (no target).

--profile runs the CSV export of the first tenth in-process under cProfile, keeps the functions that
took the most time and writes the profile to var/bench/focus_export.prof.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402 - needs BASE_DIR on sys.path when run as a script
    TARGET_FOCUS_COPY_RATIO,
    TARGET_FOCUS_MEMORY_GROWTH,
    fmt,
    log,
    postgresql_benchmark_main,
    postgresql_benchmark_parser,
    result_write,
)

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 200_000
DEFAULT_DAYS = 30
PROFILE_TOP = 25
PROFILE_FILE = BASE_DIR / "var" / "bench" / "focus_export.prof"  # pstats, for `python -m pstats`


def size_label(rows: int) -> str:
    """1,000,000 -> "1 M", 99,899 -> "100 k" (two significant digits: a day's rows are drawn, not counted)."""
    rounded = float(f"{rows:.2g}")
    return f"{rounded / 1e6:g} M" if rounded >= 1_000_000 else f"{rounded / 1e3:g} k"


# --- the child: one export, its own peak memory ----------------------------------------------------


def vm_hwm_kib() -> int:
    """This process's peak resident set (VmHWM), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def export_child(args: argparse.Namespace) -> None:
    """Run one focus_export_write in this (fresh) process; print its time, rows and peak RSS as JSON."""
    import resource

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costcontrol.settings.local")
    import django

    django.setup()
    from django.db import connection

    from tracking.focus import focus_export_write

    if args.format == "parquet":
        import pyarrow.parquet  # noqa: F401 - imported before the baseline, as a running server has it

    connection.ensure_connection()
    baseline = vm_hwm_kib()
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    t0 = time.perf_counter()
    rows = focus_export_write(Path(args.out), start, end, args.format)
    seconds = time.perf_counter() - t0
    peak = vm_hwm_kib()
    print(
        json.dumps(
            {
                "format": args.format,
                "start": args.start,
                "end": args.end,
                "focus_rows": rows,
                "seconds": seconds,
                "baseline_mib": baseline / 1024,
                "peak_mib": peak / 1024,
                "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "bytes": Path(args.out).stat().st_size,
            }
        )
    )


def export_in_child(start: date, end: date, out: Path, fmt_name: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--export-child",
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--out",
        str(out),
        "--format",
        fmt_name,
    ]
    completed = subprocess.run(command, cwd=BASE_DIR, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- the worker ------------------------------------------------------------------------------------


def price_parts(at: datetime) -> tuple[dict[tuple[str, str], dict[str, dict[str, Any]]], str]:
    """Each ledger model's prices_used part templates, as the write path's quote writes them, and where the
    prices came from."""
    from bench.budget_path import LOAD_MODELS, OPERATION, PG_PRICED_UNITS
    from bench.record_path import EventMaker, prices_load
    from tracking.models import PricingStatus
    from tracking.pricing import PriceBook

    source = prices_load(EventMaker(seed=20251123))
    book = PriceBook.load([(m[0], m[1]) for m in LOAD_MODELS])
    parts: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for provider, model, *_ in LOAD_MODELS:
        quote = book.quote(
            provider=provider,
            model=model,
            operation=OPERATION,
            variant="",
            at=at,
            quantities={"input_tokens": 1, "output_tokens": 1, "cached_input_tokens": 1},
        )
        if quote.status != PricingStatus.PRICED:
            raise RuntimeError(f"{provider}/{model} is not priced: {quote.prices_used}")
        parts[(provider, model)] = {
            unit: {k: v for k, v in quote.prices_used[unit].items() if k not in ("quantity", "amount")}
            for unit, _ in PG_PRICED_UNITS
        }
    return parts, source


def write_path_check(sample: int) -> dict[str, Any]:
    """`sample` entries quoted again by PriceBook.quote: the same amount and prices_used as loaded?"""
    from django.db.models import Max

    from bench.budget_path import LOAD_MODELS
    from tracking.models import CostEntry
    from tracking.pricing import PriceBook

    book = PriceBook.load([(m[0], m[1]) for m in LOAD_MODELS])
    last = CostEntry.objects.aggregate(last=Max("id"))["last"] or 0
    entries = list(CostEntry.objects.filter(id__in=random.Random(1).sample(range(1, last + 1), min(sample, last))))
    differ = 0
    parts = 0
    for e in entries:
        quote = book.quote(
            provider=e.provider,
            model=e.model,
            operation=e.operation,
            variant=e.variant,
            at=e.occurred_at,
            # The loader's input_tokens count the cached ones too (as budget_path.py's amounts do).
            quantities={
                "input_tokens": e.input_tokens - e.cached_input_tokens,
                "cached_input_tokens": e.cached_input_tokens,
                "output_tokens": e.output_tokens,
            },
        )
        parts += len(e.prices_used)
        if quote.amount != e.amount or quote.prices_used != e.prices_used or quote.status != e.pricing_status:
            differ += 1
            if differ <= 3:
                log(f"write-path check: entry {e.pk}: loaded {e.amount} {e.prices_used}, quote {quote.amount} {quote}")
    return {"entries": len(entries), "differ": differ, "parts_per_entry": parts / max(1, len(entries))}


def copy_reference(database_url: str, since: datetime, until: datetime, out: Path) -> dict[str, Any]:
    """COPY (the export's own SELECT) TO STDOUT, streamed to `out`: rows/s."""
    import psycopg

    from tracking.focus import _FIELDS
    from tracking.models import CostEntry

    queryset = (
        CostEntry.objects.filter(occurred_at__gte=since, occurred_at__lt=until)
        .order_by("occurred_at", "id")
        .values_list(*_FIELDS)
    )
    sql, params = queryset.query.sql_with_params()
    with psycopg.connect(database_url) as conn, conn.cursor() as cursor, out.open("wb") as stream:
        t0 = time.perf_counter()
        with cursor.copy(f"COPY ({sql}) TO STDOUT", params) as copy:
            for data in copy:
                stream.write(data)
        seconds = time.perf_counter() - t0
    rows = 0
    with out.open("rb") as stream:  # counted after the timing: a row's end (the text format escapes newlines)
        while chunk := stream.read(1 << 20):
            rows += chunk.count(b"\n")
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds, "bytes": out.stat().st_size}


def csv_check(path: Path) -> dict[str, Any]:
    """The CSV read back: rows, BilledCost summed, rows priced by a catalog price (SkuPriceId), entries."""
    billed = Decimal(0)
    rows = priced = entries = 0
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        cost, sku, count = header.index("BilledCost"), header.index("SkuPriceId"), header.index("x_Entries")
        for row in reader:
            rows += 1
            billed += Decimal(row[cost])
            priced += bool(row[sku])
            entries += int(row[count])
    return {"rows": rows, "billed": str(billed), "priced_rows": priced, "entry_parts": entries}


def profile_export(start: date, end: date, out: Path) -> dict[str, Any]:
    from tracking.focus import focus_export_write

    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    rows = focus_export_write(out, start, end)
    profiler.disable()
    seconds = time.perf_counter() - t0
    PROFILE_FILE.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(PROFILE_FILE)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    top = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: -kv[1][2],
    )[:PROFILE_TOP]:
        where = os.path.relpath(filename, BASE_DIR) if filename.startswith(str(BASE_DIR)) else Path(filename).name
        top.append({"function": f"{where}:{line}({name})", "calls": calls, "tottime_s": tottime, "cumtime_s": cumtime})
    return {"seconds_profiled": seconds, "focus_rows": rows, "top_by_tottime": top, "file": str(PROFILE_FILE)}


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costcontrol.settings.local")
    import django

    django.setup()

    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Sum

    from bench.budget_path import TEAMS, LedgerLoader
    from bench.report_queries import database_version
    from core.models import Team
    from tracking.models import CostEntry

    label, deadline = args.worker, args.deadline
    out: dict[str, Any] = {"database": connection.vendor, "database_version": database_version()}
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=args.days), today
    tenth = start + timedelta(days=max(1, args.days // 10))
    since, until = (datetime.combine(d, datetime.min.time(), tzinfo=UTC) for d in (start, end))
    out.update({"start": start.isoformat(), "end": end.isoformat(), "tenth_end": tenth.isoformat()})

    log(f"{label}: migrating a fresh database and loading prices")
    call_command("migrate", verbosity=0, interactive=False)
    parts, out["prices"] = price_parts(since)
    teams = [Team.objects.create(name=name).pk for name in TEAMS]
    loader = LedgerLoader(teams=teams, run_id=uuid.uuid4().hex[:12], seed=20251123, window=(since, until), parts=parts)
    log(f"{label}: loading {args.rows:,} ledger rows over {start} .. {end} (with prices_used) and their rollups")
    t0 = time.monotonic()
    if not loader.grow_to(args.rows, chunk=250_000, deadline=deadline):
        raise RuntimeError(f"out of time at {loader.rows:,} ledger rows")
    loader.settle()
    out["load_seconds"] = time.monotonic() - t0
    out["write_path_check"] = write_path_check(args.check)
    check = out["write_path_check"]
    log(
        f"{label}: loaded in {out['load_seconds']:.0f} s; write-path check: {check['differ']} of "
        f"{check['entries']} entries differ from PriceBook.quote, {check['parts_per_entry']:.2f} parts an entry"
    )
    result_write(args.result_file, out)

    def ledger(lo: date, hi: date) -> dict[str, Any]:
        lo_at, hi_at = (datetime.combine(d, datetime.min.time(), tzinfo=UTC) for d in (lo, hi))
        row = CostEntry.objects.filter(occurred_at__gte=lo_at, occurred_at__lt=hi_at).aggregate(
            rows=Count("id"), amount=Sum("amount")
        )
        return {"rows": row["rows"], "amount": str(row["amount"] or Decimal(0))}

    out["ledger"], out["ledger_tenth"] = ledger(start, end), ledger(start, tenth)
    database_url = os.environ["DATABASE_URL"]
    tmp = Path(tempfile.mkdtemp(prefix="costcontrol-focus-bench-"))
    try:
        copies = []
        log(f"{label}: COPY TO of the export's SELECT ({out['ledger']['rows']:,} rows)")
        copies.append(copy_reference(database_url, since, until, tmp / "copy.txt"))
        log(f"{label}: FOCUS CSV export of {start} .. {tenth} in a child ({out['ledger_tenth']['rows']:,} rows)")
        out["csv_tenth"] = export_in_child(start, tenth, tmp / "tenth.csv", "csv")
        log(f"{label}: FOCUS CSV export of {start} .. {end} in a child ({out['ledger']['rows']:,} rows)")
        out["csv"] = export_in_child(start, end, tmp / "focus.csv", "csv")
        log(
            f"{label}: CSV {out['csv']['focus_rows']:,} FOCUS rows in {out['csv']['seconds']:.1f} s, "
            f"peak {out['csv']['peak_mib']:.0f} MiB ({out['csv_tenth']['peak_mib']:.0f} MiB at a tenth)"
        )
        copies.append(copy_reference(database_url, since, until, tmp / "copy.txt"))
        out["copy"] = copies
        out["csv_check"] = csv_check(tmp / "focus.csv")
        (tmp / "focus.csv").unlink()
        result_write(args.result_file, out)
        if args.parquet and time.time() < deadline:
            log(f"{label}: FOCUS Parquet export of {start} .. {end} in a child")
            out["parquet"] = export_in_child(start, end, tmp / "focus.parquet", "parquet")
            log(f"{label}: Parquet {out['parquet']['focus_rows']:,} rows in {out['parquet']['seconds']:.1f} s")
        if args.profile and time.time() < deadline:
            log(f"{label}: cProfile of the CSV export of {start} .. {tenth}, in-process")
            out["profile"] = profile_export(start, tenth, tmp / "profile.csv")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result_write(args.result_file, out)


def worker_args(args: argparse.Namespace, deadline: float) -> list[str]:
    extra = (["--profile"] if args.profile else []) + ([] if args.parquet else ["--no-parquet"])
    return [
        *("--rows", str(args.rows), "--days", str(args.days), "--check", str(args.check)),
        *("--deadline", str(deadline), *extra),
    ]


def summary(result: dict[str, Any]) -> dict[str, Any] | None:
    if "error" in result or "copy" not in result:
        return None
    rows, tenth_rows = result["ledger"]["rows"], result["ledger_tenth"]["rows"]
    copy = statistics.median(c["rows_per_second"] for c in result["copy"])
    csv_rate = rows / result["csv"]["seconds"]
    out = {
        "rows": rows,
        "tenth_rows": tenth_rows,
        "copy_rows_per_second": copy,
        "csv_rows_per_second": csv_rate,
        "csv_ratio": csv_rate / copy,
        "peak_mib": result["csv"]["peak_mib"],
        "peak_tenth_mib": result["csv_tenth"]["peak_mib"],
        "memory_growth": result["csv"]["peak_mib"] / result["csv_tenth"]["peak_mib"],
    }
    if "parquet" in result:
        out["parquet_rows_per_second"] = rows / result["parquet"]["seconds"]
        out["parquet_ratio"] = out["parquet_rows_per_second"] / copy
    return out


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows this benchmark adds to the `make bench` table."""
    s = summary(result)
    if s is None:
        return []
    size, tenth = size_label(s["rows"]), size_label(s["tenth_rows"])
    rows = [
        {
            "figure": f"FOCUS export (CSV), {size} ledger rows",
            "value": s["csv_rows_per_second"],
            "unit": "rows/s",
            "reference": s["copy_rows_per_second"],
            "reference_name": "COPY TO of the same rows, rows/s",
            "ratio": s["csv_ratio"],
            "target": f"ratio >= {TARGET_FOCUS_COPY_RATIO:g}",
            "met": s["csv_ratio"] >= TARGET_FOCUS_COPY_RATIO,
        },
        {
            "figure": f"FOCUS export peak memory, {size} / {tenth} rows",
            "value": s["peak_mib"],
            "unit": "MiB",
            "reference": s["peak_tenth_mib"],
            "reference_name": f"itself at {tenth}",
            "ratio": s["memory_growth"],
            "target": f"ratio <= {TARGET_FOCUS_MEMORY_GROWTH:g}",
            "met": s["memory_growth"] <= TARGET_FOCUS_MEMORY_GROWTH,
        },
    ]
    if "parquet_rows_per_second" in s:
        rows.append(
            {
                "figure": f"FOCUS export (Parquet), {size} ledger rows",
                "value": s["parquet_rows_per_second"],
                "unit": "rows/s",
                "reference": s["copy_rows_per_second"],
                "reference_name": "COPY TO of the same rows, rows/s",
                "ratio": s["parquet_ratio"],
            }
        )
    return rows


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"FOCUS export, machine: {meta['cores']} cores, Python {meta['python']}, Django {meta['django']}",
        "figure                                            value        reference     ratio  target",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"{result['database']}: error: {result['error']}")
            continue
        for row in figures(result):
            verdict = f"{row['target']} -> {'PASS' if row['met'] else 'MISS'}" if "met" in row else ""
            value = f"{row['value']:,.0f} {row['unit']}"
            lines.append(
                f"{row['figure']:<48} {value:>14} {row['reference']:>12,.0f}  {fmt(row['ratio'], 3):>6}  {verdict}"
            )
        if "csv" not in result:
            continue
        c, k, w = result["csv"], result["csv_check"], result["write_path_check"]
        lines.append(
            f"  {result['database_version']}: {result['ledger']['rows']:,} ledger rows over {result['start']} .. "
            f"{result['end']} (loaded in {result['load_seconds']:.0f} s; prices: {result['prices']})"
        )
        lines.append(
            f"  write path: {w['differ']} of {w['entries']} entries differ from PriceBook.quote "
            f"({w['parts_per_entry']:.2f} prices_used parts an entry)"
        )
        lines.append(
            f"  CSV: {c['focus_rows']:,} FOCUS rows ({k['priced_rows']:,} with a catalog price, "
            f"{k['entry_parts']:,} entry parts), {c['bytes'] / 2**20:,.0f} MiB in {c['seconds']:.1f} s; "
            f"BilledCost sum {k['billed']} = ledger {result['ledger']['amount']}: "
            f"{'yes' if Decimal(k['billed']) == Decimal(result['ledger']['amount']) else 'NO'}"
        )
        t = result["csv_tenth"]
        lines.append(
            f"  peak RSS: {c['peak_mib']:.0f} MiB at {result['ledger']['rows']:,} rows, {t['peak_mib']:.0f} MiB at "
            f"{result['ledger_tenth']['rows']:,} ({t['focus_rows']:,} FOCUS rows in {t['seconds']:.1f} s); "
            f"the child's baseline before the export {c['baseline_mib']:.0f} MiB"
        )
        copies = ", ".join(f"{x['rows_per_second']:,.0f}" for x in result["copy"])
        lines.append(
            f"  COPY TO rows/s (before, after the exports): {copies}; {result['copy'][0]['bytes'] / 2**20:,.0f} MiB"
        )
        if "parquet" in result:
            p = result["parquet"]
            lines.append(
                f"  Parquet: {p['focus_rows']:,} rows, {p['bytes'] / 2**20:,.0f} MiB in {p['seconds']:.1f} s, "
                f"peak {p['peak_mib']:.0f} MiB"
            )
        if "profile" in result:
            prof = result["profile"]
            lines.append(f"  cProfile of the tenth ({prof['seconds_profiled']:.1f} s under the profiler), by own time:")
            for entry in prof["top_by_tottime"][:15]:
                lines.append(
                    f"    {entry['tottime_s']:7.2f} s own {entry['cumtime_s']:7.2f} s cum {entry['calls']:>10,}  "
                    f"{entry['function']}"
                )
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = postgresql_benchmark_parser(__doc__, default_rows=DEFAULT_ROWS, timeout=1500)
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: --rows {QUICK_ROWS}")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"UTC days of ledger (default {DEFAULT_DAYS})")
    parser.add_argument("--check", type=int, default=1000, help="entries quoted again by the write path (1000)")
    parser.add_argument("--no-parquet", dest="parquet", action="store_false", help="skip the Parquet export")
    parser.add_argument("--profile", action="store_true", help="also the CSV export of a tenth under cProfile")
    parser.add_argument("--export-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--format", default="csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = QUICK_ROWS
    if args.export_child:
        export_child(args)
        return 0
    if args.worker:
        worker(args)
        return 0
    return postgresql_benchmark_main(
        Path(__file__).resolve(),
        args,
        meta={
            "benchmark": "focus_export",
            "days": args.days,
            "targets": {
                "csv_rows_per_s_over_copy_rows_per_s": TARGET_FOCUS_COPY_RATIO,
                "peak_rss_whole_over_tenth": TARGET_FOCUS_MEMORY_GROWTH,
            },
        },
        worker_args=worker_args,
        figures=figures,
        table=table,
    )


if __name__ == "__main__":
    sys.exit(main())
