"""/metrics and budget templates (issue 20): a template's values are as many as its end users, so each
template exports only its top values by utilisation as budgets, and counts of all of them by level."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from budgets.selectors import budget_check
from budgets.templates import budget_override_set, template_values_due
from monitoring import metrics
from tests.factories import BudgetFactory, status_of
from tests.monitoring.test_metrics_endpoint import exact, named, scrape, value
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
LEVELS = ("ok", "info", "warning", "critical", "exceeded")


@pytest.fixture
def fifty_users(gpt4o_prices):
    """Template "Per user" (10 USD a month each, thresholds 50/80/95/100) and 50 end users u1 ... u50,
    user i having spent 0.40 x i (4 x i % of the limit); the alert pass gave each one its budget; zed
    was checked but spent nothing."""
    with time_machine.travel(NOW, tick=False):
        template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("10"))
        for i in range(1, 51):
            cost_entry_record(
                provider="openai", model="gpt-4o", amount=Decimal("0.4") * i, currency="USD", subject=f"u{i}"
            )
        template_values_due(now=NOW)
        budget_check(scope="subject:zed")
    return template


def value_series(samples, name: str) -> dict[str, float]:
    return {
        dict(labels)["budget"]: v
        for labels, v in named(samples, name).items()
        if dict(labels)["budget"].startswith("Per user")
    }


def test_only_the_top_values_of_a_template_are_exported_as_budgets(client, fifty_users):
    BudgetFactory(name="Global", scope="global", amount=Decimal("250"))
    with time_machine.travel(NOW, tick=False):
        samples = scrape(client)

    spent = value_series(samples, "costcontrol_budget_spent_dollars")
    assert sorted(spent) == sorted(f"Per user: u{i}" for i in range(41, 51))  # METRICS_TEMPLATE_TOP_VALUES=10
    assert spent["Per user: u50"] == 20.0
    labels = {"budget": "Per user: u45", "scope": "subject:u45", "period": "monthly"}
    assert value(samples, "costcontrol_budget_utilization_ratio", **labels) == 1.8
    assert exact(value(samples, "costcontrol_budget_limit_dollars", **labels)) == Decimal("10")
    status = status_of(fifty_users.values.get(scope="subject:u45"), NOW)
    assert exact(value(samples, "costcontrol_budget_forecast_dollars", **labels)) == status.forecast.amount
    # the template itself is no budget with a status; the plain budget is there as before
    assert not [
        labels for labels in named(samples, "costcontrol_budget_spent_dollars") if ("scope", "subject:*") in labels
    ]
    assert value(samples, "costcontrol_budget_spent_dollars", budget="Global", scope="global", period="monthly") > 0


def test_a_template_counts_its_values_by_level(client, fifty_users):
    with time_machine.travel(NOW, tick=False):
        samples = scrape(client)

    template = {"budget": "Per user", "scope": "subject:*", "period": "monthly"}
    counts = {level: value(samples, "costcontrol_budget_template_values", level=level, **template) for level in LEVELS}
    # 4 x i %: ok below 50 (u1-u12), info to 80 (u13-u19), warning to 95 (u20-u23), critical u24, exceeded u25-u50
    assert counts == {"ok": 12, "info": 7, "warning": 4, "critical": 1, "exceeded": 26}
    assert value(samples, "costcontrol_budget_template_values_known", **template) == 51  # zed too, without spend
    assert len(named(samples, "costcontrol_budget_template_values")) == len(LEVELS)


def test_an_own_amount_moves_a_value_in_the_ranking_and_the_counts(client, fifty_users, settings):
    settings.METRICS_TEMPLATE_TOP_VALUES = 2
    with time_machine.travel(NOW, tick=False):
        budget_override_set(template=fifty_users, value="u1", amount="0.10")  # 0.40 of 0.10: 400 %
        budget_override_set(template=fifty_users, value="u50", amount="1000")  # 20 of 1000: 2 %
        samples = scrape(client)

    assert sorted(value_series(samples, "costcontrol_budget_spent_dollars")) == ["Per user: u1", "Per user: u49"]
    template = {"budget": "Per user", "scope": "subject:*", "period": "monthly"}
    assert value(samples, "costcontrol_budget_template_values", level="exceeded", **template) == 26
    assert value(samples, "costcontrol_budget_template_values", level="ok", **template) == 12


def test_no_value_series_with_top_values_zero_and_none_for_an_inactive_or_euro_template(client, fifty_users, settings):
    settings.METRICS_TEMPLATE_TOP_VALUES = 0
    BudgetFactory(name="Per job", scope="job:*", is_active=False)
    BudgetFactory(name="Per customer", scope="tag:customer=*", currency="EUR")
    with time_machine.travel(NOW, tick=False):
        samples = scrape(client)

    assert not value_series(samples, "costcontrol_budget_spent_dollars")
    known = named(samples, "costcontrol_budget_template_values_known")
    assert [dict(labels)["budget"] for labels in known] == ["Per user"]


def test_a_collection_reads_a_few_statements_per_template_not_some_per_value(
    fifty_users, django_assert_max_num_queries
):
    BudgetFactory(name="Global", scope="global", amount=Decimal("250"))
    with django_assert_max_num_queries(20):  # 15 when written: no statement per value shown
        families = metrics.budget_families(at=NOW)

    assert len([s for s in families[0].samples if s.labels["budget"].startswith("Per user: ")]) == 10
