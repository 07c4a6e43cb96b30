from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from core.models import Team
from tracking.models import Price, Unit


class TeamFactory(DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"team-{n}")


class PriceFactory(DjangoModelFactory):
    class Meta:
        model = Price

    provider = "openai"
    model = factory.Sequence(lambda n: f"model-{n}")
    operation = "chat"
    unit = Unit.INPUT_TOKEN
    variant = ""
    unit_price = Decimal("0.000001")
    currency = "USD"
    valid_from = datetime(2020, 1, 1, tzinfo=UTC)
    valid_until = None
    source = "test"


class BudgetFactory(DjangoModelFactory):
    class Meta:
        model = "budgets.Budget"

    name = factory.Sequence(lambda n: f"budget-{n}")
    scope = "global"
    amount = Decimal("100")
    currency = "USD"
    period = "monthly"


def status_of(budget, at=None, *, forecasts: bool = True):
    """One budget's status through the one status selector (a list of one)."""
    from budgets.selectors import budget_statuses

    return budget_statuses([budget], at=at, forecasts=forecasts)[0]
