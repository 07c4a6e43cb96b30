from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from budgets.models import Budget
from budgets.services import budget_defaults_ensure
from tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 11, 0, tzinfo=UTC)


def run(*args: str) -> str:
    out = StringIO()
    call_command("budget_status", *args, stdout=out)
    return out.getvalue()


@time_machine.travel(NOW, tick=False)
def test_budget_status_prints_every_active_budget_with_its_numbers(spend):
    BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("200"))
    BudgetFactory(name="Retired", is_active=False)
    spend("100.5", datetime(2026, 11, 1, 3, tzinfo=UTC), service="image-api")
    text = run()
    assert "Image API [service:image-api, monthly]: spent 100.50 USD of 200.00 USD" in text
    assert "remaining 99.50 USD, 50.25%, level info" in text
    assert "days left 20" in text
    assert "Retired" not in text


@time_machine.travel(NOW, tick=False)
def test_budget_status_json_gives_amounts_as_decimal_strings(spend):
    BudgetFactory(name="All", amount=Decimal("30"))
    # Less than two weeks of history (first spend on the 5th): the forecast is the linear run-rate.
    spend("0.000000001", datetime(2026, 11, 5, tzinfo=UTC))
    spend("11", datetime(2026, 11, 5, tzinfo=UTC))
    [row] = json.loads(run("--json"))
    assert row["spent"] == "11.000000001"
    assert row["limit"] == "30.000000000"
    assert row["level"] == "ok"  # 36.67 % is below the first threshold
    assert row["days_left"] == 20
    # 11 USD in the 144 hours since the first spend, for the 479 hours after this one: 47.59 USD,
    # 30 reached 249 hours in, on the 21st.
    assert row["forecast_method"] == "linear"
    assert Decimal(row["forecast"]) == Decimal("11.000000001") + (11_000_000_001 // 144) * 479 * Decimal("1E-9")
    assert Decimal(row["forecast_low"]) <= Decimal(row["forecast"]) <= Decimal(row["forecast_high"])
    assert row["projected_exceed_at"].startswith("2026-11-21T")


def test_bootstrap_creates_the_global_monthly_budget_once(settings):
    settings.MONTHLY_BUDGET = Decimal("250")
    first, second = StringIO(), StringIO()
    call_command("bootstrap", stdout=first)
    call_command("bootstrap", stdout=second)
    budget = Budget.objects.get()
    assert (budget.name, budget.scope, budget.period, budget.amount) == ("Global monthly", "global", "monthly", 250)
    assert "Default budget: Global monthly" in first.getvalue()
    assert "none created" in second.getvalue()
    assert budget_defaults_ensure().created is False
