"""Spend rollups and the budget form's scope hints show a staff member only their teams' scopes
(team:NAME and team:NAME/...): issue 18. Superusers see every scope."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from tests.admin_clients import staff_client, superuser_client
from tests.factories import CostEntryFactory, TeamFactory
from tracking.models import SpendRollup

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tracking_spendrollup_changelist")
BUDGET_ADD = reverse("admin:budgets_budget_add")


@pytest.fixture
def two_teams(db, gpt4o_prices):
    alpha, bravo = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    common = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "currency": "EUR"}
    CostEntryFactory(**common, amount=Decimal("1.25"), team="alpha", service="alpha-svc", subject="alpha-user")
    CostEntryFactory(**common, amount=Decimal("7.77"), team="bravo", service="bravo-svc", subject="bravo-user")
    CostEntryFactory(**common, amount=Decimal("2.50"), service="org-svc", subject="org-user")
    return alpha, bravo


def listed(client: Client, **params: str) -> set[str]:
    response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return {row.scope for row in response.context["cl"].result_list}


def test_a_team_member_lists_only_their_teams_rollups(two_teams):
    alice = staff_client("alice", [two_teams[0]])[1]

    response = alice.get(CHANGELIST)
    scopes = listed(alice)

    assert scopes == {
        "team:alpha",
        "team:alpha/provider:openai",
        "team:alpha/model:gpt-4o",
        "team:alpha/operation:chat",
        "team:alpha/service:alpha-svc",
        "team:alpha/subject:alpha-user",
        "team:alpha/service:alpha-svc/subject:alpha-user",
    }
    html = response.content.decode()
    assert "bravo" not in html and "7.77" not in html
    # Nor the organisation's figures, which hold other teams' spend.
    assert "global" not in scopes and "3.75" not in html and "11.52" not in html
    assert listed(alice, q="bravo") == set()
    assert listed(alice, q="global") == set()
    # The currency filter offers the currencies of their teams' spend.
    assert [c for c, _ in response.context["cl"].filter_specs[0].lookup_choices] == ["EUR"]


def test_another_teams_rollup_cannot_be_opened_by_url(two_teams):
    alice = staff_client("alice", [two_teams[0]])[1]
    theirs = SpendRollup.objects.get(scope="team:bravo/subject:bravo-user")
    organisation = SpendRollup.objects.get(scope="global")

    for rollup in (theirs, organisation):
        response = alice.get(reverse("admin:tracking_spendrollup_change", args=[rollup.pk]))
        assert response.status_code == 302 and response["Location"] == reverse("admin:index")
    ours = SpendRollup.objects.get(scope="team:alpha/subject:alpha-user")
    assert alice.get(reverse("admin:tracking_spendrollup_change", args=[ours.pk])).status_code == 200


def test_a_superuser_lists_every_rollup_and_a_user_in_no_team_none(two_teams):
    assert {"global", "team:alpha", "team:bravo", "subject:bravo-user", "service:org-svc"} <= listed(superuser_client())
    assert listed(staff_client("lone", [])[1]) == set()


def test_the_budget_forms_scope_hints_are_the_teams_own_scopes_and_every_scope_for_a_superuser(two_teams):
    alpha, bravo = two_teams
    alice = staff_client("alice", [alpha])[1]

    response = alice.get(BUDGET_ADD)
    hints = response.context["scope_suggestions"]

    assert response.status_code == 200
    assert hints and all(h == "team:alpha" or h.startswith("team:alpha/") for h in hints)
    assert "team:alpha/service:alpha-svc" in hints
    html = response.content.decode()
    assert "bravo" not in html and "org-svc" not in html and '<option value="global">' not in html

    both = staff_client("bob", [alpha, bravo])[1]
    assert {h.split("/")[0] for h in both.get(BUDGET_ADD).context["scope_suggestions"]} == {"team:alpha", "team:bravo"}
    assert staff_client("lone", [])[1].get(BUDGET_ADD).context["scope_suggestions"] == []

    everything = superuser_client().get(BUDGET_ADD)
    hints = everything.context["scope_suggestions"]
    assert {"global", "service:org-svc", "team:bravo/service:bravo-svc", "team:alpha"} <= set(hints)
    assert '<option value="global">' in everything.content.decode()
