"""The cost dashboard and its CSV exports keep each team's spend inside the team (issue 18).

Two teams spend side by side over four weeks, each with a spike in the last hours (an anomaly),
failed calls (a recommendation), a budget at risk, an open alert and a finished batch; the
organisation has a budget and an alert of its own. A staff member of team alpha with every
permission sees alpha's figures, read from alpha's copies of the scopes (team:alpha, ...), and no
name, subject, service or amount of team bravo, on the page and in every export.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from analytics.dashboard import DashboardData
from tests.admin_clients import staff_client, superuser_client
from tests.analytics.conftest import HOUR, T0, Stream, entry, seasonal_entries, write
from tests.factories import AlertFactory, BatchFactory, BudgetFactory, PriceFactory, TeamFactory
from tracking.selectors import spend_total

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(minutes=30)
DASHBOARD = "/admin/analytics/dashboard/"
TABLES = (
    "budgets",
    "alerts",
    "spend_by_provider",
    "models",
    "subjects",
    "cost_per_lead",
    "gpu",
    "anomalies",
    "recommendations",
)
MONTH_START = T0.replace(day=1, hour=0)


def body(response: Any) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def team_usage(team: Any, *, provider: str, model: str, spike: Decimal, seed: int) -> None:
    """Four weeks of a team's usage (its own subjects and service), a spike two hours before T0 by a
    subject never seen before, and failed calls of its model; its batch, budget and alert."""
    name = team.name
    PriceFactory(provider=provider, model=model, operation="chat", unit="input_token")
    entries = seasonal_entries(
        streams=[Stream(provider, model, "chat", f"{name}-svc", Decimal("0.50"))], seed=seed, last_hours=24
    )
    for e in entries:
        e.subject = f"{name}-{e.subject}"
        e.team = team
    common = {"provider": provider, "model": model, "service": f"{name}-svc", "input_tokens": 10_000}
    entries.append(entry(T0 - 2 * HOUR, key=f"{name}:spike", amount=spike, subject=f"{name}-whale", **common))
    entries += [
        entry(
            T0 - 3 * HOUR, key=f"{name}:err:{i}", amount=Decimal(5), subject=f"{name}-flaky", outcome="error", **common
        )
        for i in range(8)
    ]
    for e in entries[-9:]:
        e.team = team
        e.job = f"{name}-job"
    write(entries)
    BatchFactory(
        name=f"{name} pipeline",
        job=f"{name}-job",
        leads=10,
        started_at=T0 - 4 * HOUR,
        finished_at=T0 - HOUR,
        cost=spike,
        cost_per_lead=spike / 10,
        cost_computed_at=T0 - HOUR,
    )
    BudgetFactory(name=f"{name} budget", scope=f"team:{name}", team=team, amount=Decimal(1))
    AlertFactory(
        key=f"{name}:alert", team=team, scope=f"team:{name}", title=f"{name} alert", first_fired_at=T0, last_fired_at=T0
    )


@pytest.fixture
def two_teams(db):
    alpha, bravo = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    with time_machine.travel(NOW, tick=False):
        team_usage(alpha, provider="openai", model="alpha-model", spike=Decimal("40.00"), seed=1)
        team_usage(bravo, provider="bravo-cloud", model="bravo-model", spike=Decimal("77.00"), seed=2)
        BudgetFactory(name="organisation budget", scope="global", amount=Decimal(1))
        AlertFactory(key="org:alert", scope="global", title="organisation alert", first_fired_at=T0, last_fired_at=T0)
    return alpha, bravo


def export(client: Client, table: str, **params: str) -> Any:
    return client.get(reverse("admin:analytics_dashboard_export", args=[table]), params)


def month_spend(scope: str) -> Decimal:
    return spend_total(scope=scope, start=MONTH_START, end=T0 + HOUR)


def test_a_team_member_sees_their_teams_spend_and_nothing_of_another_team(two_teams):
    alpha_client = staff_client("alice", [two_teams[0]])[1]
    with time_machine.travel(NOW, tick=False):
        response = alpha_client.get(DASHBOARD)
        html = body(response)
        data: DashboardData = response.context["data"]

        assert response.status_code == 200
        assert data.scope == "team:alpha"
        # Alpha's figures, from alpha's copies of the scopes: not the organisation's.
        assert data.cards[1].value == month_spend("team:alpha") < month_spend("global")
        assert f'data-card="2">{month_spend("team:alpha").quantize(Decimal("0.01"))} USD' in html
        assert {r[0] for r in data.top_models.rows} == {"alpha-model"}
        assert "alpha-whale" in {r[0] for r in data.top_subjects.rows}
        assert [r[0] for r in data.budgets_at_risk.rows] == ["alpha budget"]
        assert [r[2] for r in data.open_alerts.rows] == ["alpha alert"]
        assert data.open_alert_count == 1
        assert [r[1] for r in data.cost_per_lead.rows] == ["alpha pipeline"]
        assert data.anomaly_list and all(a.scope.startswith("team:alpha") for a in data.anomaly_list)
        assert any(r.kind == "failed_calls" and "alpha-model" in r.title for r in data.recommendation_list)
        assert all("bravo" not in r.title for r in data.recommendation_list)
        # Nothing of bravo anywhere: names, subjects, services, its provider, its spike's amount.
        assert "bravo" not in html.lower()
        assert "77.00" not in html
        for table in TABLES:
            exported = export(alpha_client, table)
            assert exported.status_code == 200, table
            assert "bravo" not in body(exported).lower(), table


def test_the_csv_export_adds_up_to_the_teams_spend(two_teams):
    alpha_client = staff_client("alice", [two_teams[0]])[1]
    with time_machine.travel(NOW, tick=False):
        response = export(alpha_client, "spend_by_provider", start=MONTH_START.date().isoformat())
        rows = list(csv.DictReader(io.StringIO(body(response))))

    assert "team-alpha" in response["Content-Disposition"]
    # Each day to the cent: the month's total within half a cent a day.
    assert abs(sum(Decimal(r["total"]) for r in rows) - month_spend("team:alpha")) <= Decimal("0.005") * len(rows)
    assert month_spend("global") - month_spend("team:alpha") > 50
    assert set(rows[0]) == {"day", "openai", "total"}


def test_a_team_member_cannot_pick_another_team(two_teams):
    alpha_client = staff_client("alice", [two_teams[0]])[1]
    with time_machine.travel(NOW, tick=False):
        response = alpha_client.get(DASHBOARD, {"team": "bravo"})
        filtered = alpha_client.get(DASHBOARD, {"service": "bravo-svc"})

        assert response.status_code == 200 and response.context["data"] is None
        assert "team" in response.context["form"].errors
        assert "77.00" not in body(response) and "bravo-svc" not in body(response)
        assert export(alpha_client, "subjects", team="bravo").status_code == 404
        # Another team's service is not one of the choices either.
        assert filtered.context["data"] is None and "service" in filtered.context["form"].errors


def test_a_member_of_two_teams_picks_one_their_first_by_default(two_teams):
    alpha, bravo = two_teams
    both = staff_client("bob", [bravo, alpha])[1]
    with time_machine.travel(NOW, tick=False):
        first = both.get(DASHBOARD).context["data"]
        second = both.get(DASHBOARD, {"team": "bravo"}).context["data"]
        subjects = body(export(both, "subjects", team="bravo"))

    assert first.scope == "team:alpha" and second.scope == "team:bravo"
    assert second.cards[1].value == month_spend("team:bravo")
    assert "bravo-whale" in subjects and "alpha" not in subjects


def test_a_superuser_sees_the_organisation_and_may_pick_a_team(two_teams):
    root = superuser_client()
    with time_machine.travel(NOW, tick=False):
        response = root.get(DASHBOARD)
        data = response.context["data"]
        bravo = root.get(DASHBOARD, {"team": "bravo"}).context["data"]
        subjects = body(export(root, "subjects"))

    assert data.scope == "global" and data.cards[1].value == month_spend("global")
    assert {r[0] for r in data.top_models.rows} == {"alpha-model", "bravo-model"}
    assert {r[0] for r in data.budgets_at_risk.rows} == {"alpha budget", "bravo budget", "organisation budget"}
    assert {r[2] for r in data.open_alerts.rows} == {"alpha alert", "bravo alert", "organisation alert"}
    assert "bravo-whale" in subjects and "alpha-whale" in subjects
    assert any(r.kind == "failed_calls" and "bravo-model" in r.title for r in data.recommendation_list)

    assert bravo.scope == "team:bravo" and bravo.cards[1].value == month_spend("team:bravo")
    assert [r[0] for r in bravo.budgets_at_risk.rows] == ["bravo budget"]
    assert [r[2] for r in bravo.open_alerts.rows] == ["bravo alert"]
    assert {r[0] for r in bravo.top_models.rows} == {"bravo-model"}
    assert bravo.anomaly_list and all(a.scope.startswith("team:bravo") for a in bravo.anomaly_list)
    assert all(a.root_cause is None or a.root_cause.scope.startswith("team:bravo/") for a in bravo.anomaly_list)


def test_a_staff_member_in_no_team_sees_an_empty_dashboard_saying_why(two_teams):
    loner = staff_client("lone", [])[1]
    with time_machine.travel(NOW, tick=False):
        response = loner.get(DASHBOARD)
        html = body(response)

        assert response.status_code == 200 and response.context["data"] is None
        assert "You belong to no team" in html
        assert "alpha" not in html and "bravo" not in html and "whale" not in html
        for table in TABLES:
            assert export(loner, table).status_code == 403, table
