"""Templates: one budget for each value of a kind ("each end user may spend 5 USD a day").

A template is a budget whose scope ends in `*` (`subject:*`, `tag:customer=*`, `team:ml/job:*`). Each
value that is checked, reserved for or seen spending gets a budget of its own, created on first use
with the template's settings (`template` points at it): so everything a budget does (status, periods
and history, levels, alerts, reserve/settle, budget_check) works per value with nothing written
twice, and a check for one value reads that value's budget only, whatever the number of values. A
value may have an amount of its own (an override); a plain budget on the same scope applies beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from core.money import parse_money
from core.periods import hour_floor, period_bounds
from core.scopes import enclosing_scopes, template_prefix, template_scopes, template_value
from tracking.models import SpendRollupDay
from tracking.selectors import scope_totals

from .models import TEMPLATE_FIELDS, Budget


def budgets_of(*, scopes: Iterable[str], **filters: Any) -> list[Budget]:
    """The budgets that hold spend of `scopes`: the budgets of each scope and of the scopes enclosing
    it (core.scopes.enclosing_scopes), and each scope's budget as a value of every template that covers
    it, created on first use (budget_values_ensure). One read when every value already has its budget
    (a template is found by the same index lookup as the values' budgets); `filters` narrow it
    (is_active, hard_limit). In primary-key order."""
    scopes = set(scopes)
    wanted = set().union(*map(enclosing_scopes, scopes))
    covering = set().union(*map(template_scopes, wanted))
    found = list(Budget.objects.filter(scope__in=wanted | covering, **filters).order_by("pk"))
    templates = [b for b in found if b.is_template and b.template_id is None]
    if templates:
        have = {(b.template_id, b.scope) for b in found if b.template_id is not None}
        missing = [
            (template, scope)
            for template in templates
            for scope in wanted
            if template.scope in template_scopes(scope) and (template.pk, scope) not in have
        ]
        if missing:  # created as the template says, then held to the same filters
            made = budget_values_ensure(pairs=missing)
            found.extend(b for b in made if all(getattr(b, name) == want for name, want in filters.items()))
        found = sorted((b for b in found if not b.is_template), key=lambda b: b.pk)
    return found


def budget_values_ensure(*, pairs: Sequence[tuple[Budget, str]]) -> list[Budget]:
    """The budget of each (template, scope): the one that exists, or created as the template says
    (on first use). Two processes creating the same value's budget at once create one: the unique
    (template, scope) constraint decides and the loser reads the winner's. A value's budget is created
    when it is first checked, reserved for or seen spending by the alert pass, never for every value
    ever seen."""
    if not pairs:
        return []
    wanted = {(t.pk, s) for t, s in pairs}

    def existing() -> dict[tuple[int, str], Budget]:
        values = Budget.objects.filter(template__in={t.pk for t, _ in pairs}, scope__in={s for _, s in pairs})
        return {(b.template_id, b.scope): b for b in values if (b.template_id, b.scope) in wanted}

    found = existing()
    if missing := sorted({(t.pk, s): (t, s) for t, s in pairs if (t.pk, s) not in found}.items()):
        # Created in one order (template, scope): concurrent creators never deadlock.
        Budget.objects.bulk_create(
            [budget_value_new(template=t, scope=s) for _, (t, s) in missing], ignore_conflicts=True
        )
        found = existing()
    return list(found.values())


def budget_value_new(*, template: Budget, scope: str, amount: Decimal | None = None) -> Budget:
    """An unsaved budget for one value of `template`: its settings, named after it and the value.
    `amount`: the value's own amount (an override)."""
    name = f"{template.name}: {template_value(template.scope, scope)}"
    return Budget(
        name=name[:200],
        scope=scope,
        template=template,
        amount=template.amount if amount is None else amount,
        override=amount is not None,
        metadata={},
        **{field: getattr(template, field) for field in TEMPLATE_FIELDS},
    )


def budget_override_set(*, template: Budget, value: str, amount: Any) -> Budget:
    """Give one value of a template an amount of its own ("alice gets 50, everyone else 5"): its
    budget is created if it has none yet, and the template's amount no longer applies to it."""
    amount = parse_money(amount, field="amount")
    if amount < 0:
        raise ValidationError({"amount": "must be zero or more"})
    if not isinstance(value, str) or not value.strip() or value != value.strip() or "/" in value:
        raise ValidationError({"value": "a value is required, without surrounding spaces or '/', e.g. alice"})
    scope = template.scope[:-1] + value
    with transaction.atomic():
        budget = Budget.objects.filter(template=template, scope=scope).first()
        if budget is None:
            budget = budget_value_new(template=template, scope=scope, amount=amount)
        budget.amount, budget.override = amount, True
        budget.full_clean(validate_unique=False)
        budget.save()
    return budget


def budget_override_clear(*, budget: Budget) -> Budget:
    """A value follows its template's amount again."""
    if budget.template_id is None:
        raise ValidationError({"override": "only a value of a template follows a template's amount"})
    Budget.objects.filter(pk=budget.pk).update(override=False, amount=budget.template.amount)
    budget.refresh_from_db()
    return budget


# --- the values an alert pass looks at ----------------------------------------------------------

VALUES_CHUNK = 2000  # values created and read per statement (an IN list of this many scopes)


def template_has_values(scope: str) -> bool:
    """Whether any spend was ever recorded for a value of the template `scope` (a typo in a tag key,
    `tag:custmer=*`, has none): a creator is asked to confirm such a template."""
    prefix = template_prefix(scope)
    rows = SpendRollupDay.objects.filter(scope__startswith=prefix).values_list("scope", flat=True)
    return any(scope in template_scopes(found) for found in rows[:50])


def template_values_spent(*, template: Budget, start: datetime, end: datetime) -> dict[str, Decimal]:
    """{scope: spent} of the values of `template` with spend in [start, end), from the rollups (hourly
    and daily: tracking.selectors.scope_totals), in the template's currency."""
    totals = scope_totals(start=start, end=end, prefixes=[template_prefix(template.scope)], currency=template.currency)
    return {scope: t["amount"] for scope, t in totals.items() if template.scope in template_scopes(scope)}


def template_values_due(*, now: datetime, also: Iterable[int] = ()) -> list[Budget]:
    """The values an alert pass evaluates: of each active template, those with spend since the pass
    that last evaluated it (their rollups of the hours since: a value that did not spend is where it
    was), every value with spend this period when the template is new or was changed since (its
    amount or thresholds may move every value), and the values among `also` (those with firing
    alerts, which may resolve). Each one's budget is created if it has none yet. Not every value
    ever seen: a pass after 1,000 of 100,000 values spent reads about 1,000."""
    found: dict[int, Budget] = {}
    for template in Budget.objects.templates().filter(is_active=True).order_by("pk"):
        changed = template.evaluated_until is None or template.updated_at >= template.evaluated_until
        start, _ = period_bounds(template.period, now)
        since = start if changed else max(start, hour_floor(template.evaluated_until))
        scopes = sorted(template_values_spent(template=template, start=since, end=now + timedelta(hours=1)))
        for chunk in (scopes[i : i + VALUES_CHUNK] for i in range(0, len(scopes), VALUES_CHUNK)):
            found.update((b.pk, b) for b in budget_values_ensure(pairs=[(template, scope) for scope in chunk]))
    if missing := set(also) - set(found):
        found.update((b.pk, b) for b in Budget.objects.filter(pk__in=missing, template__isnull=False))
    return [found[pk] for pk in sorted(found) if found[pk].is_active]


def templates_evaluated(*, now: datetime) -> int:
    """Mark every active template evaluated up to `now` (the moment its pass read the rollups)."""
    return Budget.objects.templates().filter(is_active=True).update(evaluated_until=now)
