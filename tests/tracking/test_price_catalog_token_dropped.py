"""tracking/0012 drops the price catalog token (its table and the triggers that kept it) and
brings both back when migrated backwards, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.migrating import migrate_latest

WITH_TOKEN = ("tracking", "0011_team_moved_to_core")
WITHOUT_TOKEN = ("tracking", "0012_drop_price_catalog_state")


def _migrate(target: tuple[str, str]):
    MigrationExecutor(connection).migrate([target])
    return MigrationExecutor(connection).loader.project_state(target).apps


def _price_write(apps, unit_price: str) -> None:
    apps.get_model("tracking", "Price").objects.update_or_create(
        provider="acme",
        model="m",
        unit="input_token",
        valid_from=datetime(2020, 1, 1, tzinfo=UTC),
        defaults={"unit_price": Decimal(unit_price)},
    )


@pytest.mark.django_db(transaction=True)
def test_the_catalog_token_goes_forwards_and_comes_back_backwards_with_its_triggers():
    try:
        old = _migrate(WITH_TOKEN)
        _price_write(old, "0.000001")
        first = old.get_model("tracking", "PriceCatalogState").objects.get(pk=1).token

        new = _migrate(WITHOUT_TOKEN)
        assert "tracking_pricecatalogstate" not in connection.introspection.table_names()
        _price_write(new, "0.000002")  # no trigger left to write a token into a table that is gone

        back = _migrate(WITH_TOKEN)
        _price_write(back, "0.000003")
        assert back.get_model("tracking", "PriceCatalogState").objects.get(pk=1).token not in ("", first)
    finally:
        migrate_latest()
