"""tracking/0013 adds the ledger's new quantity columns (issue 17).
SQLite adds a NOT NULL column by rebuilding the table, which drops its triggers: the ledger must stay
append-only after the migration, forwards and backwards."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from tests.migrating import migrate_latest

BEFORE = ("tracking", "0012_drop_price_catalog_state")
AFTER = ("tracking", "0013_price_rules_and_usage")


def _migrate(target: tuple[str, str]):
    MigrationExecutor(connection).migrate([target])
    return MigrationExecutor(connection).loader.project_state(target).apps


def _an_update_is_refused(apps, key: str, **quantities: object) -> bool:
    entries = apps.get_model("tracking", "CostEntry").objects
    entry = entries.create(
        occurred_at=datetime(2026, 3, 4, tzinfo=UTC),
        provider="openai",
        model="container",
        amount=Decimal("0.03"),
        pricing_status="priced",
        idempotency_key=key,
        **quantities,
    )
    try:
        with transaction.atomic():
            entries.filter(pk=entry.pk).update(amount=Decimal(0))
    except DatabaseError as error:
        return "append-only" in str(error)
    return False


@pytest.mark.django_db(transaction=True)
def test_the_ledger_stays_append_only_after_the_new_columns_are_added_and_after_they_are_removed():
    try:
        after = _migrate(AFTER)
        assert _an_update_is_refused(after, "after", sessions=1, credits=Decimal("1.5"))

        before = _migrate(BEFORE)
        assert _an_update_is_refused(before, "before")
    finally:
        migrate_latest().get_model("tracking", "CostEntry").objects.all().delete()
