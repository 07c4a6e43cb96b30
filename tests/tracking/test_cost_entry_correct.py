"""The ledger is append-only: corrections are new entries that reference the original."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from tracking.models import CostEntry, SpendRollup
from tracking.selectors import ledger_differences
from tracking.services import cost_entry_correct, cost_entry_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def entry(gpt4o_prices):
    return cost_entry_record(
        provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500, service="api"
    ).entry


def test_a_correction_appends_the_difference_and_references_the_original(entry):
    correction = cost_entry_correct(entry=entry, amount="0.005", note="invoice says 0.005").entry

    assert correction.corrects == entry
    assert correction.amount == Decimal("-0.0025")
    assert correction.occurred_at == entry.occurred_at
    assert CostEntry.objects.get(pk=entry.pk).amount == Decimal("0.0075")  # the original is untouched
    global_rollup = SpendRollup.objects.get(scope="global")
    assert global_rollup.amount == Decimal("0.005")
    assert global_rollup.events == 1  # a correction is not another call
    assert SpendRollup.objects.get(scope="service:api").amount == Decimal("0.005")


def test_a_second_correction_is_relative_to_the_corrected_total(entry):
    cost_entry_correct(entry=entry, amount="0.005", note="first")
    second = cost_entry_correct(entry=entry, amount="0.02", note="second").entry

    assert second.amount == Decimal("0.015")
    assert SpendRollup.objects.get(scope="global").amount == Decimal("0.02")
    assert ledger_differences()[0] == []


def test_correcting_a_correction_corrects_the_original(entry):
    first = cost_entry_correct(entry=entry, amount="0.005", note="first").entry
    second = cost_entry_correct(entry=first, amount="0.001", note="second").entry

    assert second.corrects == entry
    assert SpendRollup.objects.get(scope="global").amount == Decimal("0.001")


@pytest.mark.parametrize(
    ("amount", "note", "field"),
    [
        ("-1", "why", "amount"),
        ("0.0000000001", "why", "amount"),
        ("abc", "why", "amount"),
        ("0.0075", "no change", "amount"),
        ("1", "  ", "note"),
    ],
)
def test_a_bad_correction_is_refused_and_writes_nothing(entry, amount, note, field):
    with pytest.raises(ValidationError) as excinfo:
        cost_entry_correct(entry=entry, amount=amount, note=note)

    assert field in excinfo.value.message_dict
    assert CostEntry.objects.count() == 1


def test_the_database_refuses_to_update_a_ledger_row(entry):
    entry.amount = Decimal("0")

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        entry.save()

    assert CostEntry.objects.get(pk=entry.pk).amount == Decimal("0.0075")
