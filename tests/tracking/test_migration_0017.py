"""tracking/0017: the entries already in the ledger count in their service's copy of their subject and job."""

from __future__ import annotations

import pytest

from tests.migrating import migrate
from tracking.models import SpendRollup, SpendRollupDay
from tracking.services import cost_entry_record


def rollups() -> set[tuple[str, str]]:
    return {
        *((f"h:{r.scope}", str(r.amount)) for r in SpendRollup.objects.all()),
        *((f"d:{r.scope}", str(r.amount)) for r in SpendRollupDay.objects.all()),
    }


@pytest.mark.django_db(transaction=True)
def test_entries_recorded_before_service_copies_gain_their_services_rollups(gpt4o_prices):
    cost_entry_record(provider="openai", model="gpt-4o", amount="1.50", service="etl", job="j1", subject="u1")
    cost_entry_record(provider="openai", model="gpt-4o", amount="2.00", service="web")
    expected = rollups()
    assert {scope for scope, _ in expected} >= {"h:service:etl/job:j1", "d:service:etl/subject:u1"}
    # As the ledger was before 0017: no service copies of subjects and jobs.
    SpendRollup.objects.filter(scope__startswith="service:etl/").delete()
    SpendRollupDay.objects.filter(scope__startswith="service:etl/").delete()

    migrate({"tracking": "0016_help_texts_for_people"})
    migrate({})

    assert rollups() == expected
