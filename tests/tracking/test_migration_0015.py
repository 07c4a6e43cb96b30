"""tracking/0015: the entries already in the ledger count in their team's copies of their scopes."""

from __future__ import annotations

import pytest

from tests.factories import TeamFactory
from tests.migrating import migrate
from tracking.models import SpendRollup, SpendRollupDay
from tracking.services import cost_entry_record


def rollups() -> set[tuple[str, str]]:
    return {
        *((f"h:{r.scope}", str(r.amount)) for r in SpendRollup.objects.all()),
        *((f"d:{r.scope}", str(r.amount)) for r in SpendRollupDay.objects.all()),
    }


@pytest.mark.django_db(transaction=True)
def test_a_teams_entries_recorded_before_team_scopes_gain_their_teams_rollups(gpt4o_prices):
    TeamFactory(name="alpha")
    cost_entry_record(provider="openai", model="gpt-4o", amount="1.50", service="chat", team="alpha")
    cost_entry_record(provider="openai", model="gpt-4o", amount="2.00", service="chat")
    expected = rollups()
    assert {scope for scope, _ in expected} >= {"h:team:alpha/service:chat", "d:team:alpha/model:gpt-4o"}
    # As the ledger was before 0015: no team copies of the scopes.
    SpendRollup.objects.filter(scope__startswith="team:alpha/").delete()
    SpendRollupDay.objects.filter(scope__startswith="team:alpha/").delete()

    migrate({"tracking": "0014_batch_service"})
    migrate({})

    assert rollups() == expected
