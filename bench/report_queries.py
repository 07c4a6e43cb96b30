#!/usr/bin/env python
"""Benchmark of the read screens at 1 M ledger rows: the daily cost report and the admin cost dashboard.

    make bench                                                    # every benchmark, one table at the end
    bin/with-postgres .venv/bin/python bench/report_queries.py    # this one only (PostgreSQL), ~2-3 min
    ... bench/report_queries.py --rows 200000 --samples 5         # quicker
    ... bench/report_queries.py --json                            # machine-readable, same figures

On a fresh PostgreSQL database (created on the server of DATABASE_URL, dropped at the end), migrated,
the ledger and its hourly and daily rollups are loaded in bulk by bench/_common.py's LedgerLoader (the
same mix and SQL as budget_path.py: ~2.7 months of usage by 500 subjects, 4 models, 4 services, 200
jobs), then a world around it: 20 budgets, 60 finished batches with their cost per lead computed by
tracking.batches.batch_cost_compute, 40 firing alerts and a superuser. Measured, each a median of
--samples runs after one warm-up:

* report: alerts.reports.daily_report_build(day=yesterday) and rendering it as text and HTML
  (what daily_report_send builds, without sending);
* dashboard: GET /admin/analytics/dashboard/ through the Django test client, logged in as a
  superuser (the default filters: the last 30 days, every selector and the template);
* dashboard (provider filter): the same with ?provider=openai;
* reference: GET /admin/ (the admin index: the same middleware, session, login and base template,
  no figures), interleaved with the dashboard requests.

Target (issue 16): the dashboard's p50 at 1 M rows <= 12 x GET /admin/'s p50. The report has no
reference of its own and no target: it is printed for comparison between runs.

Not on SQLite: its Python loader takes minutes per million rows (budget_path.py measures SQLite).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402 - needs BASE_DIR on sys.path when run as a script
    TARGET_DASHBOARD_RATIO,
    fmt,
    latency_summary,
    log,
    postgresql_benchmark_main,
    postgresql_benchmark_parser,
    result_write,
)

DEFAULT_ROWS = 1_000_000
DASHBOARD = "/admin/analytics/dashboard/"


def database_version() -> str:
    from django.db import connection

    if connection.vendor != "postgresql":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"


def load_ledger(rows: int, *, deadline: float, label: str) -> dict[str, Any]:
    """Migrate, create the teams, load `rows` ledger rows and their rollups; returns what was loaded."""
    from django.core.management import call_command

    from bench.budget_path import TEAMS, LedgerLoader, ledger_consistency
    from core.models import Team

    log(f"{label}: migrating a fresh database")
    call_command("migrate", verbosity=0, interactive=False)
    teams = [Team.objects.create(name=name).pk for name in TEAMS]
    loader = LedgerLoader(teams=teams, run_id=uuid.uuid4().hex[:12], seed=20251123)
    log(f"{label}: loading {rows:,} ledger rows and their rollups")
    t0 = time.monotonic()
    if not loader.grow_to(rows, chunk=250_000, deadline=deadline):
        raise RuntimeError(f"out of time at {loader.rows:,} ledger rows")
    loader.settle()
    consistency = ledger_consistency()
    consistency["load_seconds"] = time.monotonic() - t0
    log(
        f"{label}: {consistency['entries']:,} ledger rows, {consistency['rollup_rows']:,} hourly rollup rows in "
        f"{consistency['load_seconds']:.0f} s; ledger = rollups: {'yes' if consistency['ledger_equals_rollups'] else 'NO'}"
    )
    return consistency


def setup_world(now: datetime) -> dict[str, int]:
    """Budgets, finished batches with their cost computed, firing alerts and a superuser."""
    from django.contrib.auth import get_user_model

    from alerts.models import Alert, AlertSource, AlertState
    from bench.budget_path import SERVICES
    from budgets.models import Budget
    from tracking.batches import batch_cost_compute
    from tracking.models import Batch

    scopes = [
        ("global", "monthly", "20000"),
        ("global", "daily", "700"),
        ("provider:openai", "monthly", "9000"),
        ("provider:anthropic", "monthly", "9000"),
        ("model:gpt-4o", "monthly", "6000"),
        ("model:gpt-4o-mini", "weekly", "50"),
        ("model:claude-sonnet-4-5", "monthly", "5000"),
        ("model:claude-haiku-4-5", "quarterly", "3000"),
        *((f"service:{s}", "monthly", "4000") for s in SERVICES),
        ("tag:env=prod", "monthly", "15000"),
        ("tag:env=staging", "monthly", "1000"),
        ("team:ml-platform", "monthly", "8000"),
        ("team:search", "yearly", "60000"),
        ("team:support", "none", "100000"),
        ("subject:user-1", "daily", "5"),
        ("subject:user-2", "monthly", "40"),
        ("job:job-1", "none", "100"),
    ]
    for i, (scope, period, amount) in enumerate(scopes):
        budget = Budget(
            name=f"{scope} {period} {i}", scope=scope, period=period, amount=Decimal(amount), forecast_alerts=i % 2 == 0
        )
        budget.full_clean()
        budget.save()
    for i in range(60):
        finished = now - timedelta(days=60 - i, hours=3)
        batch = Batch.objects.create(
            name=f"pipeline-{i % 3}", job=f"job-{i}", started_at=finished - timedelta(hours=2), finished_at=finished
        )
        batch.leads = 100 + 37 * i
        batch.save(update_fields=["leads"])
        batch_cost_compute(batch=batch, now=now)
    Alert.objects.bulk_create(
        Alert(
            key=f"bench:{i}",
            source=AlertSource.RULE,
            scope="global" if i % 4 else f"model:gpt-4o-{i}",
            level="warning",
            state=AlertState.FIRING,
            title=f"bench alert {i}",
            message="benchmark alert",
            first_fired_at=now - timedelta(hours=i),
            last_fired_at=now - timedelta(minutes=i),
        )
        for i in range(40)
    )
    get_user_model().objects.create_superuser("bench-admin", "bench@example.com", "bench-password-1")
    return {"budgets": len(scopes), "batches": 60, "firing_alerts": 40}


def timed(operation: Any, *, warmup: int, samples: int, deadline: float) -> list[int]:
    import gc

    times: list[int] = []
    for i in range(warmup + samples):
        if time.time() > deadline:
            break
        gc.collect()
        t0 = time.perf_counter_ns()
        operation()
        if i >= warmup:
            times.append(time.perf_counter_ns() - t0)
    return times


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costcontrol.settings.local")
    import django

    django.setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from alerts.report_email import daily_report_html, daily_report_text
    from alerts.reports import daily_report_build
    from bench.budget_path import interleaved

    label, deadline = args.worker, args.deadline
    out: dict[str, Any] = {"database": connection.vendor, "database_version": database_version(), "rows": args.rows}
    out["debug"] = settings.DEBUG
    out["consistency"] = load_ledger(args.rows, deadline=deadline, label=label)
    now = timezone.now()
    out["world"] = setup_world(now)
    result_write(args.result_file, out)

    day = timezone.localdate() - timedelta(days=1)

    def report() -> tuple[str, str]:
        built = daily_report_build(day=day)
        return daily_report_text(built), daily_report_html(built)

    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username="bench-admin"))

    def get(url: str) -> Any:
        def call() -> Any:
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"GET {url}: {response.status_code}")
            return response

        return call

    dashboard, dashboard_openai, admin_index = get(DASHBOARD), get(DASHBOARD + "?provider=openai"), get("/admin/")
    text, html = report()
    body = dashboard().content.decode()
    out["checks"] = {
        "report_text_chars": len(text),
        "report_html_chars": len(html),
        "dashboard_html_chars": len(body),
        "dashboard_has_top_models": "gpt-4o" in body,
    }
    for name, operation in (("report", report), ("dashboard", dashboard), ("dashboard_provider", dashboard_openai)):
        with CaptureQueriesContext(connection) as queries:
            operation()
        out.setdefault("queries", {})[name] = len(queries.captured_queries)

    log(f"{label}: report x{args.samples}")
    out["report"] = latency_summary(timed(report, warmup=1, samples=args.samples, deadline=deadline))
    log(f"{label}: dashboard x{args.samples}, interleaved with the admin index")
    op, ref, _ = interleaved(dashboard, admin_index, warmup=1, samples=args.samples, deadline=deadline)
    out["dashboard"], out["reference"] = latency_summary(op), latency_summary(ref)
    log(f"{label}: dashboard ?provider=openai x{args.samples}")
    out["dashboard_provider"] = latency_summary(
        timed(dashboard_openai, warmup=1, samples=args.samples, deadline=deadline)
    )
    if args.profile:
        out["profile"] = profile_parts(day=day, now=now)
    result_write(args.result_file, out)
    log(
        f"{label}: report p50 {out['report']['p50_ms']:.0f} ms, dashboard p50 {out['dashboard']['p50_ms']:.0f} ms "
        f"(admin index {out['reference']['p50_ms']:.0f} ms)"
    )


def profile_parts(*, day: Any, now: datetime) -> dict[str, float]:
    """Median ms of each part of the report and of each dashboard property (what to look at first)."""
    from alerts import reports
    from analytics.dashboard import DashboardData
    from analytics.filters import DashboardFilterForm

    parts: dict[str, float] = {}
    window = reports.day_window(day)
    totals = reports._totals(window)
    for name, call in {
        "report.totals": lambda: reports._totals(window),
        "report.hourly": lambda: reports._hourly(window),
        "report.breakdowns": lambda: [reports._breakdown(window, k, totals) for k in reports.BREAKDOWN_KINDS],
        "report.top_subjects": lambda: reports._top_subjects(window, totals),
        "report.budgets": lambda: reports._budgets(window, now),
        "report.cost_per_lead": lambda: reports._cost_per_lead(window),
        "report.gpu": lambda: reports._gpu(window),
        "report.alerts": lambda: reports._alerts(window),
    }.items():
        parts[name] = statistics.median(timed(call, warmup=0, samples=3, deadline=float("inf"))) / 1e6
    form = DashboardFilterForm({})
    parts["dashboard.form"] = statistics.median(
        timed(lambda: DashboardFilterForm({}).is_valid(), warmup=0, samples=3, deadline=float("inf"))
    )
    parts["dashboard.form"] /= 1e6
    form.is_valid()
    filters = form.filters()
    for name in (
        "cards",
        "trend",
        "forecast_card",
        "range_total",
        "budgets_at_risk",
        "open_alerts",
        "open_alert_count",
        "spend_by_provider",
        "top_models",
        "top_subjects",
        "cost_per_lead",
        "gpu",
        "gpu_hours",
        "anomaly_list",
        "recommendation_list",
    ):
        parts[f"dashboard.{name}"] = (
            statistics.median(
                timed(
                    lambda n=name: getattr(DashboardData(filters=filters), n),
                    warmup=0,
                    samples=3,
                    deadline=float("inf"),
                )
            )
            / 1e6
        )
    return parts


def worker_args(args: argparse.Namespace, deadline: float) -> list[str]:
    extra = ["--profile"] if args.profile else []
    return ["--rows", str(args.rows), "--samples", str(args.samples), "--deadline", str(deadline), *extra]


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows this benchmark adds to the `make bench` table."""
    if "error" in result or "report" not in result:
        return []
    rows = result["rows"]
    size = f"{rows / 1e6:g} M" if rows >= 1_000_000 else f"{rows / 1e3:g} k"
    ref = result["reference"]["p50_ms"]
    dashboard_ratio = result["dashboard"]["p50_ms"] / ref if ref else None
    return [
        {
            "figure": f"daily report build + render, {size} rows, p50",
            "value": result["report"]["p50_ms"],
            "unit": "ms",
        },
        {
            "figure": f"admin dashboard GET, {size} rows, p50",
            "value": result["dashboard"]["p50_ms"],
            "unit": "ms",
            "reference": ref,
            "reference_name": "GET /admin/",
            "ratio": dashboard_ratio,
            "target": f"ratio <= {TARGET_DASHBOARD_RATIO:g}",
            "met": dashboard_ratio is not None and dashboard_ratio <= TARGET_DASHBOARD_RATIO,
        },
        {
            "figure": f"admin dashboard GET ?provider=openai, {size} rows, p50",
            "value": result["dashboard_provider"]["p50_ms"],
            "unit": "ms",
            "reference": ref,
            "reference_name": "GET /admin/",
            "ratio": result["dashboard_provider"]["p50_ms"] / ref if ref else None,
        },
    ]


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"report and dashboard, median of {meta['samples']}, machine: {meta['cores']} cores, "
        f"Python {meta['python']}, Django {meta['django']}",
        "figure                                                  p50 ms  ref p50 ms  ratio  target",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"{result['database']}: error: {result['error']}")
            continue
        for row in figures(result):
            verdict = "" if "met" not in row else f"{row['target']} -> {'PASS' if row['met'] else 'MISS'}"
            lines.append(
                f"{row['figure']:<54} {fmt(row['value'], 1):>7}  {fmt(row.get('reference'), 1):>10}"
                f"  {fmt(row.get('ratio'), 1):>5}  {verdict}"
            )
        c = result["consistency"]
        lines.append(
            f"  {result['database_version']}: {c['entries']:,} ledger rows, {c['rollup_rows']:,} hourly rollups "
            f"(loaded in {c['load_seconds']:.0f} s), queries: {result['queries']}, world: {result['world']}"
        )
        if "profile" in result:
            parts = sorted(result["profile"].items(), key=lambda kv: -kv[1])
            lines.append("  parts (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in parts))
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = postgresql_benchmark_parser(__doc__, default_rows=DEFAULT_ROWS, timeout=420)
    parser.add_argument("--samples", type=int, default=15, help="measured runs of each (default 15)")
    parser.add_argument("--profile", action="store_true", help="also time each part of the report and dashboard")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    return postgresql_benchmark_main(
        Path(__file__).resolve(),
        args,
        meta={
            "benchmark": "report_queries",
            "samples": args.samples,
            "targets": {"dashboard_p50_over_admin_index_p50": TARGET_DASHBOARD_RATIO},
        },
        worker_args=worker_args,
        figures=figures,
        table=table,
    )


if __name__ == "__main__":
    sys.exit(main())
