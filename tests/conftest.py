from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from django.conf import settings

from tests.factories import PriceFactory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if settings.DATABASES["default"]["ENGINE"].endswith(".postgresql"):  # django-prometheus wraps the backend
        return
    reason = (
        "needs PostgreSQL: no PostgreSQL binaries on this machine (install postgresql-15)"
        if os.environ.get("COSTCONTROL_NO_POSTGRES")
        else "needs PostgreSQL: run through `make test`, which starts one"
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def gpt4o_prices(db):
    """gpt-4o at its published price: 2.50 USD / 1M input, 10.00 USD / 1M output, 1.25 cached."""
    return {
        unit: PriceFactory(
            provider="openai", model="gpt-4o", operation="chat", unit=unit, unit_price=price, valid_from=EPOCH
        )
        for unit, price in {
            "input_token": "0.0000025",
            "output_token": "0.00001",
            "cached_input_token": "0.00000125",
        }.items()
    }
