#!/usr/bin/env python
"""Every benchmark, one after the other, each under its own throwaway PostgreSQL, and one table at the end.

    make bench                       # all of them, full size (~20 min on 2 cores)
    make bench QUICK=1               # smaller ledgers and fewer samples (~8 min): a smoke run, not figures to quote
    .venv/bin/python bench/run_all.py --only report_queries,alert_eval

Each benchmark runs as `bin/with-postgres .venv/bin/python bench/NAME.py --json ...`; its JSON
(stdout) is kept in var/bench/NAME.json, its progress (stderr) shows as it goes; this script reads
only that JSON. The table (figure, value, reference, ratio, target, met/missed), the machine (cores,
CPU model, memory, PostgreSQL version) and the command are printed and written as markdown to
bench/latest.md, which the README's performance section quotes. Every target is a ratio to a
reference measured in the same run (issue 16; bench/_common.py), never milliseconds, and "met"
judges the ratio. The exit status is 0 unless a benchmark failed to run; a missed target is
reported, not failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402
    TARGET_CHECK_GROWTH,
    TARGET_CHECK_P50_RATIO,
    TARGET_INGEST_COPY_RATIO,
    TARGET_METRICS_GROWTH,
    TARGET_OTLP_COPY_RATIO,
    TARGET_RECORD_P50_RATIO,
    TARGET_RESERVE_SETTLE_P50_RATIO,
    log,
    machine_cores,
)

RESULTS_DIR = BASE_DIR / "var" / "bench"
LATEST = BASE_DIR / "bench" / "latest.md"

# name -> (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "record_path": ([], ["--events", "500", "--batches", "5"]),
    "budget_path": (
        ["--database", "postgresql"],
        ["--database", "postgresql", "--samples", "300", "--warmup", "50", "--sizes", "10000,200000"],
    ),
    "metrics_scrape": ([], ["--samples", "20", "--sizes", "10000,200000"]),
    "api_ingest": ([], ["--rounds", "1", "--batches", "10"]),
    "otlp_ingest": ([], ["--rounds", "1", "--batches", "10"]),
    "report_queries": ([], ["--rows", "200000", "--samples", "5"]),
    "alert_eval": ([], ["--rows", "200000", "--passes", "3"]),
    "budget_templates": ([], ["--values", "20000", "--samples", "200", "--passes", "3"]),
    "pricing": ([], ["--events", "20000", "--rounds", "1"]),
    "focus_export": (["--no-parquet"], ["--quick", "--no-parquet"]),
}


def size_label(rows: int) -> str:
    return f"{rows / 1e6:g} M" if rows >= 1_000_000 else f"{rows / 1e3:g} k"


def _postgresql(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    for result in results:
        if result.get("database") == "postgresql" and "error" not in result:
            return result
    return None


def row(
    figure: str,
    value: float | None,
    unit: str,
    *,
    reference: float | None = None,
    reference_name: str = "",
    ratio: float | None = None,
    target: str = "",
    met: bool | None = None,
) -> dict[str, Any]:
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_name": reference_name,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _at_most(ratio: float | None, target: float) -> dict[str, Any]:
    return {"target": f"ratio <= {target:,g}", "met": ratio is not None and ratio <= target}


def record_path_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    pg = _postgresql(data["results"])
    if pg is None:
        return [row("record path (cost_entry_record)", None, "ms", target="not measured", met=False)]
    rec, ref = pg["record"], pg["reference"]
    ratio = _ratio(rec["p50_ms"], ref["p50_ms"])
    return [
        row(
            "record path p50 (in-process)",
            rec["p50_ms"],
            "ms",
            reference=ref["p50_ms"],
            reference_name="1-row INSERT",
            ratio=ratio,
            **_at_most(ratio, TARGET_RECORD_P50_RATIO),
        ),
        row(
            "record path p99 (in-process)",
            rec["p99_ms"],
            "ms",
            reference=ref["p99_ms"],
            reference_name="1-row INSERT p99",
            ratio=_ratio(rec["p99_ms"], ref["p99_ms"]),
        ),
        row("record path, bulk (batches of 500)", pg["bulk"]["median_events_per_s"], "events/s"),
    ]


def budget_path_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    pg = _postgresql(data["results"])
    if pg is None or not pg.get("sizes"):
        return [row("budget path", None, "ms", target="not measured", met=False)]
    rows = []
    targets = {"budget_check": TARGET_CHECK_P50_RATIO, "reserve_settle": TARGET_RESERVE_SETTLE_P50_RATIO}
    names = {"budget_check": "budget_check", "reserve_settle": "reserve + settle"}
    for phase in pg["sizes"]:
        size = size_label(phase["ledger_rows"])
        for key, target in targets.items():
            if key not in phase:
                continue
            lat, ref = phase[key]["latency"], phase[key]["reference"]
            ratio = _ratio(lat["p50_ms"], ref["p50_ms"])
            rows.append(
                row(
                    f"{names[key]} p50, {size} rows",
                    lat["p50_ms"],
                    "ms",
                    reference=ref["p50_ms"],
                    reference_name="1-row INSERT",
                    ratio=ratio,
                    **_at_most(ratio, target),
                )
            )
            rows.append(
                row(
                    f"{names[key]} p99, {size} rows",
                    lat["p99_ms"],
                    "ms",
                    reference=ref["p99_ms"],
                    reference_name="1-row INSERT p99",
                    ratio=_ratio(lat["p99_ms"], ref["p99_ms"]),
                )
            )
    first, last = pg["sizes"][0], pg["sizes"][-1]
    if first is not last:
        for key in targets:
            if key in first and key in last:
                small, large = first[key]["latency"]["p50_ms"], last[key]["latency"]["p50_ms"]
                growth = _ratio(large, small)
                target = _at_most(growth, TARGET_CHECK_GROWTH) if key == "budget_check" else {}
                rows.append(
                    row(
                        f"{names[key]} p50 at {size_label(last['ledger_rows'])} / at {size_label(first['ledger_rows'])}",
                        large,
                        "ms",
                        reference=small,
                        reference_name=f"itself at {size_label(first['ledger_rows'])}",
                        ratio=growth,
                        **target,
                    )
                )
    return rows


def metrics_scrape_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    pg = _postgresql(data["results"])
    if pg is None or not pg.get("sizes"):
        return [row("/metrics scrape", None, "ms", target="not measured", met=False)]
    rows = []
    for phase in pg["sizes"]:
        s, r = phase["scrape"], phase["reference"]
        rows.append(
            row(
                f"/metrics scrape p50 (uncached), {size_label(phase['ledger_rows'])} rows",
                s["p50_ms"],
                "ms",
                reference=r["p50_ms"],
                reference_name="1-row INSERT",
                ratio=_ratio(s["p50_ms"], r["p50_ms"]),
            )
        )
    first, last = pg["sizes"][0], pg["sizes"][-1]
    if first is not last:
        small, large = first["scrape"]["p50_ms"], last["scrape"]["p50_ms"]
        growth = _ratio(large, small)
        rows.append(
            row(
                f"/metrics scrape p50 at {size_label(last['ledger_rows'])} / at {size_label(first['ledger_rows'])}",
                large,
                "ms",
                reference=small,
                reference_name=f"itself at {size_label(first['ledger_rows'])}",
                ratio=growth,
                **_at_most(growth, TARGET_METRICS_GROWTH),
            )
        )
    return rows


def _ingest_row(figure: str, rate: float, unit: str, data: dict[str, Any], target: float) -> dict[str, Any]:
    ratio = data["ratio"]
    return row(
        figure,
        rate,
        unit,
        reference=data["copy_rows_per_second"],
        reference_name="COPY rows/s",
        ratio=ratio,
        target=f"ratio >= {target:g}",
        met=ratio is not None and ratio >= target,
    )


def api_ingest_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    figure = "HTTP batch ingest (POST /api/v1/events)"
    return [_ingest_row(figure, data["events_per_second"], "events/s", data, TARGET_INGEST_COPY_RATIO)]


def otlp_ingest_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    figure = f"OTLP trace ingest (POST /v1/traces, protobuf+gzip, {data['batch_size']} spans/request)"
    return [_ingest_row(figure, data["spans_per_second"], "spans/s", data, TARGET_OTLP_COPY_RATIO)]


def own_figures(data: dict[str, Any]) -> list[dict[str, Any]]:
    """report_queries.py, alert_eval.py, budget_templates.py, pricing.py and focus_export.py put their table rows
    in their JSON."""
    rows = []
    for result in data["results"]:
        if "error" in result:
            rows.append(row(f"{data['meta']['benchmark']}: {result['error']}", None, "", met=False))
        rows += [row(**{k: v for k, v in f.items()}) for f in result.get("figures", [])]
    return rows


EXTRACT: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "record_path": record_path_rows,
    "budget_path": budget_path_rows,
    "metrics_scrape": metrics_scrape_rows,
    "api_ingest": api_ingest_rows,
    "otlp_ingest": otlp_ingest_rows,
    "report_queries": own_figures,
    "alert_eval": own_figures,
    "budget_templates": own_figures,
    "pricing": own_figures,
    "focus_export": own_figures,
}


def run_one(name: str, args: list[str]) -> tuple[dict[str, Any] | None, float, str]:
    command = ["bin/with-postgres", sys.executable, f"bench/{name}.py", "--json", *args]
    log(f"run_all: {shlex.join(command)}")
    started = time.monotonic()
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)  # bin/with-postgres sets its own
    completed = subprocess.run(command, cwd=BASE_DIR, stdout=subprocess.PIPE, text=True, env=env)
    seconds = time.monotonic() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(completed.stdout)
    try:
        return json.loads(completed.stdout), seconds, ""
    except json.JSONDecodeError:
        return None, seconds, f"exit status {completed.returncode}, no JSON on stdout"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    postgres = ""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if os.environ.get("PG_BIN"):
        binaries.append(Path(os.environ["PG_BIN"]) / "postgres")
    if binaries:  # the one bin/with-postgres starts
        try:
            version = subprocess.run([str(binaries[-1]), "--version"], capture_output=True, text=True, timeout=30)
            postgres = "PostgreSQL " + version.stdout.split()[2]  # postgres (PostgreSQL) 15.18 (Debian ...)
        except (OSError, subprocess.TimeoutExpired, IndexError):
            pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cores": machine_cores(),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "postgresql": postgres,
        "load_average_at_start": load,
    }


def cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("events/s", "spans/s", "rows/s") or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if 0 < abs(value) < 0.1:
        return f"{value:.2g}"  # a small ratio (0.0043), not 0.00
    return f"{value:.2f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    load = "?" if m["load_average_at_start"] is None else f"{m['load_average_at_start']:.1f}"
    lines = [
        (
            "**QUICK smoke run** (smaller ledgers, fewer samples: proof that every benchmark runs, not figures "
            "to quote). "
            if meta["quick"]
            else ""
        )
        + f"Benchmarks of {meta['date']} (`{meta['command']}`), "
        f"{meta['minutes']:.0f} min: {m['cores']} cores ({m['cpu']}), {m['memory']}, {m['os']}, "
        f"Python {m['python']}, {m['postgresql'] or 'PostgreSQL'} started by `bin/with-postgres`; load average "
        f"{load} at the start. "
        "Each value is a median; the ratio is value / a reference measured in the same run.",
        "",
        "| figure | value | reference | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        value = "-" if r["value"] is None else f"{cell(r['value'], r['unit'])} {r['unit']}"
        reference = (
            "-" if r["reference"] is None else f"{cell(r['reference'])} ({r['reference_name']})".replace(" ()", "")
        )
        ratio = "-" if r["ratio"] is None else cell(r["ratio"])
        met = "" if r["met"] is None else ("met" if r["met"] else "**missed**")
        lines.append(f"| {r['figure']} | {value} | {reference} | {ratio} | {r['target']} | {met} |")
    if meta["failed"]:
        lines += ["", "Did not run: " + "; ".join(f"{k}: {v}" for k, v in meta["failed"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller ledgers, fewer samples (a smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", default=str(LATEST), help="markdown table (default bench/latest.md)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    started = time.monotonic()
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench" + (" QUICK=1" if args.quick else "") if not args.only else shlex.join(sys.argv),
        "quick": args.quick,
        "machine": machine(),
        "failed": {},
        "seconds": {},
    }
    rows: list[dict[str, Any]] = []
    for name in names:
        full, quick = BENCHMARKS[name]
        data, seconds, error = run_one(name, quick if args.quick else full)
        meta["seconds"][name] = round(seconds)
        if data is None:
            meta["failed"][name] = error
            rows.append(row(f"{name}: did not run ({error})", None, "", met=False))
            continue
        try:
            rows += EXTRACT[name](data)
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            meta["failed"][name] = f"unexpected JSON ({exc.__class__.__name__}: {exc})"
    meta["minutes"] = (time.monotonic() - started) / 60
    text = markdown(rows, meta)
    Path(args.output).write_text(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print()
    print(text)
    print(f"(written to {os.path.relpath(args.output, BASE_DIR)}; per-benchmark seconds: {meta['seconds']})")
    return 1 if meta["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
