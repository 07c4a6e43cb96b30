"""Budgets and templates over the API (issue 20): GET /budgets lists templates with their values'
summary (not the values), GET /budgets/{id}/values ranks them, POST /budgets creates budgets and
templates for keys that may manage budgets, PUT/DELETE /budgets/{id}/values/{value} set and clear a
value's own amount."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from alerts.evaluation import alerts_evaluate
from api.keys import api_key_issue
from budgets.models import Budget
from core.models import Team
from tests.factories import BudgetFactory
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db


def call(client, plaintext: str, method: str, path: str, body: object | None = None):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
    if method == "get":
        return client.get(f"/api/v1{path}", body or {}, **auth)
    data = body if isinstance(body, str) else json.dumps(body)
    return getattr(client, method)(f"/api/v1{path}", data, content_type="application/json", **auth)


def spend(subject: str, amount: str, **extra: object) -> None:
    cost_entry_record(provider="openai", model="gpt-4o", amount=amount, currency="USD", subject=subject, **extra)


@pytest.fixture
def manager(db):
    """An organisation-wide key that may manage budgets."""
    return api_key_issue(name="finance", service="finance", can_manage_budgets=True).plaintext


@pytest.fixture
def per_user(gpt4o_prices):
    """Template "Per user", 5 USD a month for each end user: alice spent 6 (120 %), carol 4 (80 %), bob 1 (20 %)."""
    template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"), hard_limit=True)
    for subject, amount in (("alice", "6"), ("bob", "1"), ("carol", "4")):
        spend(subject, amount)
    return template


# --- reading ---------------------------------------------------------------------------------------


def test_the_list_shows_a_template_with_its_values_summary_and_never_its_values(client, api_key, per_user):
    BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("10"))
    assert call(client, api_key.plaintext, "post", "/budgets/check", {"scope": "subject:alice"}).status_code == 200

    listed = call(client, api_key.plaintext, "get", "/budgets").json()["budgets"]

    assert [b["name"] for b in listed] == ["Image API", "Per user"]  # alice's budget exists, is not listed
    plain, template = listed
    assert plain["template"] is False and plain["level"] == "ok" and plain["limit"] == "10"
    assert template == {
        "id": per_user.pk,
        "name": "Per user",
        "scope": "subject:*",
        "period": "monthly",
        "currency": "USD",
        "amount": "5",
        "hard_limit": True,
        "template": True,
        "summary": {
            "values": 1,  # alice's, made by the check; bob and carol get theirs at the next alert pass
            "overrides": 0,
            "spending": 3,
            "levels": {"ok": 1, "info": 0, "warning": 1, "critical": 0, "exceeded": 1},
        },
    }


def test_the_values_of_a_template_are_ranked_by_utilisation_and_searched_by_value(client, api_key, per_user):
    alerts_evaluate(budgets_only=True)  # the alert pass gives each value that spent its budget

    def values(**query: str) -> list[str]:
        response = call(client, api_key.plaintext, "get", f"/budgets/{per_user.pk}/values", query)
        assert response.status_code == 200, response.content
        return [v["value"] for v in response.json()["values"]]

    assert values() == ["alice", "carol", "bob"]
    assert values(limit="2") == ["alice", "carol"]
    assert values(q="CAR") == ["carol"]
    assert values(q="zed") == []

    body = call(client, api_key.plaintext, "get", f"/budgets/{per_user.pk}/values", {"limit": "1"}).json()
    [alice] = body["values"]
    assert body["template"]["summary"]["levels"]["exceeded"] == 1
    assert (alice["name"], alice["scope"], alice["limit"], alice["spent"]) == (
        "Per user: alice",
        "subject:alice",
        "5",
        "6",
    )
    assert (alice["utilisation"], alice["level"], alice["allowed"], alice["override"]) == (
        "120",
        "exceeded",
        False,
        False,
    )
    # the shape of a plain budget's status in the list, with the value and whether it has its own amount
    BudgetFactory(name="Image API", scope="service:image-api")
    [plain] = [b for b in call(client, api_key.plaintext, "get", "/budgets").json()["budgets"] if not b["template"]]
    assert set(alice) == set(plain) | {"value", "override"}


def test_values_are_asked_of_a_template_the_key_may_see(client, api_key, per_user):
    plain = BudgetFactory(name="Image API", scope="service:image-api")
    call(client, api_key.plaintext, "post", "/budgets/check", {"scope": "subject:alice"})
    alice = per_user.values.get()
    team_key = api_key_issue(name="ml", service="ml-svc", team=Team.objects.create(name="ml")).plaintext

    assert call(client, team_key, "get", f"/budgets/{per_user.pk}/values").status_code == 404  # not its scope
    for budget_id in (plain.pk, alice.pk, 999999):
        response = call(client, api_key.plaintext, "get", f"/budgets/{budget_id}/values")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert call(client, api_key.plaintext, "get", f"/budgets/{per_user.pk}/values", {"limit": "0"}).status_code == 422
    assert call(client, api_key.plaintext, "get", f"/budgets/{per_user.pk}/values", {"top": "3"}).status_code == 422


# --- a key that may manage budgets -----------------------------------------------------------------


def test_manage_budgets_is_ticked_on_the_keys_admin_page_and_off_by_default(admin_client):
    from django.urls import reverse

    from api.models import ApiKey

    add = reverse("admin:api_apikey_add")
    assert "manage budgets" in admin_client.get(add).content.decode().lower()
    form = {"service": "finance", "scopes": "", "rate_limit_per_minute": "", "expires_at": ""}

    admin_client.post(add, {**form, "name": "reads"})
    admin_client.post(add, {**form, "name": "manages", "can_manage_budgets": "on"})

    assert dict(ApiKey.objects.values_list("name", "can_manage_budgets")) == {"reads": False, "manages": True}


# --- creating --------------------------------------------------------------------------------------


def test_a_template_whose_kind_never_spent_asks_for_confirmation(client, manager, gpt4o_prices):
    spend("alice", "1", tags={"customer": "acme"})
    body = {"name": "Per customer", "scope": "tag:custmer=*", "amount": "5"}  # a typo in the tag key

    refused = call(client, manager, "post", "/budgets", body)

    assert refused.status_code == 422 and "tag:custmer=*" in refused.json()["errors"]["scope"][0]
    assert not Budget.objects.exists()
    assert call(client, manager, "post", "/budgets", {**body, "scope": "tag:customer=*"}).status_code == 201
    assert call(client, manager, "post", "/budgets", {**body, "confirm_scope": True}).status_code == 201


def test_a_key_that_may_manage_budgets_creates_a_budget_and_a_template(client, manager):
    created = call(client, manager, "post", "/budgets", {"name": "Search", "scope": "service:search", "amount": "25"})

    assert created.status_code == 201, created.content
    budget = Budget.objects.get(name="Search")
    assert created.json()["id"] == budget.pk and created.json()["template"] is False
    assert created.json()["limit"] == "25" and created.json()["level"] == "ok"
    # the model's defaults
    assert (budget.currency, budget.period, budget.thresholds) == ("USD", "monthly", [50, 80, 95, 100])
    assert (budget.rollover, budget.hard_limit, budget.forecast_alerts, budget.team) == (False, False, False, None)

    body = {
        "name": "Per customer",
        "scope": "tag:customer=*",
        "confirm_scope": True,  # no customer has spent yet
        "amount": 12.5,
        "currency": "EUR",
        "period": "daily",
        "thresholds": [75, 90.5, 100],
        "rollover": True,
        "rollover_cap": "3",
        "hard_limit": True,
        "forecast_alerts": True,
    }
    created = call(client, manager, "post", "/budgets", body)

    assert created.status_code == 201, created.content
    template = Budget.objects.get(name="Per customer")
    assert template.is_template and created.json()["template"] is True
    assert created.json()["summary"] == {
        "values": 0,
        "overrides": 0,
        "spending": 0,
        "levels": {"ok": 0, "info": 0, "warning": 0, "critical": 0, "exceeded": 0},
    }
    assert (template.amount, template.currency, template.period) == (Decimal("12.5"), "EUR", "daily")
    assert template.thresholds == [75, 90.5, 100]
    assert (template.rollover, template.rollover_cap, template.hard_limit, template.forecast_alerts) == (
        True,
        Decimal("3"),
        True,
        True,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scope", "tag:=*"),
        ("scope", "region:eu"),
        ("scope", "provider:*/model:*"),
        ("scope", "tag:customer="),
        ("scope", "team:*/subject:*"),
        ("amount", "-1"),
        ("amount", "0.0000000001"),
        ("amount", "+.3e5239596013261124403"),  # a decimal string no Decimal can hold: a 422, never a 500
        ("amount", "1e-5239596013261124403"),
        ("period", "fortnightly"),
        ("currency", "XYZ"),
        ("thresholds", [80, 50]),
        ("thresholds", [0, 2000]),
        ("thresholds", []),
        ("thresholds", ["80"]),
        ("rollover_cap", "-2"),
        ("name", "   "),
        ("hard_limit", "yes"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_creates_nothing(client, manager, field, value):
    body = {"name": "Per user", "scope": "subject:*", "confirm_scope": True, "amount": "5", field: value}

    response = call(client, manager, "post", "/budgets", body)

    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert response.json()["code"] == "invalid" and {name.split(".")[0] for name in errors} == {field}, errors
    assert not Budget.objects.exists()


def test_a_key_without_manage_budgets_gets_403_and_changes_nothing(client, api_key, per_user):
    body = {"name": "Mine", "scope": "global", "amount": "1"}

    created = call(client, api_key.plaintext, "post", "/budgets", body)
    own = call(client, api_key.plaintext, "put", f"/budgets/{per_user.pk}/values/alice", {"amount": "50"})

    assert created.status_code == 403 and created.json()["code"] == "forbidden"
    assert "manage budgets" in created.json()["message"]
    assert own.status_code == 403
    assert call(client, api_key.plaintext, "delete", f"/budgets/{per_user.pk}/values/alice").status_code == 403
    assert list(Budget.objects.values_list("name", flat=True)) == ["Per user"]


def test_a_teams_key_creates_budgets_of_its_team_on_its_scopes_only(client, gpt4o_prices):
    alpha, bravo = Team.objects.create(name="alpha"), Team.objects.create(name="bravo")
    key = api_key_issue(name="alpha", service="alpha-svc", team=alpha, can_manage_budgets=True).plaintext

    created = call(
        client,
        key,
        "post",
        "/budgets",
        {"name": "Alpha users", "scope": "team:alpha/subject:*", "amount": "2", "confirm_scope": True},
    )

    assert created.status_code == 201, created.content
    assert Budget.objects.get(name="Alpha users").team == alpha
    for scope in ("subject:*", "team:bravo/subject:*", "global", "team:bravo"):
        refused = call(client, key, "post", "/budgets", {"name": "x", "scope": scope, "amount": "2"})
        assert refused.status_code == 403 and "scope" in refused.json()["errors"], scope
    assert list(Budget.objects.values_list("name", flat=True)) == ["Alpha users"]

    # another team's template is not found; the organisation's template on alpha's spend is not alpha's to change
    bravos = BudgetFactory(name="Bravo users", scope="team:bravo/subject:*", team=bravo)
    orgs = BudgetFactory(name="Org on alpha", scope="team:alpha/job:*")
    assert call(client, key, "put", f"/budgets/{bravos.pk}/values/u1", {"amount": "9"}).status_code == 404
    refused = call(client, key, "put", f"/budgets/{orgs.pk}/values/j1", {"amount": "9"})
    assert refused.status_code == 403 and not orgs.values.exists()
    own = Budget.objects.get(name="Alpha users")
    assert call(client, key, "put", f"/budgets/{own.pk}/values/u1", {"amount": "9"}).status_code == 200


# --- a value's own amount --------------------------------------------------------------------------


def test_a_value_gets_an_amount_of_its_own_and_follows_the_template_again(client, manager, per_user):
    alerts_evaluate(budgets_only=True)  # the alert pass gives each value that spent its budget
    path = f"/budgets/{per_user.pk}/values/alice"

    own = call(client, manager, "put", path, {"amount": "50.00"})

    assert own.status_code == 200, own.content
    assert (own.json()["value"], own.json()["override"], own.json()["limit"]) == ("alice", True, "50")
    assert (own.json()["level"], own.json()["allowed"]) == ("ok", True)  # 6 of 50
    alice = per_user.values.get(scope="subject:alice")
    assert (alice.override, alice.amount) == (True, Decimal("50"))
    listed = call(client, manager, "get", f"/budgets/{per_user.pk}/values").json()
    assert [v["value"] for v in listed["values"]] == ["carol", "bob", "alice"]  # 80 %, 20 %, 12 %
    assert listed["template"]["summary"]["overrides"] == 1

    followed = call(client, manager, "delete", path)

    assert followed.status_code == 200, followed.content
    assert (followed.json()["override"], followed.json()["limit"], followed.json()["level"]) == (False, "5", "exceeded")
    alice.refresh_from_db()
    assert (alice.override, alice.amount) == (False, Decimal("5"))


def test_a_value_without_a_budget_cannot_follow_and_a_bad_amount_changes_nothing(client, manager, per_user):
    missing = call(client, manager, "delete", f"/budgets/{per_user.pk}/values/nobody")
    assert missing.status_code == 404 and "nobody" in missing.json()["message"]

    for body, field in (({"amount": "-1"}, "amount"), ({"amount": "abc"}, "amount"), ({"amount": "1", "x": 1}, "x")):
        response = call(client, manager, "put", f"/budgets/{per_user.pk}/values/alice", body)
        assert response.status_code == 422 and field in response.json()["errors"], body
    for method in ("put", "delete"):  # a NUL cannot be a value (PostgreSQL's text cannot hold one)
        nul = call(client, manager, method, f"/budgets/{per_user.pk}/values/a%00b", {"amount": "1"})
        assert nul.status_code == 422 and "value" in nul.json()["errors"], nul.content
    each = call(client, manager, "put", f"/budgets/{per_user.pk}/values/*", {"amount": "1"})
    assert each.status_code == 422 and "scope" in each.json()["errors"]
    assert not per_user.values.exists()


# --- the check -------------------------------------------------------------------------------------


def test_the_check_refuses_a_value_over_its_hard_limit_and_allows_the_others(client, api_key, per_user):
    alice = call(client, api_key.plaintext, "post", "/budgets/check", {"scope": "subject:alice"})
    bob = call(client, api_key.plaintext, "post", "/budgets/check", {"scope": "subject:bob", "amount": "3"})

    assert alice.status_code == 200 and alice.json()["allowed"] is False
    [status] = alice.json()["budgets"]
    assert (status["name"], status["spent"], status["limit"], status["allowed"]) == ("Per user: alice", "6", "5", False)
    assert bob.json()["allowed"] is True
    too_much = call(client, api_key.plaintext, "post", "/budgets/check", {"scope": "subject:bob", "amount": "4.01"})
    assert too_much.json()["allowed"] is False  # 1 + 4.01 > 5
