"""A staff member of team alpha (not a superuser), holding every view, add, change and delete permission
of the app's models, neither sees nor changes team bravo's channels, API keys or membership, and cannot
make themself more than they are (issue 18). Through the admin, with Django's test client."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.messages import get_messages
from django.db import IntegrityError
from django.urls import reverse

from alerts.models import AlertRule, Channel, Notification
from alerts.services import alert_fire
from api.keys import api_key_issue
from api.models import ApiKey
from budgets.models import Budget
from core.models import Team
from tests.admin_clients import staff_client, superuser_client
from tests.factories import AlertRuleFactory, ChannelFactory, TeamFactory

pytestmark = pytest.mark.django_db

APPS = ["core", "tracking", "budgets", "alerts", "api", "analytics", "auth"]
BRAVO_TOKEN = "T00BRAVO/B00BRAVO/bravo-secret-token"
BRAVO_SECRET = "bravo-signing-secret-4f1c"


def assert_doesnt_exist(response: Any) -> None:
    """The admin's answer to an object it cannot find: a redirect to the index with a message."""
    assert response.status_code == 302 and response.url == reverse("admin:index"), response
    *_, message = list(get_messages(response.wsgi_request))
    assert "doesn\N{RIGHT SINGLE QUOTATION MARK}t exist" in str(message)


def names(response: Any) -> set[str]:
    assert response.status_code == 200, response
    return {str(obj.name) for obj in response.context["cl"].result_list}


def form_of(response: Any) -> Any:
    assert response.status_code == 200, response
    return response.context["adminform"].form


@pytest.fixture
def teams() -> tuple[Team, Team]:
    return TeamFactory(name="alpha"), TeamFactory(name="bravo")


@pytest.fixture
def channels(teams: tuple[Team, Team]) -> dict[str, Channel]:
    alpha, bravo = teams
    return {
        "alpha": ChannelFactory(name="alpha mail", kind="email", target="ops@alpha.example", team=alpha),
        "bravo": ChannelFactory(
            name="bravo hook",
            kind="slack",
            target=f"https://hooks.slack.com/services/{BRAVO_TOKEN}",
            secret=BRAVO_SECRET,
            team=bravo,
        ),
        "org": ChannelFactory(name="org mail", kind="email", target="finance@example.com", is_default=True),
    }


# --- channels ---------------------------------------------------------------------------------------


def test_staff_see_only_their_teams_channels_and_never_another_teams_url_or_secret(teams, channels):
    _, alice = staff_client("alice", [teams[0]])
    changelist = reverse("admin:alerts_channel_changelist")

    response = alice.get(changelist)
    assert names(response) == {"alpha mail"}
    assert BRAVO_TOKEN not in response.content.decode() and "bravo" not in response.content.decode()
    # Searching by the other team's token finds nothing either.
    assert names(alice.get(changelist, {"q": "B00BRAVO"})) == set()
    # Their own channel's page shows its target.
    own = alice.get(reverse("admin:alerts_channel_change", args=[channels["alpha"].pk]))
    assert own.status_code == 200 and "ops@alpha.example" in own.content.decode()


def test_another_teams_channel_cannot_be_opened_changed_tested_or_deleted(teams, channels):
    _, alice = staff_client("alice", [teams[0]])
    bravo = channels["bravo"]
    change = reverse("admin:alerts_channel_change", args=[bravo.pk])

    assert_doesnt_exist(alice.get(change))
    assert_doesnt_exist(alice.get(reverse("admin:alerts_channel_history", args=[bravo.pk])))
    assert_doesnt_exist(alice.get(reverse("admin:alerts_channel_delete", args=[bravo.pk])))
    assert_doesnt_exist(
        alice.post(change, {"name": "taken", "kind": "email", "target": "me@alpha.example", "team": teams[0].pk})
    )
    assert_doesnt_exist(alice.post(reverse("admin:alerts_channel_delete", args=[bravo.pk]), {"post": "yes"}))
    changelist = reverse("admin:alerts_channel_changelist")
    alice.post(changelist, {"action": "send_test", "_selected_action": [bravo.pk]})
    alice.post(changelist, {"action": "delete_selected", "_selected_action": [bravo.pk], "post": "yes"})

    bravo.refresh_from_db()
    assert (bravo.name, bravo.target, bravo.team) == (
        "bravo hook",
        f"https://hooks.slack.com/services/{BRAVO_TOKEN}",
        teams[1],
    )
    assert not Notification.objects.filter(channel=bravo).exists()


def test_the_channel_autocomplete_lists_only_the_users_teams_channels(teams, channels):
    _, alice = staff_client("alice", [teams[0]])
    for source, field in (("alertrule", "channels"), ("budget", "channels"), ("notification", "channel")):
        app = "budgets" if source == "budget" else "alerts"
        response = alice.get(
            reverse("admin:autocomplete"), {"app_label": app, "model_name": source, "field_name": field, "term": ""}
        )
        assert response.status_code == 200
        assert [r["text"] for r in response.json()["results"]] == ["alpha mail (email)"], (source, response.json())


def test_rule_and_budget_forms_offer_only_their_teams_and_organisation_wide_channels(teams, channels):
    alpha, _ = teams
    _, alice = staff_client("alice", [alpha])
    for add in (reverse("admin:alerts_alertrule_add"), reverse("admin:budgets_budget_add")):
        response = alice.get(add)
        assert list(form_of(response).fields["channels"].queryset) == [channels["alpha"], channels["org"]]
        assert "bravo" not in response.content.decode()

    # Naming the other team's channel by its id is refused; nothing is written.
    rule = alice.post(
        reverse("admin:alerts_alertrule_add"), {**RULE_FORM, "team": alpha.pk, "channels": [channels["bravo"].pk]}
    )
    assert "channels" in form_of(rule).errors
    budget = alice.post(
        reverse("admin:budgets_budget_add"), {**BUDGET_FORM, "team": alpha.pk, "channels": [channels["bravo"].pk]}
    )
    assert "channels" in form_of(budget).errors
    assert not AlertRule.objects.exists() and not Budget.objects.exists()

    ok = alice.post(
        reverse("admin:alerts_alertrule_add"),
        {**RULE_FORM, "team": alpha.pk, "channels": [channels["alpha"].pk, channels["org"].pk]},
    )
    assert ok.status_code == 302, form_of(ok).errors
    assert set(AlertRule.objects.get().channels.all()) == {channels["alpha"], channels["org"]}


def test_a_teams_budget_or_rule_sends_only_to_its_teams_or_organisation_wide_channels_even_for_a_superuser(
    teams, channels
):
    alpha, _ = teams
    root = superuser_client()
    rule = root.post(
        reverse("admin:alerts_alertrule_add"), {**RULE_FORM, "team": alpha.pk, "channels": [channels["bravo"].pk]}
    )
    assert "bravo hook (Slack) belongs to team bravo" in str(form_of(rule).errors["channels"])
    budget = root.post(
        reverse("admin:budgets_budget_add"), {**BUDGET_FORM, "team": alpha.pk, "channels": [channels["bravo"].pk]}
    )
    assert "channels" in form_of(budget).errors
    # An organisation-wide rule may not send to a team's channel (the team would read everyone's alerts).
    org_rule = root.post(
        reverse("admin:alerts_alertrule_add"), {**RULE_FORM, "scope": "global", "channels": [channels["alpha"].pk]}
    )
    assert "channels" in form_of(org_rule).errors
    assert not AlertRule.objects.exists() and not Budget.objects.exists()


def test_an_alert_never_reaches_another_teams_channel_whatever_wrote_the_link(teams, channels):
    alpha, bravo = teams
    rule = AlertRuleFactory(name="alpha rule", scope="team:alpha", team=alpha)
    rule.channels.set([channels["bravo"], channels["alpha"]])  # written past the admin
    bravo_default = ChannelFactory(
        name="bravo default", kind="email", target="b@bravo.example", team=bravo, is_default=True
    )
    common = {"level": "warning", "scope": "team:alpha", "title": "t", "message": "alpha's spend"}

    alert_fire(key="r", rule=rule, source="rule", **common)
    assert set(Notification.objects.values_list("channel__name", flat=True)) == {"alpha mail"}

    # With no channel of its own, a team's alert goes to the organisation's defaults and its team's,
    # never another team's default; an organisation-wide alert to the organisation's only.
    lonely = AlertRuleFactory(name="alpha lonely", scope="team:alpha", team=alpha)
    lonely.channels.set([channels["bravo"]])
    alert_fire(key="l", rule=lonely, source="rule", **common)
    alert_fire(key="o", source="rule", **{**common, "scope": "global"})
    sent = set(Notification.objects.filter(alert__key__in=["l", "o"]).values_list("alert__key", "channel__name"))
    assert sent == {("l", "org mail"), ("o", "org mail")}
    assert not Notification.objects.filter(channel=bravo_default).exists()


def test_a_channel_created_by_team_staff_belongs_to_their_team_and_a_team_channel_gets_no_daily_report(teams, channels):
    alpha, bravo = teams
    _, alice = staff_client("alice", [alpha])
    add = reverse("admin:alerts_channel_add")
    form = form_of(alice.get(add))
    assert list(form.fields["team"].queryset) == [alpha] and form.fields["team"].required

    assert "team" in form_of(alice.post(add, {**CHANNEL_FORM, "name": "no team"})).errors
    assert "team" in form_of(alice.post(add, {**CHANNEL_FORM, "name": "theirs", "team": bravo.pk})).errors
    report = alice.post(add, {**CHANNEL_FORM, "name": "report", "team": alpha.pk, "receives_reports": "on"})
    assert "receives_reports" in form_of(report).errors
    ok = alice.post(add, {**CHANNEL_FORM, "name": "ours", "team": alpha.pk})
    assert ok.status_code == 302, form_of(ok).errors
    assert Channel.objects.get(name="ours").team == alpha
    assert not Channel.objects.filter(name__in=["no team", "theirs", "report"]).exists()
    # The database holds the rule too.
    with pytest.raises(IntegrityError):
        Channel.objects.filter(name="ours").update(receives_reports=True)


def test_a_channel_in_use_by_a_team_cannot_be_moved_to_another_team(teams, channels):
    alpha, bravo = teams
    rule = AlertRuleFactory(name="alpha rule", scope="team:alpha", team=alpha)
    rule.channels.set([channels["alpha"]])
    root = superuser_client()
    change = reverse("admin:alerts_channel_change", args=[channels["alpha"].pk])
    response = root.post(
        change, {**CHANNEL_FORM, "name": "alpha mail", "target": "ops@alpha.example", "team": bravo.pk}
    )
    assert "1 rule(s) of another team" in str(form_of(response).errors["team"])
    assert Channel.objects.get(pk=channels["alpha"].pk).team == alpha


# --- API keys ---------------------------------------------------------------------------------------


@pytest.fixture
def keys(teams: tuple[Team, Team]) -> dict[str, ApiKey]:
    alpha, bravo = teams
    return {
        "alpha": api_key_issue(name="alpha key", service="alpha-svc", team=alpha).key,
        "bravo": api_key_issue(
            name="bravo key", service="bravo-svc", team=bravo, scopes=["team:bravo/service:bravo-svc"]
        ).key,
        "org": api_key_issue(name="org key", service="org-svc").key,
    }


def test_staff_list_and_revoke_only_their_teams_keys(teams, keys):
    _, alice = staff_client("alice", [teams[0]])
    changelist = reverse("admin:api_apikey_changelist")
    response = alice.get(changelist)
    assert names(response) == {"alpha key"}
    assert "bravo" not in response.content.decode()  # no key, service or team filter entry of theirs
    assert_doesnt_exist(alice.get(reverse("admin:api_apikey_change", args=[keys["bravo"].pk])))
    assert_doesnt_exist(alice.post(reverse("admin:api_apikey_delete", args=[keys["bravo"].pk]), {"post": "yes"}))

    alice.post(changelist, {"action": "revoke", "_selected_action": [keys["bravo"].pk, keys["alpha"].pk]})
    assert ApiKey.objects.get(pk=keys["bravo"].pk).revoked_at is None
    assert ApiKey.objects.get(pk=keys["alpha"].pk).revoked_at is not None


def test_a_key_created_by_team_staff_has_their_team_and_their_scopes_only(teams, keys):
    alpha, bravo = teams
    _, alice = staff_client("alice", [alpha])
    add = reverse("admin:api_apikey_add")
    form = form_of(alice.get(add))
    assert list(form.fields["team"].queryset) == [alpha] and form.fields["team"].required

    assert "team" in form_of(alice.post(add, {**KEY_FORM, "name": "no team"})).errors
    assert "team" in form_of(alice.post(add, {**KEY_FORM, "name": "theirs", "team": bravo.pk})).errors
    scoped = alice.post(add, {**KEY_FORM, "name": "peek", "team": alpha.pk, "scopes": "team:bravo"})
    assert "scopes" in form_of(scoped).errors
    # Another team's service is refused without naming that team or its key.
    taken = alice.post(add, {**KEY_FORM, "name": "taken", "team": alpha.pk, "service": "bravo-svc"})
    assert "belongs to another team" in str(form_of(taken).errors["service"])
    assert "bravo" not in taken.content.decode().replace("bravo-svc", "")

    ok = alice.post(add, {**KEY_FORM, "name": "ours", "team": alpha.pk, "scopes": "team:alpha/service:alpha-svc"})
    assert ok.status_code == 200 and "cc_" in ok.content.decode()  # the key, shown once
    assert ApiKey.objects.get(name="ours").team == alpha
    assert not ApiKey.objects.filter(name__in=["no team", "theirs", "peek", "taken"]).exists()


# --- team membership, users and groups ------------------------------------------------------------


def test_team_membership_is_changed_only_by_superusers(teams):
    alpha, bravo = teams
    alice, client = staff_client("alice", [alpha])
    changelist = reverse("admin:core_team_changelist")
    assert names(client.get(changelist)) == {"alpha"}

    own = reverse("admin:core_team_change", args=[alpha.pk])
    page = client.get(own)
    assert page.status_code == 200 and not page.context["has_change_permission"]  # read-only
    assert client.post(own, {"name": "alpha", "members": [alice.pk]}).status_code == 403
    assert_doesnt_exist(client.get(reverse("admin:core_team_change", args=[bravo.pk])))
    join = client.post(reverse("admin:core_team_change", args=[bravo.pk]), {"name": "bravo", "members": [alice.pk]})
    assert join.status_code == 403
    assert client.get(reverse("admin:core_team_add")).status_code == 403
    assert client.post(reverse("admin:core_team_delete", args=[alpha.pk]), {"post": "yes"}).status_code == 403
    assert_doesnt_exist(client.get(reverse("admin:core_team_history", args=[bravo.pk])))
    teams_found = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "budgets", "model_name": "budget", "field_name": "team", "term": ""},
    ).json()["results"]
    assert [t["text"] for t in teams_found] == ["alpha"]
    assert set(bravo.members.all()) == set() and Team.objects.filter(name="alpha").exists()

    root = superuser_client()
    response = root.post(own, {"name": "alpha", "members": [alice.pk]})
    assert response.status_code == 302
    assert list(alpha.members.all()) == [alice]


def test_a_staff_member_with_user_and_group_permissions_cannot_make_themself_more(teams):
    alice, client = staff_client("alice", [teams[0]])
    boss = User.objects.create_superuser("boss", password="pw-not-used")
    everything = Group.objects.create(name="everything")
    own = reverse("admin:auth_user_change", args=[alice.pk])

    assert client.get(own).status_code == 200  # they may look
    grab = {
        "username": "alice",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "groups": [everything.pk],
        "user_permissions": list(Permission.objects.values_list("pk", flat=True)),
        "date_joined_0": "2024-01-01",
        "date_joined_1": "00:00:00",
    }
    assert client.post(own, grab).status_code == 403
    group = reverse("admin:auth_group_change", args=[everything.pk])
    assert (
        client.post(
            group, {"name": "everything", "permissions": list(Permission.objects.values_list("pk", flat=True))}
        ).status_code
        == 403
    )
    password = reverse("admin:auth_user_password_change", args=[boss.pk])
    assert client.post(password, {"password1": "Taken-over-42!", "password2": "Taken-over-42!"}).status_code == 403
    assert (
        client.post(
            reverse("admin:auth_user_add"),
            {"username": "mallory", "password1": "Mallory-pw-42!", "password2": "Mallory-pw-42!"},
        ).status_code
        == 403
    )
    assert client.post(reverse("admin:auth_user_delete", args=[boss.pk]), {"post": "yes"}).status_code == 403

    alice.refresh_from_db()
    boss.refresh_from_db()
    assert not alice.is_superuser and not alice.groups.exists()
    assert alice.user_permissions.count() == Permission.objects.count()
    assert not everything.permissions.exists() and boss.check_password("pw-not-used")
    assert not User.objects.filter(username="mallory").exists()


# --- forms ------------------------------------------------------------------------------------------

CHANNEL_FORM = {
    "kind": "email",
    "target": "ops@alpha.example",
    "min_level": "info",
    "max_per_hour": "20",
    "is_enabled": "on",
}
RULE_FORM = {
    "name": "alpha spend",
    "is_enabled": "on",
    "metric": "spend",
    "scope": "team:alpha",
    "window": "day",
    "threshold": "10",
    "level": "warning",
    "cooldown": "01:00:00",
}
BUDGET_FORM = {
    "name": "alpha budget",
    "scope": "team:alpha",
    "amount": "50",
    "currency": "USD",
    "period": "monthly",
    "thresholds": "50, 80, 100",
    "metadata": "{}",
    "is_active": "on",
    "periods-TOTAL_FORMS": "0",
    "periods-INITIAL_FORMS": "0",
}
KEY_FORM = {"service": "alpha-svc", "scopes": "", "rate_limit_per_minute": "", "expires_at": ""}
