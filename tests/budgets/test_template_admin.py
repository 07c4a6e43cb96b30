"""Budget templates in the admin (issue 20): the list shows plain budgets and templates, never the
thousands of values; a template's page counts its values, their levels and the top ones, searches
them and gives one an amount of its own; a value's page edits its amount only; a template scope
nobody spent on asks for confirmation; a team's staff see their team's templates and values only."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.urls import reverse

from budgets.models import Budget
from budgets.templates import budget_override_set, budget_values_ensure
from tests.admin_clients import staff_client
from tests.factories import BudgetFactory, TeamFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
EARLIER = datetime(2026, 11, 20, 9, tzinfo=UTC)
CHANGELIST = reverse("admin:budgets_budget_changelist")
BUDGET_ADD = reverse("admin:budgets_budget_add")


def change_url(budget: Budget) -> str:
    return reverse("admin:budgets_budget_change", args=[budget.pk])


def own_amount_url(template: Budget) -> str:
    return reverse("admin:budgets_budget_override", args=[template.pk])


def names_in(response: Any) -> set[str]:
    assert response.status_code == 200, response
    return {b.name for b in response.context["cl"].result_list}


def value(template: Budget, name: str) -> Budget:
    return Budget.objects.get(template=template, scope=template.scope[:-1] + name)


def top_values(html: str) -> list[str]:
    table = html[html.index('id="t-top-values"') :]
    table = table[: table.index("</table>")]
    return re.findall(r'<tr><td><a href="[^"]+">([^<]+)</a>', table)


@pytest.fixture
def per_user(spend):
    """A template of 10 USD a month for each end user, beside a plain budget. This month: alice spent
    12 (exceeded), bob 8.50 (warning), carol 1 (ok); dave has 50 of his own and spent nothing; 40 more
    values have a budget and no spend."""
    with time_machine.travel(NOW, tick=False):
        BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("1000"))
        template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("10"))
        for subject, amount in (("alice", "12"), ("bob", "8.50"), ("carol", "1")):
            spend(amount, EARLIER, subject=subject)
        budget_override_set(template=template, value="dave", amount="50")
        budget_values_ensure(pairs=[(template, f"subject:{s}") for s in ("alice", "bob", "carol")])
        budget_values_ensure(pairs=[(template, f"subject:quiet-{i:02}") for i in range(40)])
    return template


# --- the change list ------------------------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_the_list_shows_plain_budgets_and_templates_and_never_their_values(admin_client, per_user):
    response = admin_client.get(CHANGELIST)
    assert names_in(response) == {"OpenAI monthly", "Per user"}
    html = response.content.decode()
    # The template's row says what it is and how many values it has, linked to them; no spend or level.
    row = html[html.index("Per user") :]
    row = row[: row.index("</tr>")]
    assert "template: each end user (subject)" in row and "subject:*" in row
    assert f'href="{CHANGELIST}?template__id__exact={per_user.pk}">44 values</a>' in row
    assert "10.00 USD" in row and "each value" in row
    assert "data-level" not in row and ">0.00 USD" not in row
    for column in ("progress", "forecast_shown", "days_left_shown"):
        assert f'<td class="field-{column}">-</td>' in row
    # The level filter leaves the template out (it has no level) and reads no value's status.
    assert names_in(admin_client.get(CHANGELIST, {"level": "ok"})) == {"OpenAI monthly"}


@time_machine.travel(NOW, tick=False)
def test_a_templates_values_are_listed_when_asked_for_and_found_by_their_scope(admin_client, per_user):
    listed = admin_client.get(CHANGELIST, {"template__id__exact": per_user.pk})
    assert "<h1>Values of template Per user</h1>" in listed.content.decode()
    values = names_in(listed)
    assert len(values) == 44 and {"Per user: alice", "Per user: dave"} <= values and "Per user" not in values
    # A value listed shows its own status, like any budget: alice spent 12 of 10.
    html = admin_client.get(CHANGELIST, {"template__id__exact": per_user.pk, "q": "alice"}).content.decode()
    assert 'data-level="exceeded"' in html and "12.00 USD" in html
    assert names_in(admin_client.get(CHANGELIST, {"q": "subject:alice"})) == {"Per user: alice"}
    found = admin_client.get(CHANGELIST, {"q": "subject:dave"})
    assert names_in(found) == {"Per user: dave"} and "own amount" in found.content.decode()


@time_machine.travel(NOW, tick=False)
def test_the_list_reads_no_more_with_many_values(admin_client, per_user, django_assert_max_num_queries):
    with django_assert_max_num_queries(20):
        assert admin_client.get(CHANGELIST).status_code == 200
    with django_assert_max_num_queries(20):
        assert admin_client.get(CHANGELIST, {"template__id__exact": per_user.pk}).status_code == 200


# --- a template's page ------------------------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_the_template_page_counts_its_values_and_their_levels_and_ranks_the_top_ones(admin_client, per_user):
    response = admin_client.get(change_url(per_user))
    assert response.status_code == 200
    assert "budget_page" not in response.context  # a template has no status of its own
    html = response.content.decode()
    counts = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td class="cc-num">(\d+)</td></tr>', html))
    assert counts == {"values": "44", "with an amount of their own": "1", "spent this period": "3"}
    levels = dict(re.findall(r"<tr><th scope=\"row\"><span [^>]*>(\w+)</span></th><td class=\"cc-num\">(\d+)", html))
    assert levels == {"ok": "1", "info": "0", "warning": "1", "critical": "0", "exceeded": "1"}
    # The highest utilisation first, each linked to the value's own page (its status and periods).
    assert top_values(html) == ["alice", "bob", "carol"]
    alice = value(per_user, "alice")
    assert f'<a href="{change_url(alice)}">alice</a>' in html
    assert "120.0 %" in html and "85.0 %" in html
    assert f'href="{CHANGELIST}?template__id__exact={per_user.pk}">All its values (44)</a>' in html
    assert "This period" in html and "Period history" not in html


@time_machine.travel(NOW, tick=False)
def test_the_template_page_searches_its_values_and_marks_an_own_amount(admin_client, per_user):
    html = admin_client.get(change_url(per_user), {"q": "ali"}).content.decode()
    assert top_values(html) == ["alice"] and "Values matching “ali”" in html

    # A value with no spend this period is still found by its name, marked as having its own amount.
    html = admin_client.get(change_url(per_user), {"q": "dav"}).content.decode()
    assert top_values(html) == ["dave"]
    row = html[html.index(f'<a href="{change_url(value(per_user, "dave"))}">dave</a>') :]
    assert row[: row.index("</tr>")].count("own amount") == 1 and "50.00 USD" in row[: row.index("</tr>")]

    html = admin_client.get(change_url(per_user), {"q": "nobody"}).content.decode()
    assert top_values(html) == [] and "No value matches “nobody”." in html


@time_machine.travel(NOW, tick=False)
def test_the_own_amount_form_gives_one_value_its_own_amount(admin_client, per_user, spend):
    page = admin_client.get(change_url(per_user)).content.decode()
    assert f'action="{own_amount_url(per_user)}"' in page and "Own amount for one value" in page

    response = admin_client.post(own_amount_url(per_user), {"value": "erin", "amount": "25"})
    assert response.status_code == 302 and response.url == f"{change_url(per_user)}?q=erin"
    erin = value(per_user, "erin")
    assert (erin.amount, erin.override, erin.period) == (Decimal("25"), True, "monthly")
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message == "erin has an amount of its own: 25.00 USD (monthly)."

    # An existing value (bob) keeps its budget and takes the new amount.
    bob = value(per_user, "bob")
    assert admin_client.post(own_amount_url(per_user), {"value": "bob", "amount": "100"}).status_code == 302
    bob.refresh_from_db()
    assert (bob.amount, bob.override) == (Decimal("100"), True)


@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize(
    ("form", "field", "words"),
    [
        ({"value": "frank", "amount": "-5"}, "amount", "must be zero or more"),
        ({"value": "frank", "amount": "lots"}, "amount", "lots"),
        ({"value": "frank", "amount": ""}, "amount", "required"),
        ({"value": "", "amount": "5"}, "value", "required"),
        ({"value": "frank/x", "amount": "5"}, "value", "without surrounding spaces or '/'"),
        ({"value": "*", "amount": "5"}, "value", "watches one scope"),
    ],
    ids=["negative", "not-a-number", "no-amount", "no-value", "slash", "each-value"],
)
def test_the_own_amount_form_refuses_a_bad_value_or_amount_naming_the_field(admin_client, per_user, form, field, words):
    before = Budget.objects.count()
    response = admin_client.post(own_amount_url(per_user), form)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) == {field} and words in " ".join(errors[field]), errors
    assert words in response.content.decode().replace("&#x27;", "'")
    assert Budget.objects.count() == before


def test_a_team_templates_own_amount_refuses_a_value_of_another_team():
    alpha, bravo = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    template = BudgetFactory(name="Alpha users", scope="team:alpha/subject:*", team=alpha, amount=Decimal("5"))
    _, alice = staff_client("alice", [alpha])
    response = alice.post(own_amount_url(template), {"value": "team:bravo/subject:eve", "amount": "50"})
    assert response.status_code == 200 and "value" in response.context["form"].errors
    assert not Budget.objects.filter(template=template).exists()
    # A value of its own team is taken, and stays the team's.
    assert alice.post(own_amount_url(template), {"value": "eve", "amount": "50"}).status_code == 302
    eve = value(template, "eve")
    assert (eve.scope, eve.team, eve.amount) == ("team:alpha/subject:eve", alpha, Decimal("50"))
    assert bravo.budgets.count() == 0


# --- a value's page -----------------------------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_a_values_page_names_its_template_shows_its_status_and_edits_only_its_amount(admin_client, per_user):
    alice = value(per_user, "alice")
    response = admin_client.get(change_url(alice))
    html = response.content.decode()
    assert f'of template <a href="{change_url(per_user)}">Per user</a>' in html
    assert "This period" in html and "Period history" in html and "12.00 USD" in html
    assert set(response.context["adminform"].form.fields) == {"amount"}  # following the template: no box
    assert "Set on the template and followed by every value" in html

    form = {"amount": "20", "name": "Renamed", "period": "daily", "hard_limit": "on", "thresholds": "10"}
    saved = admin_client.post(change_url(alice), form)
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    alice.refresh_from_db()
    assert (alice.amount, alice.override) == (Decimal("20"), True)
    assert (alice.name, alice.period, alice.hard_limit, alice.thresholds) == (
        "Per user: alice",
        "monthly",
        False,
        [50, 80, 95, 100],
    )

    # With an amount of its own, the page offers to follow the template's amount again.
    page = admin_client.get(change_url(alice))
    assert set(page.context["adminform"].form.fields) == {"amount", "follow_template"}
    both = admin_client.post(change_url(alice), {"amount": "30", "follow_template": "on"})
    assert "follow_template" in both.context["adminform"].form.errors
    followed = admin_client.post(change_url(alice), {"amount": "20.00", "follow_template": "on"})
    assert followed.status_code == 302
    alice.refresh_from_db()
    assert (alice.amount, alice.override) == (Decimal("10"), False)

    # An unchanged amount stays the template's: saving does not make it the value's own.
    assert admin_client.post(change_url(alice), {"amount": "10.00"}).status_code == 302
    alice.refresh_from_db()
    assert alice.override is False


@time_machine.travel(NOW, tick=False)
def test_a_values_amount_is_checked_like_any_budgets(admin_client, per_user):
    alice = value(per_user, "alice")
    response = admin_client.post(change_url(alice), {"amount": "-1"})
    assert response.status_code == 200 and "amount" in response.context["adminform"].form.errors
    alice.refresh_from_db()
    assert (alice.amount, alice.override) == (Decimal("10"), False)


# --- creating a template: a scope nobody spent on is confirmed -----------------------------------------------


TEMPLATE_FORM = {
    "name": "Per customer",
    "amount": "100",
    "currency": "USD",
    "period": "monthly",
    "thresholds": "50, 80, 95, 100",
    "metadata": "{}",
    "is_active": "on",
}


@pytest.mark.parametrize("scope", ["tag:customer=*", "subject:*"])
def test_a_template_scope_whose_values_spent_saves_at_once(admin_client, spend, scope):
    spend("1", datetime.now(UTC), tags={"customer": "acme"}, subject="alice")
    response = admin_client.post(BUDGET_ADD, {**TEMPLATE_FORM, "scope": scope})
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Budget.objects.templates().get().scope == scope


def test_a_typo_in_a_templates_tag_key_asks_for_confirmation_naming_it(admin_client, spend):
    spend("1", datetime.now(UTC), tags={"customer": "acme"})
    asked = admin_client.post(BUDGET_ADD, {**TEMPLATE_FORM, "scope": "tag:custmer=*"})
    assert asked.status_code == 200 and not Budget.objects.exists()
    [message] = asked.context["adminform"].form.errors["scope"]
    assert "No spend has ever been recorded for any value of tag:custmer=*" in message
    assert "Did you mean tag:customer=*?" in message
    assert 'type="checkbox" name="confirm_scope"' in asked.content.decode()

    confirmed = admin_client.post(BUDGET_ADD, {**TEMPLATE_FORM, "scope": "tag:custmer=*", "confirm_scope": "on"})
    assert confirmed.status_code == 302 and Budget.objects.get().scope == "tag:custmer=*"


def test_the_scope_field_suggests_the_templates_of_the_scopes_with_spend(admin_client, spend):
    spend("1", datetime.now(UTC), tags={"customer": "acme"}, subject="alice")
    html = admin_client.get(BUDGET_ADD).content.decode()
    options = set(re.findall(r'<option value="([^"]+)">', html[html.index('id="id_scope-suggestions"') :]))
    assert {"subject:alice", "subject:*", "tag:customer=*", "provider:*", "model:*"} <= options


def test_a_team_member_is_asked_about_a_template_only_another_team_spent_on(spend):
    alpha, _ = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    spend("1", datetime.now(UTC), subject="bob", team="bravo")
    _, alice = staff_client("alice", [alpha])
    form = {**TEMPLATE_FORM, "team": alpha.pk}
    asked = alice.post(BUDGET_ADD, {**form, "scope": "team:alpha/subject:*"})
    [message] = asked.context["adminform"].form.errors["scope"]
    assert "No spend has ever been recorded for any value of team:alpha/subject:*" in message
    assert "bravo" not in asked.content.decode()
    spend("1", datetime.now(UTC), subject="ann", team="alpha")
    assert alice.post(BUDGET_ADD, {**form, "scope": "team:alpha/subject:*"}).status_code == 302


def test_a_templates_scope_is_kept_once_it_has_values(admin_client, per_user):
    response = admin_client.get(change_url(per_user))
    assert "scope" not in response.context["adminform"].form.fields
    assert "each end user (subject) gets a budget of its own with these settings" in response.content.decode()


# --- teams -------------------------------------------------------------------------------------------------


def test_a_teams_staff_see_neither_another_teams_template_nor_its_values(spend):
    alpha, bravo = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    mine = BudgetFactory(name="Alpha users", scope="team:alpha/subject:*", team=alpha)
    theirs = BudgetFactory(name="Bravo users", scope="team:bravo/subject:*", team=bravo)
    [ann] = budget_values_ensure(pairs=[(mine, "team:alpha/subject:ann")])
    [bob] = budget_values_ensure(pairs=[(theirs, "team:bravo/subject:bob")])
    _, alice = staff_client("alice", [alpha])

    assert names_in(alice.get(CHANGELIST)) == {"Alpha users"}
    other = alice.get(CHANGELIST, {"template__id__exact": theirs.pk})
    assert names_in(other) == set() and "Bravo" not in other.content.decode()
    assert names_in(alice.get(CHANGELIST, {"template__id__exact": mine.pk})) == {"Alpha users: ann"}
    assert names_in(alice.get(CHANGELIST, {"q": "bob"})) == set()
    assert names_in(alice.get(CHANGELIST, {"q": "subject:"})) == {"Alpha users", "Alpha users: ann"}

    for hidden in (theirs, bob):
        response = alice.get(change_url(hidden))
        assert response.status_code == 302 and response.url == reverse("admin:index")
    assert alice.get(change_url(mine)).status_code == 200 and alice.get(change_url(ann)).status_code == 200
    assert alice.get(own_amount_url(theirs)).status_code == 404
    assert alice.post(own_amount_url(theirs), {"value": "eve", "amount": "50"}).status_code == 404
    assert not Budget.objects.filter(template=theirs, scope="team:bravo/subject:eve").exists()


def test_staff_who_may_only_view_budgets_get_no_own_amount_form():
    alpha = TeamFactory(name="alpha")
    template = BudgetFactory(name="Alpha users", scope="team:alpha/subject:*", team=alpha)
    _, viewer = staff_client("viewer", [alpha], perms=["view_budget"])
    html = viewer.get(change_url(template)).content.decode()
    assert "Its values" in html and "Own amount for one value" not in html
    assert viewer.post(own_amount_url(template), {"value": "eve", "amount": "5"}).status_code == 403
    assert not Budget.objects.filter(template=template).exists()


def test_staff_who_may_only_view_budgets_see_a_values_page_read_only():
    alpha = TeamFactory(name="alpha")
    template = BudgetFactory(name="Alpha users", scope="team:alpha/subject:*", team=alpha, amount=Decimal("5"))
    eve = budget_override_set(template=template, value="eve", amount="50")
    _, viewer = staff_client("viewer", [alpha], perms=["view_budget"])
    response = viewer.get(change_url(eve))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Value <strong" in html and 'name="amount"' not in html and 'name="follow_template"' not in html
    assert viewer.post(change_url(eve), {"amount": "1", "follow_template": "on"}).status_code == 403
    eve.refresh_from_db()
    assert (eve.amount, eve.override) == (Decimal("50"), True)
