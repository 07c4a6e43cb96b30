"""The budget admin: the change list's numbers, filters and sorting; history and burn-down; validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from budgets.models import Budget, BudgetPeriod
from budgets.services import budget_period_close, budget_period_current
from tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
CHANGELIST = reverse("admin:budgets_budget_changelist")


def names_in(response) -> list[str]:
    return [b.name for b in response.context["cl"].result_list]


@pytest.fixture
def three_budgets(spend):
    """openai at 98.8 %, image-api at 30 %, batch at 120 % (hard limit), in November 2026 (less than a
    week of history: linear forecasts)."""
    with time_machine.travel(NOW, tick=False):
        BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("250"))
        BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("100"))
        BudgetFactory(name="Batch", scope="job:batch-123", amount=Decimal("10"), hard_limit=True)
        spend("205.10", datetime(2026, 11, 15, 9, tzinfo=UTC))
        spend("30", datetime(2026, 11, 16, 9, tzinfo=UTC), service="image-api")
        spend("12", datetime(2026, 11, 17, 9, tzinfo=UTC), job="batch-123")


@time_machine.travel(NOW, tick=False)
def test_the_change_list_shows_where_every_budget_stands(admin_client, three_budgets):
    periods_before = BudgetPeriod.objects.count()
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    # OpenAI: 247.10 of 250 (the image-api spend is openai too).
    assert "247.10 USD" in html and "250.00 USD" in html and "2.90 USD" in html
    assert 'data-level="critical"' in html  # 98.8 %
    assert 'data-level="exceeded"' in html  # batch: 12 of 10
    assert 'data-level="ok"' in html  # image-api: 30 %
    assert "Days left" in html and ">10<" in html  # the 21st at noon: 9.5 days -> 10
    assert "Forecast at period end" in html and "(linear; 90 % interval" in html
    assert "forecast to exceed on 2" in html  # image-api: 30 of 100 in 5 days, over 100 before the 1st
    assert BudgetPeriod.objects.count() == periods_before  # a read writes nothing


@time_machine.travel(NOW, tick=False)
def test_the_change_list_sorts_by_utilisation_and_filters_by_level_period_and_scope_kind(admin_client, three_budgets):
    column = list(admin_client.get(CHANGELIST).context["cl"].list_display).index("progress")
    assert names_in(admin_client.get(CHANGELIST, {"o": str(column)})) == ["Image API", "OpenAI monthly", "Batch"]
    assert names_in(admin_client.get(CHANGELIST, {"o": f"-{column}"})) == ["Batch", "OpenAI monthly", "Image API"]
    assert names_in(admin_client.get(CHANGELIST, {"level": "exceeded"})) == ["Batch"]
    assert names_in(admin_client.get(CHANGELIST, {"level": "critical"})) == ["OpenAI monthly"]
    assert names_in(admin_client.get(CHANGELIST, {"level": "ok"})) == ["Image API"]
    assert names_in(admin_client.get(CHANGELIST, {"scope_kind": "service"})) == ["Image API"]
    assert names_in(admin_client.get(CHANGELIST, {"period": "daily"})) == []


def test_the_change_page_shows_period_history_and_the_burn_down(admin_client, spend):
    budget = BudgetFactory(name="Rolling", amount=Decimal("100"), rollover=True, rollover_cap=Decimal("30"))
    with time_machine.travel(datetime(2026, 10, 10, tzinfo=UTC), tick=False):
        spend("40", datetime(2026, 10, 10, tzinfo=UTC))
        october = budget_period_current(budget=budget)
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=UTC), tick=False):
        budget_period_close(period=october)
        budget_period_current(budget=budget)  # carries min(60, 30)
    with time_machine.travel(NOW, tick=False):
        spend("55", datetime(2026, 11, 10, tzinfo=UTC))
        response = admin_client.get(reverse("admin:budgets_budget_change", args=[budget.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    # History: October, closed, 100 limit, 40 spent, peak info.
    assert "Period history" in html
    assert "2026-10-01 - 2026-10-31" in html and "40.00 USD" in html and "40.0 %" in html
    # This period: 130 = 100 + 30 carried, 55 spent.
    assert "<td>130.00 USD (incl. 30.00 USD carried over)</td>" in html
    # The burn-down's data (drawn by Chart.js): spent so far, from the start, then one point per day
    # from the 1st to the 21st; the forecast.
    charts = json.loads(re.search(r'id="budget-chart-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    series = {s["style"]: s for s in charts["burnDown"]["series"]}
    assert len(series["actual"]["points"]) == 22 and series["actual"]["points"][-1]["text"] == "55.00 USD"
    assert "forecast" in series


def test_the_admin_refuses_invalid_input_naming_each_field_and_saves_nothing(admin_client):
    response = admin_client.post(
        reverse("admin:budgets_budget_add"),
        {
            "name": "Bad",
            "scope": "region:eu",
            "amount": "-5",
            "currency": "USD",
            "period": "monthly",
            "thresholds": "50, 40, 2000",
            "rollover_cap": "-1",
            "metadata": "{}",
            "is_active": "on",
            "periods-TOTAL_FORMS": "0",
            "periods-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) >= {"scope", "amount", "thresholds", "rollover_cap"}
    assert "unknown scope kind 'region'" in " ".join(errors["scope"])
    assert "strictly increasing" in " ".join(errors["thresholds"]) and "outside 1-1000" in " ".join(
        errors["thresholds"]
    )
    assert Budget.objects.count() == 0


def test_the_admin_creates_a_budget_for_a_tag_scope_with_custom_thresholds(admin_client):
    response = admin_client.post(
        reverse("admin:budgets_budget_add"),
        {
            "name": "ML team",
            "scope": "tag:team=ml",
            "confirm_scope": "on",  # no spend recorded for it yet
            "amount": "500",
            "currency": "USD",
            "period": "quarterly",
            "thresholds": "40, 90%, 100",
            "hard_limit": "on",
            "metadata": '{"cost_centre": "R&D"}',
            "is_active": "on",
            "periods-TOTAL_FORMS": "0",
            "periods-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    budget = Budget.objects.get()
    assert (budget.scope, budget.amount, budget.thresholds, budget.hard_limit) == (
        "tag:team=ml",
        Decimal("500"),
        [40, 90, 100],
        True,
    )
    assert budget.metadata == {"cost_centre": "R&D"}


@time_machine.travel(NOW, tick=False)
def test_the_change_list_reads_no_more_for_a_hundred_budgets_than_for_three(
    admin_client, three_budgets, django_assert_max_num_queries
):
    """No read per row: the page's statuses, forecasts and filter choices come from a few bulk reads."""
    for i in range(97):
        BudgetFactory(name=f"more {i}", scope=["provider:openai", "service:image-api", f"job:batch-{i}"][i % 3])
    with django_assert_max_num_queries(20):
        assert admin_client.get(CHANGELIST).status_code == 200
    with django_assert_max_num_queries(22):
        assert admin_client.get(CHANGELIST, {"level": "critical"}).status_code == 200
    assert "more 96" in admin_client.get(CHANGELIST).content.decode()
