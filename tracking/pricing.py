"""Turning usage into money with the price in force at the event's time.

A :class:`PriceBook` holds every version of the prices of a set of (provider, model) pairs,
loaded with one query, and quotes any number of events against them. The record path loads
one per batch (a single event is a batch of one), so a price change is seen by the next event.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Overflow

from django.core.exceptions import ValidationError

from core.money import MONEY_MAX, round_money

from .models import UNIT_QUANTITY_FIELD, Price, PricingStatus, Unit

# When a model has no price for a unit, the unit is billed at another unit's price, as the
# providers bill it: embedding tokens are input tokens; reasoning tokens are output tokens;
# cache reads and writes cost full input price where the model has no cache discount.
UNIT_FALLBACK: dict[str, str] = {
    Unit.EMBEDDING_TOKEN: Unit.INPUT_TOKEN,
    Unit.REASONING_TOKEN: Unit.OUTPUT_TOKEN,
    Unit.CACHED_INPUT_TOKEN: Unit.INPUT_TOKEN,
    Unit.CACHE_WRITE_TOKEN: Unit.INPUT_TOKEN,
}


# Quantity x price and their sum are exact: a quantity has at most 21 digits (2**63 tokens, or 1e12
# seconds with 9 places), a price 24, so a sum of products fits in 60. The default context's 28 digits
# would round a product before round_money rounds the total: twice. Inexact traps: never silently.
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[Inexact, InvalidOperation, Overflow])


@dataclass(frozen=True)
class Quote:
    amount: Decimal
    currency: str
    status: str
    operation: str
    prices_used: dict[str, object] = field(default_factory=dict)


class PriceBook:
    """Every price version of some (provider, model) pairs, indexed for quoting."""

    def __init__(self, prices: Iterable[Price]) -> None:
        self._by_model: dict[tuple[str, str], list[Price]] = defaultdict(list)
        self._bounds: dict[tuple[str, str], list[datetime]] = {}
        self._plans: dict[tuple[str, str, str, str, int], tuple[list[Price], str, dict[str, Price | None]]] = {}
        for price in prices:
            self._by_model[(price.provider, price.model)].append(price)

    @classmethod
    def load(cls, pairs: Iterable[tuple[str, str]]) -> PriceBook:
        """The prices of these (provider, model) pairs, in one query."""
        pairs = set(pairs)
        if not pairs:
            return cls([])
        # One short query whatever the number of pairs (an OR per pair is a statement as long as the
        # batch, deeper than SQLite's expression limit at 1,000 models); the pairs are picked here.
        # Versions of one key never overlap, so quoting does not depend on row order.
        rows = Price.objects.filter(provider__in={p for p, _ in pairs}, model__in={m for _, m in pairs}).order_by()
        return cls(price for price in rows if (price.provider, price.model) in pairs)

    def has_model(self, provider: str, model: str) -> bool:
        return (provider, model) in self._by_model

    def _plan(
        self, provider: str, model: str, operation: str, variant: str, at: datetime
    ) -> tuple[list[Price], str, dict[str, Price | None]]:
        """(prices in force, the operation they resolve to, the price of each unit) at `at`.

        The prices in force change only at a version's valid_from or valid_until, so the plan is
        worked out once per (key, interval between those boundaries) and reused: a batch of
        events of one model prices each event with a dictionary lookup.
        """
        versions = self._by_model.get((provider, model), ())
        bounds = self._bounds.get((provider, model))
        if bounds is None:
            edges = {p.valid_from for p in versions} | {p.valid_until for p in versions if p.valid_until}
            bounds = self._bounds[(provider, model)] = sorted(edges)
        key = (provider, model, operation, variant, bisect_right(bounds, at))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        in_force = [p for p in versions if p.valid_from <= at and (p.valid_until is None or p.valid_until > at)]
        operations = {p.operation for p in in_force}
        if len(operations) == 1:
            resolved_operation = operation or next(iter(operations))
            candidates = in_force
        else:
            resolved_operation = operation
            candidates = [p for p in in_force if p.operation in (operation, "")]

        by_unit: dict[str, list[Price]] = defaultdict(list)
        for price in candidates:
            by_unit[price.unit].append(price)

        def pick(unit: str) -> Price | None:
            options = by_unit.get(unit, [])
            exact = [p for p in options if p.variant == variant]
            if not exact and not variant and len({p.variant for p in options}) == 1:
                exact = options
            if not exact:
                return None
            # An operation-specific price beats a catalog-wide ("") one.
            exact.sort(key=lambda p: p.operation != operation)
            return exact[0]

        picks = {
            unit: pick(unit) or (pick(UNIT_FALLBACK[unit]) if unit in UNIT_FALLBACK else None)
            for unit in UNIT_QUANTITY_FIELD
        }
        if len(self._plans) >= 1024:  # bounded: operation and variant come from callers
            self._plans.clear()
        plan = self._plans[key] = (in_force, resolved_operation, picks)
        return plan

    def quote(
        self,
        *,
        provider: str,
        model: str,
        operation: str,
        variant: str,
        at: datetime,
        quantities: Mapping[str, object],
        service_tier: str = "",
    ) -> Quote:
        """Price the quantities with the versions in force at `at`.

        Operation: when the catalog prices the model under one operation only, that price
        applies whatever operation the caller named (and fills an empty one); when it prices
        several, the caller's operation must match one of them.
        Variant (image size/quality): must match; an empty variant matches the unvarianted
        price, or the only variant there is.
        Any used quantity without a price makes the whole event unpriced (amount 0) rather
        than silently under-counted.
        """
        in_force, resolved_operation, picks = self._plan(provider, model, operation, variant, at)
        total = Decimal(0)
        largest = ("", Decimal(0))
        used: dict[str, object] = {}
        missing: list[str] = []
        currencies: set[str] = set()
        for unit, quantity_field in UNIT_QUANTITY_FIELD.items():
            quantity = quantities.get(quantity_field) or 0
            if not quantity:
                continue
            if isinstance(quantity, float | bool) or not isinstance(quantity, int | Decimal):
                raise ValidationError({quantity_field: f"must be an integer or Decimal, not {type(quantity).__name__}"})
            price = picks[unit]
            if price is None:
                missing.append(unit)
                continue
            currencies.add(price.currency)
            part = _EXACT.multiply(Decimal(quantity), price.unit_price)
            total = _EXACT.add(total, part)
            if part > largest[1]:
                largest = (quantity_field, part)
            used[unit] = {"price_id": price.pk, "unit_price": str(price.unit_price.normalize())}

        if not in_force or missing or len(currencies) > 1:
            reason = {"missing_units": missing} if in_force and missing else {}
            if len(currencies) > 1:
                reason = {"mixed_currencies": sorted(currencies)}
            return Quote(Decimal(0), "USD", PricingStatus.UNPRICED, resolved_operation, reason)
        currency = currencies.pop() if currencies else in_force[0].currency
        if total > MONEY_MAX:
            raise ValidationError(
                {largest[0]: f"costs {total:.2f} {currency} at the price in force, beyond a ledger entry's {MONEY_MAX}"}
            )
        return Quote(round_money(total), currency, PricingStatus.PRICED, resolved_operation, used)
