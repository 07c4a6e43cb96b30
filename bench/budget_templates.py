#!/usr/bin/env python
"""Benchmark of budget templates (issue 20): 100,000 values of one template against plain budgets.

    make bench                                                      # every benchmark, one table at the end
    bin/with-postgres .venv/bin/python bench/budget_templates.py    # this one only (PostgreSQL), ~2 min
    ... bench/budget_templates.py --values 20000 --samples 200 --passes 3   # quicker, ~35 s
    ... bench/budget_templates.py --json --profile                  # machine-readable; profiles too

On a fresh PostgreSQL database (created on the server of DATABASE_URL, dropped at the end), migrated.
There is no ledger: every figure reads the rollups only, so the hourly rollups are loaded directly
(COPY) and the daily ones rebuilt from them with the loader's SQL (bench/budget_path.py):

* a monthly template `subject:*` (10 USD a month per end user) with --values (100,000) values, each
  with its budget (budgets.templates.budget_value_new, bulk_create) and spend on one earlier day of
  the month (5-25 % of its amount). --changed (1,000) of them, spread over the range, also spent in
  the current hour; 1 % of those are at a level (60, 85, 97 or 120 %), the rest below 25 %;
* --changed plain monthly budgets (10 USD) on the same scopes as the changed values (`subject:...`),
  and one plain budget on `service:bench` with the spend of a typical value;
* a daily template `job:*` (5 USD a day) with --values values, each with an open period of yesterday
  and spend at one hour of yesterday (4-80 %, 1 % over).

Measured, each beside a reference of the same run:

1. budget_check(scope=<a random value>, amount=0.01) against budget_check(scope="service:bench", ...),
   one of each per sample, in alternating order: p50 / p50 <= 1.3 (TARGET_TEMPLATE_CHECK_RATIO).
2. alerts_evaluate(budgets_only=True), what beat runs every minute: a steady pass of the template
   (the changed values spent a little more in the current hour since the previous pass; the
   template's evaluated_until is set just before, as the previous pass leaves it; the plain budgets
   inactive) against a steady pass of the plain budgets (the template inactive). The first pass of
   each opens the alerts of the values/budgets at a level; in steady passes nothing new is sent.
   Medians of --passes passes each, alternating: p50 / p50 <= 2 (TARGET_TEMPLATE_PASS_RATIO).
3. Period roll-over: rows/s of budgets.services.budget_value_periods_close(now=...) over the daily
   template's open periods of yesterday, against rows/s of INSERT INTO a scratch table (LIKE
   budgets_budgetperiod INCLUDING ALL) SELECT the same rows, just before it: ratio >=
   TARGET_VALUE_ROLLOVER_RATIO (0.05: see bench/_common.py). Medians of --rounds rounds (default 1,
   each one 100,000 periods; the periods are reopened and the table vacuumed between rounds).

--profile also runs one template pass and one roll-over under cProfile (not counted), keeps the
functions that took the most time and writes the profiles to var/bench/budget_templates.*.prof.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402 - needs BASE_DIR on sys.path when run as a script
    TARGET_TEMPLATE_CHECK_RATIO,
    TARGET_TEMPLATE_PASS_RATIO,
    TARGET_VALUE_ROLLOVER_RATIO,
    fmt,
    latency_summary,
    log,
    postgresql_benchmark_main,
    postgresql_benchmark_parser,
    result_write,
)
from bench.alert_eval import profile_top  # noqa: E402
from bench.report_queries import database_version  # noqa: E402

DEFAULT_VALUES = 100_000
DEFAULT_CHANGED = 1000
VALUE_AMOUNT = Decimal("10.00")  # the monthly template's amount, and the plain budgets'
DAILY_AMOUNT = Decimal("5.00")  # the daily template's
AT_LEVEL = (Decimal("0.60"), Decimal("0.85"), Decimal("0.97"), Decimal("1.20"))  # of the amount
PASS_SPEND = Decimal("0.000001")  # what each changed value spends between two passes (moves no level)
CHECK_AMOUNT = Decimal("0.01")
REFERENCE_SCOPE = "service:bench"
SCRATCH = "bench_period_scratch"
PROFILE_DIR = BASE_DIR / "var" / "bench"
NANOS = Decimal(10) ** 9


def nanos(amount: Decimal) -> int:
    return int(amount * NANOS)


# --- the world -----------------------------------------------------------------------------------


def hours(start: datetime, end: datetime) -> list[datetime]:
    """The rollup buckets (UTC hour starts) in [start, end)."""
    from core.periods import hour_floor

    first = hour_floor(start)
    if first < start:
        first += timedelta(hours=1)
    return [first + timedelta(hours=k) for k in range(max(0, int((end - first) / timedelta(hours=1))))]


def earlier_hours(now: datetime) -> tuple[list[datetime], str]:
    """Where the values' earlier spend goes: the hours of the current month's days before today;
    on the month's first day its hours before this one; in its first hour, the day before."""
    from core.periods import hour_floor, period_bounds

    month_start, _ = period_bounds("monthly", now)
    today, _ = period_bounds("daily", now)
    if found := hours(month_start, today):
        return found, "earlier days of the month"
    if found := hours(month_start, hour_floor(now)):
        return found, "earlier hours of today (the month's first day)"
    return hours(hour_floor(now) - timedelta(days=1), hour_floor(now)), "the day before (the month began this hour)"


class RollupCopy:
    """Hourly rollup rows written with COPY (amount and events; the other counters 0)."""

    def __init__(self) -> None:
        from tracking.models import ROLLUP_COUNTERS, SpendRollup

        self.counters = ROLLUP_COUNTERS
        self.table = SpendRollup._meta.db_table
        self.rows: list[tuple[Any, ...]] = []

    def add(self, scope: str, bucket: datetime, amount: Decimal) -> None:
        counters = {"amount": nanos(amount), "events": 1}
        self.rows.append((scope, bucket, "USD", *(counters.get(c, 0) for c in self.counters)))

    def write(self) -> int:
        from django.db import connection

        columns = ", ".join(("scope", "bucket", "currency", *self.counters))
        with connection.cursor() as cursor, cursor.copy(f"COPY {self.table} ({columns}) FROM STDIN") as copy:
            for row in self.rows:
                copy.write_row(row)
        written, self.rows = len(self.rows), []
        return written


def setup_world(*, values: int, changed: int, now: datetime, rnd: random.Random) -> dict[str, Any]:
    from django.db import connection

    from alerts.models import Channel
    from bench.budget_path import rollup_sql
    from budgets.models import Budget
    from budgets.templates import budget_value_new
    from core.periods import hour_floor, period_bounds

    t0 = time.monotonic()
    Channel.objects.create(name="ops e-mail", kind="email", target="ops@example.com", is_default=True)
    monthly = Budget(name="Per end user, monthly", scope="subject:*", period="monthly", amount=VALUE_AMOUNT)
    daily = Budget(name="Per job, daily", scope="job:*", period="daily", amount=DAILY_AMOUNT)
    reference = Budget(name="bench service", scope=REFERENCE_SCOPE, period="monthly", amount=VALUE_AMOUNT)
    for budget in (monthly, daily, reference):
        budget.full_clean()
        budget.save()

    scopes = [f"subject:v{i:06d}" for i in range(values)]
    step = max(1, values // changed)
    changed_scopes = scopes[::step][:changed]
    log(f"creating {values:,} values of {monthly.scope} and {values:,} of {daily.scope}")
    for template, kind in ((monthly, "subject"), (daily, "job")):
        for lo in range(0, values, 10_000):
            Budget.objects.bulk_create(
                [
                    budget_value_new(template=template, scope=f"{kind}:v{i:06d}")
                    for i in range(lo, min(values, lo + 10_000))
                ],
                batch_size=2000,
            )
    plain = [
        Budget(name=f"bench plain {scope}", scope=scope, period="monthly", amount=VALUE_AMOUNT, is_active=False)
        for scope in changed_scopes
    ]
    Budget.objects.bulk_create(plain, batch_size=2000)
    budgets_seconds = time.monotonic() - t0

    # Spend: every value earlier this month, the changed ones also this hour; the daily values yesterday.
    earlier, earlier_where = earlier_hours(now)
    current = hour_floor(now)
    at_level = {scope: k for k, scope in enumerate(changed_scopes) if k < max(4, changed // 100)}
    is_changed = set(changed_scopes)
    rollups = RollupCopy()
    for scope in scopes:
        if scope in at_level:
            total = VALUE_AMOUNT * AT_LEVEL[at_level[scope] % len(AT_LEVEL)]
            rollups.add(scope, rnd.choice(earlier), total - Decimal("0.25"))
            rollups.add(scope, current, Decimal("0.25"))
        elif scope in is_changed:
            rollups.add(scope, rnd.choice(earlier), Decimal(rnd.randrange(50, 150)) / 100)
            rollups.add(scope, current, Decimal(rnd.randrange(10, 100)) / 100)
        else:
            rollups.add(scope, rnd.choice(earlier), Decimal(rnd.randrange(50, 250)) / 100)
    rollups.add(REFERENCE_SCOPE, rnd.choice(earlier), Decimal("1.00"))
    today, _ = period_bounds("daily", now)
    yesterday, _ = period_bounds("daily", today - timedelta(seconds=1))
    yesterday_hours = hours(yesterday, today)
    for i in range(values):
        spent = DAILY_AMOUNT * Decimal("1.2") if i % 100 == 0 else Decimal(rnd.randrange(20, 400)) / 100
        rollups.add(f"job:v{i:06d}", rnd.choice(yesterday_hours), spent)
    hourly_rows = rollups.write()
    with connection.cursor() as cursor:
        for statement in rollup_sql("postgresql")["daily"]:  # the daily rollups, rebuilt from the hourly
            cursor.execute(statement, [])
        # The daily values' open periods of yesterday, as the pass or a check would have opened them.
        cursor.execute(
            'INSERT INTO budgets_budgetperiod (budget_id, start, "end", "limit", carried_over, peak_level, created_at) '
            "SELECT id, %s, %s, amount, 0, '', %s FROM budgets_budget WHERE template_id = %s",
            [yesterday, today, now, daily.pk],
        )
        cursor.execute("ANALYZE")
    return {
        "monthly": monthly.pk,
        "daily": daily.pk,
        "reference": reference.pk,
        "plain": [b.pk for b in Budget.objects.filter(name__startswith="bench plain ").order_by("pk")],
        "changed_scopes": changed_scopes,
        "values": values,
        "changed": len(changed_scopes),
        "at_level": len(at_level),
        "earlier_spend": earlier_where,
        "hourly_rollups": hourly_rows,
        "budgets": Budget.objects.count(),
        "budgets_seconds": budgets_seconds,
        "load_seconds": time.monotonic() - t0,
        "yesterday": yesterday.isoformat(),
    }


# --- 1. budget_check -----------------------------------------------------------------------------


def check_figure(world: dict[str, Any], *, samples: int, warmup: int, rnd: random.Random) -> dict[str, Any]:
    from budgets.models import Budget
    from budgets.selectors import budget_check

    values = [f"subject:v{i:06d}" for i in range(world["values"])]
    before = Budget.objects.count()
    value = budget_check(scope=values[0], amount=CHECK_AMOUNT)
    plain = budget_check(scope=REFERENCE_SCOPE, amount=CHECK_AMOUNT)
    if [s.budget.template_id for s in value] != [world["monthly"]] or [s.budget.pk for s in plain] != [
        world["reference"]
    ]:
        raise RuntimeError(f"budget_check: {value} / {plain}: not one value and one plain budget")
    op_ns, ref_ns = [], []
    for i in range(warmup + samples):
        scope = rnd.choice(values)
        pair = [(op_ns, scope), (ref_ns, REFERENCE_SCOPE)]
        for into, checked in pair if i % 2 else reversed(pair):
            t = time.perf_counter_ns()
            budget_check(scope=checked, amount=CHECK_AMOUNT)
            elapsed = time.perf_counter_ns() - t
            if i >= warmup:
                into.append(elapsed)
    created = Budget.objects.count() - before
    if created:
        raise RuntimeError(f"budget_check created {created} budgets: the values were meant to exist")
    return {"value": latency_summary(op_ns), "plain": latency_summary(ref_ns)}


# --- 2. the alert pass ---------------------------------------------------------------------------


class Passes:
    """Switches between the template and the plain budgets, adds the changed values' spend and times
    one alerts_evaluate(budgets_only=True)."""

    def __init__(self, world: dict[str, Any]) -> None:
        from alerts.models import Alert
        from budgets.models import Budget

        self.world = world
        self.template = Budget.objects.get(pk=world["monthly"])
        self.alerts = Alert.objects
        self.budgets = Budget.objects

    def use(self, kind: str) -> None:
        """Only `kind` ("template" or "plain") active. Deactivating the template stops the pass from
        looking for its values; the values with alerts are deactivated with it (the pass evaluates
        them through their firing alerts otherwise), as Budget.save would deactivate every value."""
        from django.db.models import Q

        on = kind == "template"
        valued = self.alerts.filter(budget__template=self.template).values("budget_id")
        self.budgets.filter(Q(pk=self.template.pk) | Q(pk__in=valued)).update(is_active=on)
        self.budgets.filter(pk__in=self.world["plain"]).update(is_active=not on)

    def prepare(self) -> None:
        """Just before a pass: the template was last evaluated now (the previous pass), then the
        changed values spend a little in the current hour (the plain budgets on their scopes too)."""
        from django.db import transaction
        from django.utils import timezone

        from core.periods import hour_floor
        from tracking.models import ROLLUP_COUNTERS
        from tracking.rollups import rollups_add

        moment = timezone.now()
        self.budgets.filter(pk=self.template.pk).update(evaluated_until=moment)
        counters = [PASS_SPEND if c == "amount" else (1 if c == "events" else 0) for c in ROLLUP_COUNTERS]
        bucket = hour_floor(timezone.now())
        with transaction.atomic():
            rollups_add({(scope, bucket, "USD"): counters for scope in self.world["changed_scopes"]}, series={})

    def run(self, kind: str, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
        from django.db import connection

        from alerts.evaluation import alerts_evaluate
        from alerts.models import Alert, Notification

        self.use(kind)
        self.prepare()
        alerts, notifications = Alert.objects.count(), Notification.objects.count()
        statements = 0

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            nonlocal statements
            statements += 1
            return execute(sql, params, many, context)

        gc.collect()
        with connection.execute_wrapper(count):
            if profiler is not None:
                profiler.enable()
            t = time.perf_counter_ns()
            summary = alerts_evaluate(budgets_only=True)
            elapsed = time.perf_counter_ns() - t
            if profiler is not None:
                profiler.disable()
        if summary.errors:
            raise RuntimeError(f"alerts_evaluate: {summary.errors[:3]}")
        return {
            "ns": elapsed,
            "budgets": summary.budgets,
            "firing": summary.firing,
            "queries": statements,
            "alerts_opened": Alert.objects.count() - alerts,
            "notifications": Notification.objects.count() - notifications,
        }


def pass_figure(world: dict[str, Any], *, passes: int, deadline: float, profile: bool) -> dict[str, Any]:
    from budgets.models import Budget

    # Neither the daily template (its values are figure 3's) nor the reference budget of figure 1 in
    # either pass: each pass evaluates the 1,000 changed values or the 1,000 plain budgets alone.
    Budget.objects.filter(pk__in=[world["daily"], world["reference"]]).update(is_active=False)
    runner = Passes(world)
    out: dict[str, Any] = {}
    for kind in ("template", "plain"):
        log(f"first {kind} pass (opens the alerts)")
        out[f"{kind}_first"] = runner.run(kind)
    steady: dict[str, list[dict[str, Any]]] = {"template": [], "plain": []}
    for i in range(passes):
        if time.time() > deadline:
            break
        for kind in ("template", "plain") if i % 2 == 0 else ("plain", "template"):
            steady[kind].append(runner.run(kind))
    for kind, runs in steady.items():
        out[kind] = latency_summary([r["ns"] for r in runs])
        out[f"{kind}_runs"] = [{k: v for k, v in r.items() if k != "ns"} for r in runs]
    if profile:
        profiler = cProfile.Profile()
        runner.run("template", profiler)
        out["template_profile"] = profile_top(profiler)
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(PROFILE_DIR / "budget_templates.pass.prof")
    Budget.objects.filter(pk__in=[world["daily"], world["reference"]]).update(is_active=True)
    return out


# --- 3. period roll-over -------------------------------------------------------------------------


def rollover_figure(world: dict[str, Any], *, rounds: int, deadline: float, profile: bool) -> dict[str, Any]:
    from django.db import connection, transaction
    from django.db.models import Count
    from django.utils import timezone

    from budgets.models import BudgetPeriod
    from budgets.services import budget_value_periods_close
    from tracking.selectors import spend_totals

    periods = BudgetPeriod.objects.filter(budget__template_id=world["daily"])
    table = BudgetPeriod._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {SCRATCH} (LIKE {table} INCLUDING ALL)")

    def reference(now: datetime) -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {SCRATCH}")
            t = time.perf_counter_ns()
            with transaction.atomic():
                cursor.execute(
                    f"INSERT INTO {SCRATCH} SELECT p.* FROM {table} p JOIN budgets_budget b ON b.id = p.budget_id "
                    f'WHERE p.closed_at IS NULL AND p."end" <= %s AND b.template_id IS NOT NULL',
                    [now],
                )
                rows = cursor.rowcount
            return rows, time.perf_counter_ns() - t

    def close(now: datetime, profiler: cProfile.Profile | None = None) -> tuple[int, int]:
        gc.collect()
        if profiler is not None:
            profiler.enable()
        t = time.perf_counter_ns()
        rows = budget_value_periods_close(now=now)
        elapsed = time.perf_counter_ns() - t
        if profiler is not None:
            profiler.disable()
        return rows, elapsed

    def reopen() -> None:
        periods.update(closed_at=None, spent_at_close=None, peak_level="")
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {table}")

    out: dict[str, Any] = {"close_rows_per_s": [], "reference_rows_per_s": [], "rows": []}
    if profile:
        profiler = cProfile.Profile()
        close(timezone.now(), profiler)
        out["close_profile"] = profile_top(profiler)
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(PROFILE_DIR / "budget_templates.rollover.prof")
        reopen()
    for i in range(rounds):
        if i and time.time() > deadline:
            break
        now = timezone.now()
        # The reference first: it reads the rows the close then closes (the same WHERE).
        rows, ns = reference(now)
        out["reference_rows_per_s"].append(rows / (ns / 1e9))
        log(f"closing {rows:,} value periods (round {i + 1})")
        rows, ns = close(now)
        out["close_rows_per_s"].append(rows / (ns / 1e9))
        out["rows"].append(rows)
        # What was closed is what the rollups say each value spent yesterday.
        sample = list(periods.select_related("budget").order_by("?")[:50])
        want = spend_totals([(p.budget.scope, "USD", p.start, p.end) for p in sample])
        if any(p.closed_at is None or p.spent_at_close != w for p, w in zip(sample, want, strict=True)):
            raise RuntimeError("a closed period's spend differs from its rollups")
        levels = periods.values_list("peak_level").annotate(n=Count("id")).order_by("peak_level")
        out.setdefault("peak_levels", {level or "none": n for level, n in levels})
        if i < rounds - 1:
            reopen()
    out["close"] = statistics.median(out["close_rows_per_s"])
    out["reference"] = statistics.median(out["reference_rows_per_s"])
    return out


# --- the worker and the figures ------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costcontrol.settings.local")
    os.environ["CELERY_BROKER_URL"] = "memory://"
    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    deadline = args.deadline
    out: dict[str, Any] = {"database": "postgresql", "database_version": database_version(), "debug": settings.DEBUG}
    log("migrating a fresh database")
    call_command("migrate", verbosity=0, interactive=False)
    world = setup_world(values=args.values, changed=args.changed, now=timezone.now(), rnd=random.Random(20251124))
    out["world"] = {k: v for k, v in world.items() if k not in ("plain", "changed_scopes")}
    log(f"loaded in {world['load_seconds']:.0f} s; budget_check, {args.samples} samples of each")
    result_write(args.result_file, out)
    out["check"] = check_figure(world, samples=args.samples, warmup=args.warmup, rnd=random.Random(7))
    result_write(args.result_file, out)
    log(f"alert passes: 1 first and {args.passes} steady of each")
    out["passes"] = pass_figure(world, passes=args.passes, deadline=deadline, profile=args.profile)
    result_write(args.result_file, out)
    log(f"period roll-over, {args.rounds} round(s)")
    out["rollover"] = rollover_figure(world, rounds=args.rounds, deadline=deadline, profile=args.profile)
    result_write(args.result_file, out)


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows this benchmark adds to the `make bench` table."""
    if "error" in result or "rollover" not in result:
        return []
    w = result["world"]
    size = f"{w['values'] / 1e3:g} k"
    check, passes, roll = result["check"], result["passes"], result["rollover"]
    check_ratio = check["value"]["p50_ms"] / check["plain"]["p50_ms"]
    pass_ratio = passes["template"]["p50_ms"] / passes["plain"]["p50_ms"]
    roll_ratio = roll["close"] / roll["reference"]
    return [
        {
            "figure": f"budget_check p50, a value of a template of {size} values",
            "value": check["value"]["p50_ms"],
            "unit": "ms",
            "reference": check["plain"]["p50_ms"],
            "reference_name": "budget_check of a plain budget",
            "ratio": check_ratio,
            "target": f"ratio <= {TARGET_TEMPLATE_CHECK_RATIO:g}",
            "met": check_ratio <= TARGET_TEMPLATE_CHECK_RATIO,
        },
        {
            "figure": f"budget evaluation pass, {w['changed']:,} of {size} template values changed, p50",
            "value": passes["template"]["p50_ms"],
            "unit": "ms",
            "reference": passes["plain"]["p50_ms"],
            "reference_name": f"pass over {w['changed']:,} plain budgets",
            "ratio": pass_ratio,
            "target": f"ratio <= {TARGET_TEMPLATE_PASS_RATIO:g}",
            "met": pass_ratio <= TARGET_TEMPLATE_PASS_RATIO,
        },
        {
            "figure": f"period roll-over of {size} template values (budget_value_periods_close)",
            "value": roll["close"],
            "unit": "rows/s",
            "reference": roll["reference"],
            "reference_name": "INSERT ... SELECT rows/s",
            "ratio": roll_ratio,
            "target": f"ratio >= {TARGET_VALUE_ROLLOVER_RATIO:g}",
            "met": roll_ratio >= TARGET_VALUE_ROLLOVER_RATIO,
        },
    ]


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"budget templates, machine: {meta['cores']} cores, Python {meta['python']}, Django {meta['django']}",
        "figure                                                                  value      reference   ratio  target",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"{result['database']}: error: {result['error']}")
            continue
        for row in figures(result):
            verdict = f"{row['target']} -> {'PASS' if row['met'] else 'MISS'}"
            lines.append(
                f"{row['figure']:<70} {fmt(row['value'], 2):>9} {row['unit']:<6} {fmt(row['reference'], 2):>9}"
                f"  {row['ratio']:>6.3g}  {verdict}"
            )
        w, check, passes, roll = result["world"], result["check"], result["passes"], result["rollover"]
        lines.append(
            f"  {result['database_version']}: {w['budgets']:,} budgets, {w['hourly_rollups']:,} hourly rollups, "
            f"loaded in {w['load_seconds']:.0f} s (budgets {w['budgets_seconds']:.0f} s); earlier spend on "
            f"{w['earlier_spend']}; {w['at_level']} changed values at a level"
        )
        lines.append(
            f"  budget_check p99: value {check['value']['p99_ms']:.2f} ms, plain {check['plain']['p99_ms']:.2f} ms "
            f"({check['value']['n']} samples each)"
        )
        for kind in ("template", "plain"):
            first, runs = passes[f"{kind}_first"], passes[f"{kind}_runs"]
            lines.append(
                f"  {kind} pass: first {first['ns'] / 1e6:.0f} ms ({first['budgets']} budgets, {first['alerts_opened']} "
                f"alerts opened, {first['notifications']} notifications, {first['queries']} queries); steady "
                f"p50 {passes[kind]['p50_ms']:.0f} ms over {len(runs)}, {runs[0]['budgets'] if runs else '-'} budgets, "
                f"{runs[0]['queries'] if runs else '-'} queries, {sum(r['notifications'] for r in runs)} notifications"
            )
        lines.append(
            f"  roll-over: {roll['rows']} rows a round; close "
            + ", ".join(f"{r:,.0f}" for r in roll["close_rows_per_s"])
            + " rows/s; INSERT ... SELECT "
            + ", ".join(f"{r:,.0f}" for r in roll["reference_rows_per_s"])
            + f" rows/s; peak levels {roll.get('peak_levels')}"
        )
        for name, key in (("template pass", passes.get("template_profile")), ("roll-over", roll.get("close_profile"))):
            for order in ("cumulative", "own"):
                top = (key or {}).get(order, [])[:12]
                if top:
                    field = "cumulative_s" if order == "cumulative" else "own_s"
                    lines.append(
                        f"  {name} under cProfile, top by {order} (s): "
                        + "; ".join(f"{r['function']} {r[field]:.2f} x{r['calls']:,}" for r in top)
                    )
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def worker_args(args: argparse.Namespace, deadline: float) -> list[str]:
    extra = ["--profile"] if args.profile else []
    return [
        *("--values", str(args.values), "--changed", str(args.changed), "--samples", str(args.samples)),
        *("--warmup", str(args.warmup), "--passes", str(args.passes), "--rounds", str(args.rounds)),
        *("--deadline", str(deadline), *extra),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = postgresql_benchmark_parser(__doc__, default_rows=None, timeout=480)
    parser.add_argument("--values", type=int, default=DEFAULT_VALUES, help="values of each template (default 100000)")
    parser.add_argument("--changed", type=int, default=DEFAULT_CHANGED, help="values that spent since the last pass")
    parser.add_argument("--samples", type=int, default=500, help="budget_check samples of each (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="budget_check calls of each not counted (default 20)")
    parser.add_argument("--passes", type=int, default=5, help="steady alert passes of each (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="roll-over rounds (default 1: ~90 s at 100 k)")
    parser.add_argument("--profile", action="store_true", help="also one pass and one roll-over under cProfile")
    args = parser.parse_args(argv)
    if args.changed < 1 or args.values < args.changed:
        parser.error("--changed must be from 1 to --values")
    if args.worker:
        worker(args)
        return 0
    return postgresql_benchmark_main(
        Path(__file__).resolve(),
        args,
        meta={
            "benchmark": "budget_templates",
            "values": args.values,
            "changed": args.changed,
            "passes": args.passes,
            "rounds": args.rounds,
            "targets": {
                "value_check_p50_over_plain_check_p50": TARGET_TEMPLATE_CHECK_RATIO,
                "template_pass_p50_over_plain_pass_p50": TARGET_TEMPLATE_PASS_RATIO,
                "value_close_rows_per_s_over_insert_select": TARGET_VALUE_ROLLOVER_RATIO,
            },
        },
        worker_args=worker_args,
        figures=figures,
        table=table,
    )


if __name__ == "__main__":
    sys.exit(main())
