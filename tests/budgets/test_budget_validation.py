from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from budgets.models import Budget
from tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": Decimal("-1")}, "amount"),
        ({"scope": "region:eu"}, "scope"),
        ({"scope": "provider:"}, "scope"),
        ({"scope": "global:x"}, "scope"),
        ({"scope": "tag:team"}, "scope"),
        ({"scope": ""}, "scope"),
        ({"thresholds": [50, 50, 100]}, "thresholds"),
        ({"thresholds": [80, 50]}, "thresholds"),
        ({"thresholds": [0, 50]}, "thresholds"),
        ({"thresholds": [50, 1001]}, "thresholds"),
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": ["lots"]}, "thresholds"),
        ({"rollover_cap": Decimal("-0.01")}, "rollover_cap"),
        ({"currency": "XXX"}, "currency"),
    ],
)
def test_invalid_input_is_refused_naming_the_field_and_nothing_is_saved(changes, field):
    budget = BudgetFactory.build(**changes)
    with pytest.raises(ValidationError) as excinfo:
        budget.full_clean()
    assert set(excinfo.value.message_dict) == {field}
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    "scope", ["global", "provider:openai", "model:gpt-4o", "tag:team=ml", "team:growth", "job:b-1"]
)
def test_every_scope_kind_of_the_rollups_is_accepted(scope):
    BudgetFactory.build(scope=scope, thresholds=[25, 50.5, 1000]).full_clean()


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"amount": Decimal("-1")}, "budget_amount_non_negative"),
        ({"rollover_cap": Decimal("-1")}, "budget_rollover_cap_non_negative"),
        ({"scope": "region:eu"}, "budget_scope_kind_known"),
        ({"period": "hourly"}, "budget_period_known"),
    ],
)
def test_the_database_refuses_what_validation_would_even_when_it_is_skipped(changes, constraint):
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        BudgetFactory(**changes)
    assert not Budget.objects.exists()
