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


class CostEntryFactory(factory.Factory):
    """A ledger entry recorded through the real write path (tracking.services.cost_entry_record:
    priced, rolled up, exactly once by its key). Create only; pass any event field."""

    class Meta:
        model = "tracking.CostEntry"

    provider = "openai"
    model = "gpt-4o"
    input_tokens = 1000
    idempotency_key = factory.Sequence(lambda n: f"entry-{n}")

    @classmethod
    def _create(cls, model_class: type, *args: object, **event: object) -> object:
        from tracking.services import cost_entry_record

        return cost_entry_record(**event).entry

    @classmethod
    def _build(cls, model_class: type, *args: object, **event: object) -> object:
        raise TypeError("an entry exists only as recorded: use CostEntryFactory(), not .build()")


class BatchFactory(DjangoModelFactory):
    class Meta:
        model = "tracking.Batch"

    name = factory.Sequence(lambda n: f"pipeline-{n}")
    job = factory.Sequence(lambda n: f"job-{n}")
