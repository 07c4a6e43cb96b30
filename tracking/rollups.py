"""What an entry adds to the rollups, and the one function that adds it.

Every ledger write (cost_entry_record_many, cost_entry_correct) and rollups_rebuild goes through
:func:`rollups_add`: hourly rows, then daily rows, then MetricSeries rows, each added to with an
atomic ``INSERT ... ON CONFLICT (key) DO UPDATE SET c = table.c + excluded.c`` (SQLite and
PostgreSQL both speak it) in sorted key order, the lock order that keeps concurrent writers from
deadlocking. verify_ledger recomputes the same rows from the ledger with the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import models, transaction

from core.scopes import service_scope, team_scope

from .models import (
    DURATION_BUCKETS_MS,
    ROLLUP_COUNTERS,
    SERIES_COUNTERS,
    SERIES_KEY,
    TOKEN_FIELDS,
    CostEntry,
    MetricSeries,
    Outcome,
    PricingStatus,
    SpendRollup,
    SpendRollupDay,
)

RollupKey = tuple[str, datetime, str]  # scope, bucket, currency
SeriesKey = tuple[str, str, str, str, str]  # MetricSeries: provider, service, operation, model, currency
ROLLUP_KEY = ("scope", "bucket", "currency")


def entry_scopes(entry: CostEntry) -> list[str]:
    """Every scope an entry counts towards (the rollup keys; budgets choose among them)."""
    scopes = ["global", f"provider:{entry.provider}", f"model:{entry.model}"]
    if entry.operation:
        scopes.append(f"operation:{entry.operation}")  # the daily report's breakdown by operation
    if entry.service:
        scopes.append(f"service:{entry.service}")
    if entry.subject:
        scopes.append(f"subject:{entry.subject}")
    if entry.job:
        scopes.append(f"job:{entry.job}")
    if entry.service and "/" not in entry.service:
        # The service's own copy of its end users and jobs (core.scopes.service_narrowed): what a
        # template narrowed to one service reads (service:pipeline/job:*).
        scopes.extend(service_scope(entry.service, s) for s in scopes if s.startswith(("subject:", "job:")))
    scopes.extend(f"tag:{key}={value}" for key, value in sorted((entry.tags or {}).items()))
    if entry.team_id:
        # The team's own copy of every scope (core.scopes): its spend per dimension, read by its
        # budgets, rules, keys and staff without seeing another team's.
        scopes.extend([team_scope(entry.team.name, scope) for scope in scopes])
    return scopes


def hour_bucket(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_bucket(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def entry_counters(entry: CostEntry) -> tuple[Any, ...]:
    """The amounts an entry adds to each of its rollups, in ROLLUP_COUNTERS order.

    A correction adds its amount but is not another event.
    """
    is_event = entry.corrects_id is None
    return (
        entry.amount,
        int(is_event),
        int(is_event and entry.outcome == Outcome.ERROR),
        int(is_event and entry.outcome == Outcome.RATE_LIMITED),
        int(is_event and entry.pricing_status == PricingStatus.UNPRICED),
        *(getattr(entry, name) for name in TOKEN_FIELDS),
    )


def _add(totals: dict[Any, list[Any]], key: Any, counters: Sequence[Any]) -> None:
    current = totals.get(key)
    if current is None:
        totals[key] = list(counters)
    else:
        for i, value in enumerate(counters):
            current[i] += value


def rollup_deltas(entries: Iterable[CostEntry]) -> dict[RollupKey, list[Any]]:
    """What the entries add to each hourly rollup row."""
    deltas: dict[RollupKey, list[Any]] = {}
    for entry in entries:
        counters, bucket = entry_counters(entry), hour_bucket(entry.occurred_at)
        for scope in entry_scopes(entry):
            _add(deltas, (scope, bucket, entry.currency), counters)
    return deltas


def daily_deltas(deltas: Mapping[RollupKey, Sequence[Any]]) -> dict[RollupKey, list[Any]]:
    """Hourly deltas (or totals) folded into UTC days."""
    days: dict[RollupKey, list[Any]] = {}
    for (scope, bucket, currency), counters in deltas.items():
        _add(days, (scope, day_bucket(bucket), currency), counters)
    return days


def entry_series_counters(entry: CostEntry) -> tuple[Any, ...]:
    """What an entry adds to its MetricSeries row, in SERIES_COUNTERS order: the rollup counters, then
    the request-duration histogram (a request that reported its duration; corrections are not requests)."""
    timed = entry.corrects_id is None and entry.duration_ms is not None
    duration = entry.duration_ms if timed else 0
    return (
        *entry_counters(entry),
        int(timed),
        duration,
        *(int(timed and duration <= bound) for bound in DURATION_BUCKETS_MS),
    )


def series_key(entry: CostEntry) -> SeriesKey:
    return (entry.provider, entry.service, entry.operation, entry.model, entry.currency)


def metric_series_deltas(entries: Iterable[CostEntry]) -> dict[SeriesKey, list[Any]]:
    """What the entries add to each MetricSeries row."""
    deltas: dict[SeriesKey, list[Any]] = {}
    for entry in entries:
        _add(deltas, series_key(entry), entry_series_counters(entry))
    return deltas


_UPSERT_CHUNK = 500  # rows per statement, fewer where the database limits parameters (SQLite)


def _counters_upsert(
    model: type[models.Model],
    key_columns: Sequence[str],
    counters: Sequence[str],
    rows: Mapping[tuple[Any, ...], Sequence[Any]],
) -> None:
    """Add counter deltas to the rows of `model`'s table keyed by `key_columns`: an atomic
    INSERT ... ON CONFLICT DO UPDATE per chunk of rows, in sorted key order (the lock order)."""
    if not rows:
        return
    conn = transaction.get_connection()
    quote = conn.ops.quote_name
    table = quote(model._meta.db_table)
    fields = [model._meta.get_field(name) for name in (*key_columns, *counters)]
    # Each value goes through its field's get_db_prep_save (a bucket becomes what the database
    # takes for a datetime, an amount nano-units), but for the plain integer counters: a Python
    # int is what a BigIntegerField gives every backend, and they are most of the values.
    prepare = [None if type(field) is models.BigIntegerField else field.get_db_prep_save for field in fields]
    columns = ", ".join(quote(field.column) for field in fields)
    conflict = ", ".join(quote(field.column) for field in fields[: len(key_columns)])
    updates = ", ".join(
        f"{quote(f.column)} = {table}.{quote(f.column)} + excluded.{quote(f.column)}"
        for f in fields[len(key_columns) :]
    )
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    keys = sorted(rows)
    size = min(_UPSERT_CHUNK, conn.ops.bulk_batch_size(fields, keys))
    with conn.cursor() as cursor:
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            params = [
                value if prep is None else prep(value, conn)
                for key in chunk
                for prep, value in zip(prepare, (*key, *rows[key]), strict=True)
            ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))}"
                f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                params,
            )


def rollups_add(deltas: Mapping[RollupKey, Sequence[Any]], *, series: Mapping[SeriesKey, Sequence[Any]]) -> None:
    """Add hourly deltas (rollup_deltas) to the hourly and the daily rollups, and series deltas
    (metric_series_deltas) to their MetricSeries rows. Inside the caller's transaction.

    Lock order, the same in every writer so that concurrent ones never deadlock: every hourly row
    first, then every daily row, then every series row, each in sorted key order.
    """
    _counters_upsert(SpendRollup, ROLLUP_KEY, ROLLUP_COUNTERS, deltas)
    _counters_upsert(SpendRollupDay, ROLLUP_KEY, ROLLUP_COUNTERS, daily_deltas(deltas))
    _counters_upsert(MetricSeries, SERIES_KEY, SERIES_COUNTERS, series)
