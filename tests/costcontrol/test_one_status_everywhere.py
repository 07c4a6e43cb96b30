"""One status, one level and one forecast per budget, the same on every screen: the admin's change list,
the cost dashboard, GET /api/v1/budgets, `manage.py budget_status --json`, /metrics and the daily report
all show what budgets.selectors.budget_statuses computes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.urls import reverse

from alerts.reports import daily_report_build
from analytics.dashboard import DashboardData
from analytics.filters import DashboardFilters
from budgets.models import BudgetPeriod
from budgets.selectors import budget_statuses
from budgets.services import budget_reserve
from monitoring import metrics
from tests.factories import BudgetFactory
from tracking.services import cost_entry_record_many

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 24, 15, 40, tzinfo=UTC)


@pytest.fixture
def budgets(gpt4o_prices):
    """Budgets of every period kind, at every level, on 3 weeks of office-hours spend; one with a
    carry from a closed October, one with a reservation held."""
    events = []
    for day in range(3, 25):
        for hour in range(9, 18):
            moment = datetime(2026, 11, day, hour, 10, tzinfo=UTC)
            if moment < NOW and moment.weekday() < 5:
                for service, amount in (("chat", "0.40"), ("search", "0.05")):
                    events.append(
                        {
                            "provider": "openai",
                            "model": "gpt-4o",
                            "service": service,
                            "amount": amount,
                            "occurred_at": moment,
                            "idempotency_key": f"{service}-{moment.isoformat()}",
                        }
                    )
    assert {r.status for r in cost_entry_record_many(events)} == {"accepted"}
    made = [
        BudgetFactory(name="Global monthly", scope="global", amount=Decimal("70"), forecast_alerts=True),
        BudgetFactory(name="Chat 80/100", scope="service:chat", amount=Decimal("60"), thresholds=[80, 100]),
        BudgetFactory(name="Chat daily", scope="service:chat", amount=Decimal("2"), period="daily"),
        BudgetFactory(name="Search weekly", scope="service:search", amount=Decimal("5"), period="weekly"),
        BudgetFactory(name="Quarter", scope="global", amount=Decimal("2000"), period="quarterly"),
        BudgetFactory(name="Lifetime", scope="global", amount=Decimal("100"), period="none"),
        BudgetFactory(name="Hard", scope="provider:openai", amount=Decimal("500"), period="yearly", hard_limit=True),
    ]
    rolled = BudgetFactory(name="Rolled", scope="service:search", amount=Decimal("3"), rollover=True)
    BudgetPeriod.objects.create(
        budget=rolled,
        start=datetime(2026, 10, 1, tzinfo=UTC),
        end=datetime(2026, 11, 1, tzinfo=UTC),
        limit=Decimal("3"),
        spent_at_close=Decimal("1.25"),
        closed_at=datetime(2026, 11, 1, tzinfo=UTC),
    )
    with time_machine.travel(NOW - timedelta(minutes=1), tick=False):
        budget_reserve(scopes=["provider:openai"], amount="12.5", ttl=timedelta(hours=1))
    return [*made, rolled]


def test_every_screen_shows_the_selectors_level_and_forecast(budgets, admin_client, client, settings):
    from api.keys import api_key_issue

    settings.METRICS_CACHE_SECONDS = 0
    metrics.COLLECTOR.clear()
    with time_machine.travel(NOW, tick=False):
        truth = {s.budget.name: s for s in budget_statuses(budgets, forecasts=True)}
        assert {s.level_label for s in truth.values()} >= {"ok", "info", "warning", "exceeded"}
        assert truth["Rolled"].limit == Decimal("4.75")  # 3 + the 1.75 October left
        assert truth["Hard"].reserved == Decimal("12.5")
        assert truth["Lifetime"].forecast is None
        assert truth["Global monthly"].forecast_label.startswith("forecast to exceed on ")

        command = {row["name"]: row for row in json.loads(_run("budget_status", "--json"))}
        key = api_key_issue(name="everything", service="reports")
        api = client.get("/api/v1/budgets", HTTP_AUTHORIZATION=f"Bearer {key.plaintext}").json()["budgets"]
        api = {row["name"]: row for row in api}
        report = {row["name"]: row for row in daily_report_build(day=NOW.date(), now=NOW)["budgets"]["rows"]}
        scrape = client.get("/metrics").content.decode()
        changelist = admin_client.get(reverse("admin:budgets_budget_changelist")).content.decode()
        filters = DashboardFilters(start=datetime(2026, 11, 1).date(), end=NOW.date())
        dashboard = {row[0]: row for row in DashboardData(filters=filters, now=NOW).budgets_at_risk.rows}

    for name, status in truth.items():
        forecast = status.forecast
        assert command[name]["level"] == api[name]["level"] == report[name]["level"] == status.level_label, name
        assert Decimal(command[name]["spent"]) == Decimal(api[name]["spent"]) == status.spent, name
        assert Decimal(command[name]["limit"]) == Decimal(api[name]["limit"]) == status.limit, name
        if forecast is None:
            assert (
                command[name]["forecast"] is None and api[name]["forecast"] is None and report[name]["forecast"] is None
            )
            continue
        assert Decimal(command[name]["forecast"]) == Decimal(api[name]["forecast"]["amount"]) == forecast.amount
        assert Decimal(report[name]["forecast"]) == forecast.amount
        assert command[name]["forecast_method"] == api[name]["forecast"]["method"] == forecast.method
        assert api[name]["forecast"]["label"] == status.forecast_label
        assert f'budget="{name}"' in scrape
        assert forecast.describe(status.currency).split(" (")[0].replace(" USD", "") in changelist
        if name in dashboard:
            assert dashboard[name][5] == forecast.describe(status.currency)
            assert dashboard[name][6] == "; ".join(filter(None, [status.level_label, status.forecast_label]))
    assert set(dashboard) == {
        n for n, s in truth.items() if s.level in ("warning", "critical", "exceeded") or s.forecast_label
    }
    for name, status in truth.items():
        assert f'data-level="{status.level_label}"' in changelist or status.utilisation is None, name


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()
