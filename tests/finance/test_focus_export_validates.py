"""manage.py export_focus of a demo ledger (every provider and model of `seed_demo_data`, GPU-hours, an explicit
amount, an unpriced call, a correction, a team's entry) passes the FinOps Foundation's focus-validator for
FOCUS 1.2 with the capabilities the export claims; and what the validator does not check, we do: ListCost is
ListUnitPrice x PricingQuantity and BilledCost sums to the ledger per day and provider."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.factories import TeamFactory
from tests.finance.focus import COSTCONTROL_CRITERIA
from tracking.models import CostEntry, SpendRollupDay
from tracking.services import cost_entry_correct, cost_entry_record

# The validator's one report on every file with an InvoiceId column (tests/finance/focus.py): the untaken
# alternative of InvoiceId-C-003-C ("null, OR not null"). A metered export has no invoice: null throughout.
UNTAKEN_INVOICE_ID_BRANCH = "InvoiceId-C-005-C"


@pytest.fixture
def demo_export(db, tmp_path) -> tuple[Path, str, str]:
    call_command("seed_demo_data", "--days", "2", "--json", stdout=io.StringIO())
    now = timezone.now()
    team = TeamFactory(name="ml")
    yesterday = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    cost_entry_record(provider="openai", model="gpt-4o", amount="0.42", service="chat", occurred_at=yesterday)
    cost_entry_record(provider="openai", model="gpt-9-preview", input_tokens=100, service="chat", occurred_at=yesterday)
    teams = cost_entry_record(
        provider="openai", model="gpt-4o", input_tokens=5000, output_tokens=700, service="ml-bot", team=team,
        subject="alice", tags={"env": "prod"}, occurred_at=yesterday,
    ).entry  # fmt: skip
    cost_entry_correct(entry=teams, amount="0.01", note="the invoice says so")
    start = (now - timedelta(days=3)).date().isoformat()
    end = (now + timedelta(days=1)).date().isoformat()
    out = tmp_path / "focus.csv"
    call_command("export_focus", "--from", start, "--to", end, "--out", str(out), stderr=io.StringIO())
    return out, start, end


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_the_export_of_a_demo_ledger_passes_the_focus_1_2_validator(demo_export, focus_validator):
    path, _, _ = demo_export
    rows = rows_of(path)
    assert {r["ChargeCategory"] for r in rows} == {"Usage", "Adjustment"}
    assert {r["x_Provider"] for r in rows} >= {"openai", "anthropic", "gpu"}
    assert {r["x_PricingStatus"] for r in rows} == {"priced", "explicit", "unpriced"}

    result = focus_validator(path, criteria=COSTCONTROL_CRITERIA)

    assert result.ok, result.explain()
    assert result.failed_rule_ids in ([], [UNTAKEN_INVOICE_ID_BRANCH]), result.output
    assert result.passed > 200  # the conditional rules of the claimed capabilities ran, not only the mandatory ones
    for rule in ("BilledCost-C-001-M", "ChargeCategory-C-001-M", "PricingUnit-C-001-M", "Tags-C-001-M"):
        assert result.statuses.get(rule) == "PASS", rule


def test_list_cost_is_the_list_unit_price_times_the_quantity_and_billed_cost_sums_to_the_ledger(demo_export):
    path, start, end = demo_export
    rows = rows_of(path)
    for row in rows:
        if row["ChargeCategory"] == "Usage" and row["ListUnitPrice"]:
            expected = (Decimal(row["ListUnitPrice"]) * Decimal(row["PricingQuantity"])).quantize(Decimal("1e-9"))
            # Each entry's parts are rounded to 9 places before they are added: at most half a nano-dollar each.
            tolerance = Decimal("5e-10") * int(row["x_Entries"])
            assert abs(Decimal(row["ListCost"]) - expected) <= tolerance, row
    billed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        billed[(row["ChargePeriodStart"][:10], row["x_Provider"])] += Decimal(row["BilledCost"])
    ledger: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    since = datetime.fromisoformat(start).replace(tzinfo=UTC)
    until = datetime.fromisoformat(end).replace(tzinfo=UTC)
    for day in SpendRollupDay.objects.filter(scope__startswith="provider:", bucket__gte=since, bucket__lt=until):
        ledger[(day.bucket.date().isoformat(), day.scope.removeprefix("provider:"))] += day.amount
    assert billed == {key: value for key, value in ledger.items()}
    assert sum(billed.values()) == sum(CostEntry.objects.values_list("amount", flat=True))
