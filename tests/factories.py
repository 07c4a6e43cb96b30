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


class ChannelFactory(DjangoModelFactory):
    class Meta:
        model = "alerts.Channel"

    name = factory.Sequence(lambda n: f"channel-{n}")
    kind = "email"
    target = factory.LazyAttribute(lambda c: f"{c.name}@example.com")


class AlertRuleFactory(DjangoModelFactory):
    class Meta:
        model = "alerts.AlertRule"

    name = factory.Sequence(lambda n: f"rule-{n}")
    metric = "spend"
    window = "day"
    threshold = Decimal("1")


class AlertFactory(DjangoModelFactory):
    """An alert as evaluation would have opened it (tests of screens, reports and metrics)."""

    class Meta:
        model = "alerts.Alert"

    key = factory.Sequence(lambda n: f"test-alert-{n}")
    source = "rule"
    scope = "global"
    level = "warning"
    title = factory.LazyAttribute(lambda a: f"{a.key} fired")
    message = factory.LazyAttribute(lambda a: f"{a.key}: spend above the threshold")
    first_fired_at = factory.LazyFunction(lambda: datetime.now(UTC))
    last_fired_at = factory.LazyAttribute(lambda a: a.first_fired_at)


class NotificationFactory(DjangoModelFactory):
    class Meta:
        model = "alerts.Notification"

    channel = factory.SubFactory(ChannelFactory)
    kind = "firing"
    dedup_key = factory.Sequence(lambda n: f"test-notification-{n}")
    subject = factory.LazyAttribute(lambda n: f"{n.dedup_key} subject")
    text = "text"


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
    job = factory.LazyAttribute(lambda b: f"{b.name}-job")


def status_of(budget, at=None, *, forecasts: bool = True):
    """One budget's status through the one status selector (a list of one)."""
    from budgets.selectors import budget_statuses

    return budget_statuses([budget], at=at, forecasts=forecasts)[0]
