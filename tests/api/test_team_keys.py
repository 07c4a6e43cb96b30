"""A team's API key records, reads, checks and reserves only within its team (issue 18)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from alerts.models import AlertRule, Metric, Window
from api.keys import api_key_issue
from budgets.models import Budget
from budgets.selectors import budget_statuses
from core.models import Team
from tests.factories import BudgetFactory
from tracking.models import CostEntry
from tracking.selectors import spend_total
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db


def call(client, plaintext: str, method: str, path: str, body: object | None = None):
    if method == "get":
        return client.get(f"/api/v1{path}", body or {}, HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client.post(
        f"/api/v1{path}", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}"
    )


@pytest.fixture
def teams(gpt4o_prices):
    return Team.objects.create(name="alpha"), Team.objects.create(name="bravo")


def event(key: str, amount: str, **extra) -> dict:
    return {"provider": "openai", "model": "gpt-4o", "amount": amount, "idempotency_key": key, **extra}


def window() -> dict:
    now = timezone.now()
    return {"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}


def test_a_teams_key_records_its_teams_usage_into_the_teams_own_scopes(client, teams):
    alpha, _ = teams
    key = api_key_issue(name="a", service="svc-a", team=alpha).plaintext

    assert call(client, key, "post", "/events", event("e1", "1.25", subject="u1")).status_code == 201

    entry = CostEntry.objects.get()
    assert entry.team == alpha
    now = timezone.now()
    for scope in ("team:alpha", "team:alpha/service:svc-a", "team:alpha/subject:u1", "team:alpha/model:gpt-4o"):
        assert spend_total(scope=scope, start=now - timedelta(days=1), end=now + timedelta(hours=1)) == Decimal("1.25")


def test_a_teams_key_may_not_read_check_or_reserve_another_teams_or_the_organisations_spend(client, teams):
    alpha, bravo = teams
    key = api_key_issue(name="a", service="svc-a", team=alpha).plaintext
    other = api_key_issue(name="b", service="svc-b", team=bravo).plaintext
    call(client, other, "post", "/events", event("b1", "9.00"))

    for scope in ("team:bravo", "team:bravo/service:svc-b", "global", "service:svc-b", "provider:openai"):
        spend = call(client, key, "get", "/spend", {"scope": scope, **window()})
        assert spend.status_code == 403, scope
        assert "team:alpha/" in spend.json()["message"]
        assert call(client, key, "post", "/budgets/check", {"scope": scope}).status_code == 403
        assert call(client, key, "post", "/budgets/reserve", {"scopes": [scope], "amount": "1"}).status_code == 403

    own = call(client, key, "get", "/spend", {"scope": "team:alpha", "group_by": "model", **window()})
    assert own.status_code == 200 and own.json()["total"] == "0" and own.json()["groups"] == []


def test_spend_of_a_team_grouped_by_model_is_the_teams_only(client, teams):
    alpha, bravo = teams
    key = api_key_issue(name="a", service="svc-a", team=alpha).plaintext
    call(client, key, "post", "/events", event("a1", "2.00"))
    call(client, key, "post", "/events", event("a2", "0.50", model="gpt-4o-mini"))
    cost_entry_record(provider="openai", model="gpt-4o", amount="7.00", team=bravo, idempotency_key="b1")

    answer = call(client, key, "get", "/spend", {"scope": "team:alpha", "group_by": "model", **window()}).json()

    assert answer["total"] == "2.5"
    assert [(g["key"], g["amount"]) for g in answer["groups"]] == [("gpt-4o", "2"), ("gpt-4o-mini", "0.5")]


def test_a_teams_key_is_held_by_the_organisations_hard_limit_without_reading_it(client, teams):
    alpha, _ = teams
    BudgetFactory(name="Company cap", scope="global", amount=Decimal("5"), hard_limit=True)
    BudgetFactory(name="Alpha cap", scope="team:alpha", amount=Decimal("100"), hard_limit=True, team=alpha)
    key = api_key_issue(name="a", service="svc-a", team=alpha).plaintext

    check = call(client, key, "post", "/budgets/check", {"scope": "team:alpha/service:svc-a", "amount": "6"}).json()
    assert check["allowed"] is False
    assert [b["name"] for b in check["budgets"]] == ["Alpha cap"]  # the team's whole budget holds it too

    denied = call(client, key, "post", "/budgets/reserve", {"scopes": ["team:alpha/service:svc-a"], "amount": "6"})
    assert denied.status_code == 409
    assert denied.json()["budget"] == {"id": None, "name": None, "scope": "global"}
    assert "Company cap" not in denied.content.decode()

    held = call(client, key, "post", "/budgets/reserve", {"scopes": ["team:alpha/service:svc-a"], "amount": "1"})
    assert held.status_code == 201 and len(held.json()["reservations"]) == 2


def test_a_teams_key_lists_only_its_teams_budgets(client, teams):
    alpha, bravo = teams
    BudgetFactory(name="Alpha", scope="team:alpha", team=alpha)
    BudgetFactory(name="Bravo", scope="team:bravo", team=bravo)
    BudgetFactory(name="Company", scope="global")
    key = api_key_issue(name="a", service="svc-a", team=alpha).plaintext

    assert [b["name"] for b in call(client, key, "get", "/budgets").json()["budgets"]] == ["Alpha"]


def test_a_teams_key_is_limited_to_its_teams_scopes_and_a_service_belongs_to_one_team(teams):
    alpha, bravo = teams
    with pytest.raises(ValidationError, match="team alpha may only watch its own spend"):
        api_key_issue(name="a", service="svc-a", team=alpha, scopes=["team:bravo"])
    api_key_issue(name="a", service="svc-a", team=alpha, scopes=["team:alpha/service:svc-a"])

    with pytest.raises(ValidationError, match="service 'svc-a' belongs to another team"):
        api_key_issue(name="b", service="svc-a", team=bravo)
    with pytest.raises(ValidationError, match="service 'svc-a' belongs to team alpha"):
        api_key_issue(name="org", service="svc-a")
    api_key_issue(name="a2", service="svc-a", team=alpha)  # a second key of the same team is fine


@pytest.mark.parametrize("scope", ["team:bravo", "service:svc-b", "global", "team:bravo/service:svc-b"])
def test_a_teams_budget_or_rule_may_not_watch_another_teams_spend(teams, scope):
    alpha, _ = teams
    budget = Budget(name="x", scope=scope, amount=Decimal("10"), team=alpha)
    with pytest.raises(ValidationError) as budget_error:
        budget.full_clean()
    assert "team alpha may only watch its own spend" in str(budget_error.value.message_dict["scope"])

    rule = AlertRule(name="x", metric=Metric.SPEND, scope=scope, window=Window.DAY, threshold=Decimal("1"), team=alpha)
    with pytest.raises(ValidationError) as rule_error:
        rule.full_clean()
    assert "team alpha may only watch its own spend" in str(rule_error.value.message_dict["scope"])


def test_a_teams_budget_on_a_service_counts_only_the_teams_spend_of_it(teams):
    alpha, bravo = teams
    budget = Budget(name="Alpha svc", scope="team:alpha/service:shared", amount=Decimal("10"), team=alpha)
    budget.full_clean()
    budget.save()
    cost_entry_record(
        provider="openai", model="gpt-4o", amount="1.00", service="shared", team=alpha, idempotency_key="a"
    )
    cost_entry_record(
        provider="openai", model="gpt-4o", amount="8.00", service="shared", team=bravo, idempotency_key="b"
    )

    [status] = budget_statuses([budget])
    assert status.spent == Decimal("1.00")


def test_a_team_name_may_not_hold_a_slash(db):
    with pytest.raises(ValidationError, match="no '/'"):
        Team(name="alpha/service:x").full_clean()
