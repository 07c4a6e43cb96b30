"""Turning usage into money with the price rules in force at the event's time.

A :class:`PriceBook` holds every version of the prices of a set of (provider, model) pairs,
loaded with one query, and quotes any number of events against them. The record path loads
one per batch (a single event is a batch of one), so a price change is seen by the next event.

The rules, as LiteLLM's cost functions apply the same price file (differences are listed in the
README, "Where we differ from LiteLLM"):

* Service tier. An event's tier ("" standard, batch, flex, priority, balanced, ultrafast; "fast"
  is priority) selects that tier's prices. A model with no price at all in the tier, or an
  unknown tier, leaves the event unpriced with the rule named. Where the model has some prices
  in a (non-batch) tier but not for a unit, the unit's standard price applies, context tiers
  included: the tier's own price at the highest applicable context tier, else the standard one.
  Batch prices stand alone: a unit without a batch price takes its fallback unit's batch price.
* Context-size tiers. The prompt's total tokens (every PROMPT_TOKEN_FIELDS quantity) choose, per
  unit, the price with the highest ``above_tokens`` below it (xAI: at or below it); a unit with no
  tiered price keeps its base price.
* Off-peak. A standard-tier event inside an off-peak row's windows uses that row for its unit.
* Fallbacks (UNIT_FALLBACK). A text unit the model has no price for is billed at another unit's
  price: cache reads and writes and embedding tokens as input tokens, 1-hour cache writes as
  5-minute ones, reasoning as output tokens. Every other unit (audio, image and video tokens,
  characters, images, pixels, pages, searches, seconds, requests, GPU-hours) has no fallback: a
  quantity without a price makes the event unpriced, never silently 0 or the text rate (the
  catalog writes the text-price rows of the modalities a model takes).
* OCR credits and pages. An event reporting both is billed by credits when the model prices credits,
  else by pages, as LiteLLM's OCR cost function.
* Variants. A unit priced without variants ignores the event's variant; one priced by variant needs
  the event's (or the only one when the event names none). Web searches are priced by search
  context size: the event's variant when it is one of the sizes priced, else "medium" as LiteLLM.
* Uplifts. A price of unit "uplift" is a factor, not a price per unit: where the event meets its
  condition (the price's variant, UPLIFT_CONDITIONS: the event's region or speed) the token parts
  (UPLIFTED_UNITS) cost that much more, as LiteLLM's token path multiplies its prompt and completion
  cost: OpenAI data residency, Vertex AI regional endpoints, Anthropic US-only inference and fast mode.
  The parts keep their list amounts; prices_used["uplift"] holds the factors and the surcharge.
* Free units per call. A price of unit "free_per_call" says how many of another unit (its variant)
  each call gets free (MiniMax: the first 5 prompt images of a video call); the rest are billed, as
  LiteLLM's billable_input_image_count. prices_used["free_per_call"] says how many were free.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, tzinfo
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Overflow
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError

from core.money import MONEY_MAX, round_money

from .models import PROMPT_TOKEN_FIELDS, UNIT_QUANTITY_FIELD, Price, PricingStatus, ServiceTier, Unit

# When a model has no price for a unit, the unit is billed at another unit's price, as LiteLLM and the
# providers bill it. Followed transitively: a 1-hour cache write without its own price costs a 5-minute
# write, and that, without a price, an input token. Audio, image and video tokens have no fallback: the
# catalog writes their text-price rows for the models that take them (catalog.MODALITY_UNITS), so the
# same quantity on a text-only model is unpriced.
UNIT_FALLBACK: dict[str, str] = {
    Unit.EMBEDDING_TOKEN: Unit.INPUT_TOKEN,
    Unit.CACHED_INPUT_TOKEN: Unit.INPUT_TOKEN,
    Unit.CACHE_WRITE_TOKEN: Unit.INPUT_TOKEN,
    Unit.CACHE_WRITE_1H_TOKEN: Unit.CACHE_WRITE_TOKEN,
    Unit.REASONING_TOKEN: Unit.OUTPUT_TOKEN,
}

# Service tier names as providers and LiteLLM spell them -> ours. Anything else is unknown (unpriced).
SERVICE_TIER_NAMES: dict[str, str] = {
    **{tier.value: tier.value for tier in ServiceTier if tier != ServiceTier.OFF_PEAK},
    "default": "",
    "standard": "",
    "auto": "",
    "fast": ServiceTier.PRIORITY,
}
# What providers call their standard tier (OpenAI answers "default", Anthropic "standard"): stored as "".
STANDARD_TIER_NAMES = frozenset(name for name, tier in SERVICE_TIER_NAMES.items() if tier == ServiceTier.STANDARD)

# Context-size tiers include their threshold for these providers (LiteLLM _INCLUSIVE_THRESHOLD_PROVIDERS).
INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})

WEB_SEARCH_DEFAULT_VARIANT = "medium"
# Search providers priced by the requested result count (Exa, Firecrawl): request prices whose variant
# names a range, "max_results:0-25"; an event names its count, "max_results:40" (none: 10, as LiteLLM).
MAX_RESULTS = "max_results:"
MAX_RESULTS_DEFAULT = 10

# An uplift price's condition (its variant, "<kind>:<value>") -> whether an event's (region, speed)
# meets it, as LiteLLM reads each: OpenAI's data_residency (eu/us), Vertex AI's vertex_location (any
# location but "global"), Anthropic's usage.inference_geo ("global" and "not_available" are not a
# geo) and usage.speed.
UPLIFT_CONDITIONS: dict[str, Callable[[str, str, str], bool]] = {
    "data_residency": lambda value, region, speed: region == value,
    "vertex_location": lambda value, region, speed: value == "regional" and region not in ("", "global"),
    "inference_geo": lambda value, region, speed: region == value and region not in ("global", "not_available"),
    "speed": lambda value, region, speed: speed == value,
}
# The parts an uplift multiplies: what LiteLLM's generic token path prices (every token, prompt
# characters, prompt images, seconds of input audio and video); not searches, generated images, pages.
UPLIFTED_UNITS = frozenset(
    {
        *(unit for unit in UNIT_QUANTITY_FIELD if unit.endswith("_token")),
        Unit.INPUT_CHARACTER,
        Unit.INPUT_IMAGE,
        Unit.INPUT_AUDIO_SECOND,
        Unit.INPUT_VIDEO_SECOND,
    }
)

# Quantity x price and their sum are exact: a quantity has at most 21 digits (2**63 tokens, or 1e12
# seconds with 9 places), a price 24, so a sum of products fits in 60. The default context's 28 digits
# would round a product before round_money rounds the total: twice. Inexact traps: never silently.
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[Inexact, InvalidOperation, Overflow])

_UNITS = tuple((str(unit), quantity_field) for unit, quantity_field in UNIT_QUANTITY_FIELD.items())

# (above_tokens, price) candidates of one unit, highest threshold first, the fallback unit's after.
_Candidates = tuple[tuple[int, Price], ...]


@dataclass(frozen=True)
class Quote:
    amount: Decimal
    currency: str
    status: str
    operation: str
    prices_used: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """How one (model, operation, variant, service tier) is priced between two price-version boundaries."""

    operation: str
    units: dict[str, _Candidates] | None  # None: unpriced whatever the quantities (see `reason`)
    reason: str = ""
    tiered: bool = False  # some price has above_tokens > 0: the prompt's size matters
    off_peak_units: dict[str, _Candidates] | None = None  # standard-tier events inside off_peak_windows
    off_peak_windows: tuple[Mapping[str, object], ...] = ()
    currency: str = "USD"
    uplifts: tuple[Price, ...] = ()  # unit "uplift": factors applied where the event meets their condition
    free_per_call: tuple[Price, ...] = ()  # unit "free_per_call": the first N of the variant's unit are free


class PriceBook:
    """Every price version of some (provider, model) pairs, indexed for quoting.

    Plans are cached per instance, which lives for one batch of events: a price change is seen by
    the next batch, and nothing outlives the request.
    """

    def __init__(self, prices: Iterable[Price]) -> None:
        self._by_model: dict[tuple[str, str], list[Price]] = defaultdict(list)
        self._bounds: dict[tuple[str, str], list[datetime]] = {}
        self._plans: dict[tuple[str, str, str, str, str, int], _Plan] = {}
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

    def _plan(self, provider: str, model: str, operation: str, variant: str, tier: str, at: datetime) -> _Plan:
        """The plan in force at `at`, worked out once per (key, interval between version boundaries).

        The prices in force change only at a version's valid_from or valid_until, so a batch of
        events of one model prices each event with a dictionary lookup and a few comparisons.
        """
        versions = self._by_model.get((provider, model), ())
        bounds = self._bounds.get((provider, model))
        if bounds is None:
            edges = {p.valid_from for p in versions} | {p.valid_until for p in versions if p.valid_until}
            bounds = self._bounds[(provider, model)] = sorted(edges)
        key = (provider, model, operation, variant, tier, bisect_right(bounds, at))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 4096:  # bounded: operation, variant and tier come from callers
                self._plans.clear()
            in_force = [p for p in versions if p.valid_from <= at and (p.valid_until is None or p.valid_until > at)]
            plan = self._plans[key] = _make_plan(provider, model, operation, variant, tier, in_force)
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
        region: str = "",
        speed: str = "",
    ) -> Quote:
        """Price the quantities with the rules in force at `at` (see the module's docstring).

        Operation: when the catalog prices the model under one operation only, that price
        applies whatever operation the caller named (and fills an empty one); when it prices
        several, the caller's operation must match one of them.
        Any used quantity without a price makes the whole event unpriced (amount 0) rather
        than silently under-counted; prices_used then names the missing units and the reason.
        """
        tier = SERVICE_TIER_NAMES.get(service_tier)
        plan = self._plan(provider, model, operation, variant, "?" if tier is None else tier, at)
        if tier is None:
            plan = _Plan(plan.operation, None, f"unknown service tier {service_tier!r}")
        units = plan.units
        if units is None:
            _check_quantities(quantities)
            return Quote(Decimal(0), "USD", PricingStatus.UNPRICED, plan.operation, {"reason": plan.reason})
        if plan.off_peak_units is not None and _is_off_peak(plan.off_peak_windows, at):
            units = plan.off_peak_units
        free: dict[str, object] = {}
        if plan.free_per_call:
            quantities, free = _free_per_call(plan.free_per_call, quantities)
        prompt = 0
        if plan.tiered:
            prompt = sum(q for name in PROMPT_TOKEN_FIELDS if isinstance(q := quantities.get(name), int))
        inclusive = provider in INCLUSIVE_THRESHOLD_PROVIDERS
        # Credits and pages count the same OCR work: as LiteLLM, credits when the model prices them, else pages.
        alternative = ""
        if quantities.get("credits") and quantities.get("pages"):
            alternative = Unit.PAGE if units.get(Unit.CREDIT) else Unit.CREDIT
        total = Decimal(0)
        largest = ("", Decimal(0))
        used: dict[str, object] = {}
        missing: list[str] = []
        currencies: set[str] = set()
        for unit, quantity_field in _UNITS:
            quantity = quantities.get(quantity_field)
            if not quantity:
                continue
            if isinstance(quantity, float | bool) or not isinstance(quantity, int | Decimal):
                raise ValidationError({quantity_field: f"must be an integer or Decimal, not {type(quantity).__name__}"})
            if unit == alternative:
                continue
            price = None
            for above, candidate in units.get(unit, ()):
                if prompt > above or above == 0 or (inclusive and prompt == above):
                    price = candidate
                    break
            if price is None:
                missing.append(unit)
                continue
            currencies.add(price.currency)
            part = _EXACT.multiply(Decimal(quantity), price.unit_price)
            total = _EXACT.add(total, part)
            if part > largest[1]:
                largest = (quantity_field, part)
            used[unit] = {
                "price_id": price.pk,
                "unit_price": _plain(price.unit_price),
                "quantity": _plain(Decimal(quantity)),
                "amount": _plain(part),
                "service_tier": price.service_tier,
                "above_tokens": price.above_tokens,
                "valid_from": price.valid_from.isoformat(),
            }

        if missing:
            named = ", ".join(Unit(unit).label for unit in missing)
            tier_words = f"{ServiceTier(tier).label} " if tier else ""
            reason = f"no {tier_words}price for {provider}/{model}: {named}"
            return Quote(
                Decimal(0),
                "USD",
                PricingStatus.UNPRICED,
                plan.operation,
                {"missing_units": missing, "reason": reason},
            )
        if free:
            used["free_per_call"] = free
        if plan.uplifts and (region or speed):
            uplift = _uplift(plan.uplifts, region.strip().lower(), speed.strip().lower(), used)
            if uplift is not None:
                currencies.update(price.currency for price in uplift[1])
                total = _EXACT.add(total, uplift[0])
                used["uplift"] = uplift[2]
        if len(currencies) > 1:
            reason = f"prices in more than one currency for {provider}/{model}: {', '.join(sorted(currencies))}"
            return Quote(
                Decimal(0),
                "USD",
                PricingStatus.UNPRICED,
                plan.operation,
                {"mixed_currencies": sorted(currencies), "reason": reason},
            )
        currency = currencies.pop() if currencies else plan.currency
        if total > MONEY_MAX:
            raise ValidationError(
                {largest[0]: f"costs {total:.2f} {currency} at the price in force, beyond a ledger entry's {MONEY_MAX}"}
            )
        return Quote(round_money(total), currency, PricingStatus.PRICED, plan.operation, used)


def _uplift(
    uplifts: tuple[Price, ...], region: str, speed: str, used: Mapping[str, object]
) -> tuple[Decimal, list[Price], dict[str, object]] | None:
    """(surcharge, the uplift prices applied, their provenance) for the uplifts whose condition the
    event meets, or None. The factors multiply one another (fast mode in the US: 2 x 1.1)."""
    applied = []
    for price in uplifts:
        kind, _, value = price.variant.rpartition("/")[2].partition(":")
        meets = UPLIFT_CONDITIONS.get(kind)
        if meets is not None and meets(value, region, speed):
            applied.append(price)
    if not applied:
        return None
    base = Decimal(0)
    for unit, part in used.items():
        if unit in UPLIFTED_UNITS and isinstance(part, Mapping):
            base = _EXACT.add(base, Decimal(str(part["amount"])))
    factor = Decimal(1)
    for price in applied:
        factor = _EXACT.multiply(factor, price.unit_price)
    surcharge = _EXACT.multiply(base, _EXACT.subtract(factor, Decimal(1)))
    provenance: dict[str, object] = {
        "factor": _plain(factor),
        "applies_to": _plain(base),
        "amount": _plain(surcharge),
        "rules": [
            {"price_id": price.pk, "factor": _plain(price.unit_price), "condition": price.variant.rpartition("/")[2]}
            for price in applied
        ],
    }
    return surcharge, applied, provenance


def _free_per_call(
    allowances: tuple[Price, ...], quantities: Mapping[str, object]
) -> tuple[Mapping[str, object], dict[str, object]]:
    """The quantities after each call's free units, and what was free: {unit: {price_id, free, reported}}."""
    reduced = dict(quantities)
    free: dict[str, object] = {}
    for price in allowances:
        unit = price.variant.rpartition("/")[2]
        quantity_field = UNIT_QUANTITY_FIELD.get(unit)
        reported = quantities.get(quantity_field) if quantity_field else None
        if not reported or not isinstance(reported, int) or isinstance(reported, bool):
            continue  # nothing to free (a bad type is refused by the quote's own check)
        allowance = int(price.unit_price)
        reduced[quantity_field] = max(0, reported - allowance)
        free[unit] = {"price_id": price.pk, "free": min(reported, allowance), "reported": reported}
    return reduced, free


def _max_results_range(variant: str, variants: Iterable[str]) -> str:
    """The range variant holding the event's max_results, as LiteLLM's search_provider_cost_per_query:
    start <= count <= end, the first such range; outside every range, the last one (in price order:
    the variants here are unordered, so the range that ends highest). An event variant that names no
    count is the default count, 10."""
    text = variant.removeprefix(MAX_RESULTS) if variant.startswith(MAX_RESULTS) else ""
    try:
        count = Decimal(text) if text else Decimal(MAX_RESULTS_DEFAULT)
    except InvalidOperation:
        return variant  # not a count: no range matches, the request is unpriced with the unit named
    ranges = []
    for name in variants:
        start, _, end = name.removeprefix(MAX_RESULTS).partition("-")
        try:
            ranges.append((Decimal(start), Decimal(end), name))
        except InvalidOperation:
            continue
    ranges.sort()
    for start, end, name in ranges:
        if start <= count <= end:
            return name
    return max(ranges, key=lambda item: item[1])[2] if ranges else variant


def _check_quantities(quantities: Mapping[str, object]) -> None:
    for quantity_field in UNIT_QUANTITY_FIELD.values():
        quantity = quantities.get(quantity_field)
        if quantity and (isinstance(quantity, float | bool) or not isinstance(quantity, int | Decimal)):
            raise ValidationError({quantity_field: f"must be an integer or Decimal, not {type(quantity).__name__}"})


def _plain(value: Decimal) -> str:
    """A Decimal as plain digits, exactly: "0.0000045", never "4.5E-6"."""
    return format(value.normalize(), "f") if value else "0"


def _make_plan(provider: str, model: str, operation: str, variant: str, tier: str, in_force: list[Price]) -> _Plan:
    name = f"{provider}/{model}"
    if not in_force:
        return _Plan(operation, None, f"no price for {name}")
    operations = {p.operation for p in in_force}
    if len(operations) == 1:
        resolved_operation = operation or next(iter(operations))
        candidates = in_force
    else:
        resolved_operation = operation
        candidates = [p for p in in_force if p.operation in (operation, "")]
    if tier == "?":  # an unknown tier: quote() names it
        return _Plan(resolved_operation, None, "")
    if tier and not any(p.service_tier == tier for p in candidates):
        return _Plan(resolved_operation, None, f"no {ServiceTier(tier).label} price for {name}")

    uplifts = tuple(p for p in candidates if p.unit == Unit.UPLIFT)
    free_per_call = tuple(p for p in candidates if p.unit == Unit.FREE_PER_CALL)
    by_unit: dict[str, list[Price]] = defaultdict(list)
    for price in candidates:
        if price.unit not in (Unit.UPLIFT, Unit.FREE_PER_CALL):
            by_unit[price.unit].append(price)
    # unit -> service tier -> above_tokens -> the price, after picking the variant and the operation.
    rows: dict[str, dict[str, dict[int, Price]]] = {}
    for unit, options in by_unit.items():
        wanted = variant
        variants = {p.variant for p in options}
        if unit == Unit.WEB_SEARCH and variant not in variants:
            wanted = WEB_SEARCH_DEFAULT_VARIANT
        elif unit == Unit.REQUEST and any(v.startswith(MAX_RESULTS) for v in variants):
            wanted = _max_results_range(variant, variants)
        exact = [p for p in options if p.variant == wanted]
        if not exact and (variants == {""} or (not variant and len(variants) == 1)):
            exact = options
        # An operation-specific price beats a catalog-wide ("") one.
        exact.sort(key=lambda p: p.operation == operation)
        by_tier: dict[str, dict[int, Price]] = defaultdict(dict)
        for price in exact:
            by_tier[price.service_tier][price.above_tokens] = price
        rows[unit] = by_tier

    def own(unit: str, service_tier: str) -> dict[int, Price]:
        by_tier = rows.get(unit, {})
        if service_tier in ("", ServiceTier.BATCH, ServiceTier.OFF_PEAK):
            return by_tier.get(service_tier, {})
        if (
            unit == Unit.REASONING_TOKEN
            and not by_tier.get(service_tier)
            and rows.get(Unit.OUTPUT_TOKEN, {}).get(service_tier)
        ):
            return {}  # LiteLLM: the tier's output price beats the standard reasoning price
        # A service tier's price where it has one, else the standard price at that threshold.
        return {**by_tier.get("", {}), **by_tier.get(service_tier, {})}

    def chain(unit: str, service_tier: str) -> _Candidates:
        found: list[tuple[int, Price]] = []
        while unit:
            prices = own(unit, service_tier)
            if service_tier == ServiceTier.OFF_PEAK:
                prices = {0: prices[0]} if 0 in prices else own(unit, "")
            found.extend(sorted(prices.items(), key=lambda item: -item[0]))
            if 0 in prices:
                break  # a base price always applies: the fallback is never reached
            unit = UNIT_FALLBACK.get(unit, "")
        return tuple(found)

    units = {unit: chain(unit, tier) for unit in UNIT_QUANTITY_FIELD}
    off_peak_units = None
    windows: tuple[Mapping[str, object], ...] = ()
    off_peak_rows = [p for by_tier in rows.values() for p in by_tier.get(ServiceTier.OFF_PEAK, {}).values()]
    if not tier and off_peak_rows:
        off_peak_units = {unit: chain(unit, ServiceTier.OFF_PEAK) for unit in UNIT_QUANTITY_FIELD}
        windows = tuple(off_peak_rows[0].off_peak_windows or ())
    return _Plan(
        operation=resolved_operation,
        units=units,
        tiered=any(above for candidates in units.values() for above, _ in candidates),
        off_peak_units=off_peak_units,
        off_peak_windows=windows,
        currency=in_force[0].currency,
        uplifts=uplifts,
        free_per_call=free_per_call,
    )


# --- off-peak windows, exactly as LiteLLM's _is_off_peak reads a DeepSeek off_peak_pricing block --------

_WEEKDAY_NUMBERS = {
    "mon": 1, "monday": 1, "tue": 2, "tues": 2, "tuesday": 2, "wed": 3, "wednesday": 3,
    "thu": 4, "thur": 4, "thurs": 4, "thursday": 4, "fri": 5, "friday": 5,
    "sat": 6, "saturday": 6, "sun": 7, "sunday": 7,
}  # fmt: skip


def _window_strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(entry for entry in value if isinstance(entry, str))
    return ()


def _within(windows: tuple[str, ...], now: time) -> bool:
    """ "HH:MM-HH:MM" windows in UTC: start inclusive, end exclusive, wrapping past midnight;
    start == end is the whole day; a malformed window is ignored."""
    for window in windows:
        try:
            start_text, end_text = window.split("-")
            start = datetime.strptime(start_text.strip(), "%H:%M").time()
            end = datetime.strptime(end_text.strip(), "%H:%M").time()
        except ValueError:
            continue
        if (start <= now < end) if start < end else (now >= start or now < end):
            return True
    return False


def _weekday(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 7 else None
    if isinstance(value, str):
        return _WEEKDAY_NUMBERS.get(value.strip().lower())
    return None


def _calendar(name: object) -> tzinfo:
    if isinstance(name, str) and name.strip():
        try:
            return ZoneInfo(name.strip())
        except (ValueError, ZoneInfoNotFoundError):
            return UTC
    return UTC


def _is_off_peak(windows: Iterable[Mapping[str, object]], at: datetime) -> bool:
    """Whether `at` falls inside one of the windows: {"hours_utc": "HH:MM-HH:MM" or a list of them,
    "weekdays": [1..7 or names] (absent: every day), "weekday_timezone": the calendar the weekdays
    are read on (default UTC)}. A naive `at` is taken as UTC."""
    reference = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    now = reference.time()
    for window in windows:
        if not isinstance(window, Mapping):
            continue
        hours = _window_strings(window.get("hours_utc"))
        if not hours:
            continue
        weekdays = window.get("weekdays")
        if weekdays is not None:
            if isinstance(weekdays, str) or not isinstance(weekdays, Sequence):
                continue
            allowed = {day for day in map(_weekday, weekdays) if day is not None}
            if reference.astimezone(_calendar(window.get("weekday_timezone"))).isoweekday() not in allowed:
                continue
        if _within(hours, now):
            return True
    return False
