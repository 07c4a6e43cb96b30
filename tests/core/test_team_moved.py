"""Team moved from tracking to core (core/0001): the rows, members, permissions and the ledger's
links to a team survive the migration, forwards and backwards."""

from __future__ import annotations

import pytest

from tests.migrating import migrate

BEFORE = {
    "tracking": "0010_spendrollupday_scope_like",
    "budgets": "0003_definitions_generation",
    "alerts": "0005_notification_claimed_by",
    "core": None,
}
AFTER = {"tracking": "0011_team_moved_to_core", "budgets": "0004_team_in_core", "alerts": "0006_team_in_core"}


@pytest.mark.django_db(transaction=True)
def test_a_team_its_members_permissions_and_entries_survive_the_move_to_core():
    old = migrate(BEFORE)
    User = old.get_model("auth", "User")
    Team = old.get_model("tracking", "Team")
    ContentType = old.get_model("contenttypes", "ContentType")
    Permission = old.get_model("auth", "Permission")
    Budget = old.get_model("budgets", "Budget")
    user = User.objects.create(username="ann", is_staff=True)
    team = Team.objects.create(name="alpha")
    team.members.add(user)
    content_type, _ = ContentType.objects.get_or_create(app_label="tracking", model="team")
    permission, _ = Permission.objects.get_or_create(
        codename="change_team", content_type=content_type, defaults={"name": "Can change team"}
    )
    user.user_permissions.add(permission)
    Budget.objects.create(name="alpha monthly", scope="team:alpha", amount=10, team=team)

    new = migrate(AFTER)
    moved = new.get_model("core", "Team").objects.get(name="alpha")
    assert list(moved.members.values_list("username", flat=True)) == ["ann"]
    assert new.get_model("budgets", "Budget").objects.get().team_id == moved.pk
    kept = new.get_model("auth", "Permission").objects.get(pk=permission.pk)
    assert (kept.content_type.app_label, kept.content_type.model) == ("core", "team")
    assert new.get_model("auth", "User").objects.get(username="ann").user_permissions.get().pk == permission.pk

    back = migrate(BEFORE)
    assert back.get_model("tracking", "Team").objects.get(name="alpha").members.count() == 1
    assert back.get_model("contenttypes", "ContentType").objects.get(pk=content_type.pk).app_label == "tracking"
    migrate({})  # every app at its latest migration again, for the tests that follow
