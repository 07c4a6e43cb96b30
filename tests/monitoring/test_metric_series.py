"""tracking.MetricSeries: the lifetime totals /metrics exports, kept exactly once by every write path."""

from __future__ import annotations

import importlib
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tracking.models import DURATION_BUCKET_FIELDS, DURATION_BUCKETS_MS, MetricSeries
from tracking.selectors import LIFETIME, ledger_differences
from tracking.services import cost_entry_correct, cost_entry_record, cost_entry_record_many, rollups_rebuild

pytestmark = pytest.mark.django_db


def series(**key):
    key.setdefault("operation", "chat")
    return MetricSeries.objects.get(provider="openai", model="gpt-4o", currency="USD", **key)


def test_every_bucket_column_is_a_declared_bound():
    fields = {f.name for f in MetricSeries._meta.get_fields()}
    assert DURATION_BUCKET_FIELDS == tuple(f"duration_le_{b}" for b in DURATION_BUCKETS_MS)
    assert set(DURATION_BUCKET_FIELDS) <= fields


def test_a_recorded_call_counts_once_in_its_series_with_its_duration(gpt4o_prices):
    event = dict(
        provider="openai", model="gpt-4o", service="api", input_tokens=1000, output_tokens=500, duration_ms=800
    )
    cost_entry_record(idempotency_key="once", **event)
    cost_entry_record(idempotency_key="once", **event)  # the same event again: counted once
    cost_entry_record(provider="openai", model="gpt-4o", service="api", outcome="rate_limited", duration_ms=40)

    row = series(service="api")
    assert row.amount == Decimal("0.0075")
    assert (row.events, row.errors, row.rate_limited, row.unpriced) == (2, 0, 1, 0)
    assert (row.input_tokens, row.output_tokens) == (1000, 500)
    assert (row.duration_count, row.duration_sum_ms) == (2, 840)
    # cumulative buckets: 40 ms is in every one, 800 ms from le=1 s on
    assert [getattr(row, f) for f in DURATION_BUCKET_FIELDS] == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert ledger_differences()[0] == []


def test_a_call_without_a_duration_is_a_request_but_no_observation(gpt4o_prices):
    cost_entry_record(provider="openai", model="gpt-4o", input_tokens=10)

    row = series(service="")
    assert (row.events, row.duration_count, row.duration_le_300000) == (1, 0, 0)


def test_a_correction_adds_its_amount_but_is_not_another_request(gpt4o_prices):
    entry = cost_entry_record(provider="openai", model="gpt-4o", service="api", input_tokens=1000, duration_ms=90).entry
    cost_entry_correct(entry=entry, amount="0.01", note="invoice")

    row = series(service="api")
    assert row.amount == Decimal("0.01")
    assert (row.events, row.duration_count, row.duration_le_100) == (1, 1, 1)
    assert ledger_differences()[0] == []


def test_the_bulk_path_keeps_the_series_of_every_event(gpt4o_prices):
    events = [
        {"provider": "openai", "model": "gpt-4o", "service": f"s{i % 3}", "input_tokens": 100, "duration_ms": 100 * i}
        for i in range(30)
    ]
    events.append({"provider": "openai", "model": "gpt-4o", "outcome": "error", "service": "s0"})
    results = cost_entry_record_many(events)

    assert [r.status for r in results].count("accepted") == 31
    assert MetricSeries.objects.count() == 3
    assert sum(MetricSeries.objects.values_list("events", flat=True)) == 31
    assert series(service="s0").errors == 1
    assert ledger_differences()[0] == []


def test_verify_ledger_finds_a_drifted_series_and_rebuild_rollups_repairs_it(gpt4o_prices):
    cost_entry_record(provider="openai", model="gpt-4o", service="api", input_tokens=1000, duration_ms=300)
    MetricSeries.objects.filter(service="api").update(events=5, duration_le_500=0)

    differences = ledger_differences()[0]
    assert {(d.table, d.field, d.ledger, d.rollup) for d in differences} == {
        ("series", "events", 1, 5),
        ("series", "duration_le_500", 1, 0),
    }
    assert differences[0].scope == "series:provider=openai,service=api,operation=chat,model=gpt-4o"
    assert differences[0].bucket == LIFETIME
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stderr=err, stdout=StringIO())
    assert "series series:provider=openai,service=api" in err.getvalue()

    rollups_rebuild()
    assert ledger_differences()[0] == []
    assert series(service="api").events == 1


def test_a_series_row_the_ledger_does_not_explain_is_a_difference(gpt4o_prices):
    MetricSeries.objects.create(provider="ghost", model="m", amount=Decimal("1"), events=1)

    fields = {d.field for d in ledger_differences()[0] if d.table == "series"}
    assert {"amount", "events"} <= fields


def test_the_migration_backfills_the_same_series_as_the_write_path(gpt4o_prices):
    for i in range(12):
        entry = cost_entry_record(
            provider="openai",
            model="gpt-4o",
            service=["a", "b"][i % 2],
            input_tokens=100 * i,
            output_tokens=i,
            outcome=["success", "error", "rate_limited"][i % 3],
            duration_ms=None if i % 4 == 0 else 70 * i * i,
        ).entry
        if i % 5 == 0:
            cost_entry_correct(entry=entry, amount="1", note="invoice")
    written = sorted(MetricSeries.objects.values_list())
    migration = importlib.import_module("tracking.migrations.0008_metric_series")

    MetricSeries.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(migration.backfill_sql())

    assert [row[1:] for row in sorted(MetricSeries.objects.values_list())] == [row[1:] for row in written]
    assert ledger_differences()[0] == []
