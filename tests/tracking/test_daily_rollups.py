"""Daily rollups: written with the hourly ones, read for whole UTC days, audited like them."""

from __future__ import annotations

import importlib
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.apps import apps
from django.core.management import CommandError, call_command

from tests.factories import PriceFactory
from tracking.models import CostEntry, SpendRollup, SpendRollupDay
from tracking.rollups import hour_bucket
from tracking.selectors import ledger_differences, rollup_window, spend_total
from tracking.services import cost_entry_correct, cost_entry_record

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


@pytest.fixture
def ledger(db):
    """150 events over the last five days (UTC), one of them corrected."""
    PriceFactory(provider="acme", model="m1", unit="input_token", unit_price="0.000001")
    rng = random.Random(11)
    with time_machine.travel(NOW, tick=False):
        for i in range(150):
            cost_entry_record(
                provider="acme",
                model="m1",
                input_tokens=rng.randint(1, 90_000),
                service=rng.choice(["chat", "batch"]),
                occurred_at=NOW - timedelta(minutes=rng.randint(0, 5 * 24 * 60)),
                idempotency_key=f"d{i}",
            )
        cost_entry_correct(entry=CostEntry.objects.order_by("pk").first(), amount="1.5", note="invoice")


def ledger_sum(scope_service: str | None, start: datetime, end: datetime) -> Decimal:
    total = Decimal(0)
    for entry in CostEntry.objects.all():
        if start <= hour_bucket(entry.occurred_at) < end and scope_service in (None, entry.service):
            total += entry.amount
    return total


def test_a_window_is_split_into_ragged_hours_and_whole_days():
    window = rollup_window(datetime(2026, 11, 20, 22, tzinfo=UTC), datetime(2026, 11, 23, 3, tzinfo=UTC))
    assert (window.start, window.head_end) == (
        datetime(2026, 11, 20, 22, tzinfo=UTC),
        datetime(2026, 11, 21, tzinfo=UTC),
    )
    assert (window.days_start, window.days_end) == (
        datetime(2026, 11, 21, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert (window.tail_start, window.end) == (
        datetime(2026, 11, 23, tzinfo=UTC),
        datetime(2026, 11, 23, 3, tzinfo=UTC),
    )
    # Inside one day: no whole day, the hourly ranges cover the window exactly once.
    inside = rollup_window(datetime(2026, 11, 20, 5, tzinfo=UTC), datetime(2026, 11, 20, 9, tzinfo=UTC))
    assert inside.days_start >= inside.days_end
    assert (inside.start, inside.head_end) == (
        datetime(2026, 11, 20, 5, tzinfo=UTC),
        datetime(2026, 11, 20, 9, tzinfo=UTC),
    )
    assert inside.tail_start >= inside.end
    # Bounds in another zone are read in UTC.
    berlin = rollup_window(
        datetime(2026, 11, 1, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")),
        datetime(2026, 11, 3, tzinfo=UTC),
    )
    assert berlin.days_start == datetime(2026, 11, 1, tzinfo=UTC) and berlin.head_end == berlin.days_start


def test_the_daily_rows_are_the_hourly_rows_summed_per_utc_day(ledger):
    assert ledger_differences()[0] == []
    assert SpendRollupDay.objects.filter(scope="global").count() == 6  # five days back, plus today
    for day in SpendRollupDay.objects.filter(scope="service:chat"):
        hours = SpendRollup.objects.filter(
            scope="service:chat", bucket__gte=day.bucket, bucket__lt=day.bucket + timedelta(days=1)
        )
        assert day.amount == sum((h.amount for h in hours), Decimal(0))
        assert day.events == sum(h.events for h in hours)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (NOW - timedelta(days=6), NOW + timedelta(hours=1)),  # everything
        (datetime(2026, 11, 19, 17, tzinfo=UTC), datetime(2026, 11, 22, 4, tzinfo=UTC)),  # ragged both ends
        (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)),  # whole days only
        (datetime(2026, 11, 21, 3, tzinfo=UTC), datetime(2026, 11, 21, 9, tzinfo=UTC)),  # inside a day
        (datetime(2026, 11, 21, 3, 40, tzinfo=UTC), datetime(2026, 11, 23, 12, 10, tzinfo=UTC)),  # off the hour
    ],
)
def test_spend_over_any_window_equals_the_ledger(ledger, start, end):
    expected_start = start if start == hour_bucket(start) else hour_bucket(start) + timedelta(hours=1)
    # spend_total counts hourly buckets b with start <= b < end.
    assert spend_total(scope="global", start=start, end=end) == ledger_sum(None, expected_start, end)
    assert spend_total(scope="service:chat", start=start, end=end) == ledger_sum("chat", expected_start, end)


def test_a_window_of_whole_days_is_answered_from_the_daily_rows_in_a_few_queries(ledger, django_assert_max_num_queries):
    start, end = datetime(2026, 11, 18, 23, tzinfo=UTC), NOW
    expected = spend_total(scope="global", start=start, end=end)
    # The hourly rows of the whole days inside the window are not read: without them, the same total.
    SpendRollup.objects.filter(
        bucket__gte=datetime(2026, 11, 19, tzinfo=UTC), bucket__lt=datetime(2026, 11, 23, tzinfo=UTC)
    ).delete()

    with django_assert_max_num_queries(3):
        assert spend_total(scope="global", start=start, end=end) == expected > 0


def test_verify_ledger_names_a_wrong_daily_row_and_rebuild_repairs_it(ledger):
    day = SpendRollupDay.objects.filter(scope="global").first()
    day.amount += Decimal("0.01")
    day.save(update_fields=["amount"])
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stdout=StringIO(), stderr=err)
    assert "daily global @" in err.getvalue()
    call_command("rebuild_rollups", stdout=StringIO())
    assert ledger_differences()[0] == []


def test_the_migration_fills_the_daily_rows_from_the_hourly_ones(ledger):
    expected = sorted(SpendRollupDay.objects.values_list("scope", "bucket", "currency", "amount", "events", "errors"))
    SpendRollupDay.objects.all().delete()
    migration = importlib.import_module("tracking.migrations.0005_spend_rollup_day")
    migration.days_from_hours(apps, None)
    assert sorted(SpendRollupDay.objects.values_list("scope", "bucket", "currency", "amount", "events", "errors")) == (
        expected
    )
