"""Property tests of the price rules (issue 17): random price-file entries against LiteLLM's cost function.

Each test draws an entry in LiteLLM's format (prices from 1e-8 to 1e-4 per token, written into the JSON
as the floats the shared file holds) and a usage, reads the entry with ``catalog_parse`` into unsaved
Price rows, quotes the usage with ``PriceBook.quote``, registers the same entry in LiteLLM 1.108.11
(requirements/litellm-ref.txt) under a key of its own, and asserts the two agree: LiteLLM computes in
float, so to 1e-9 USD plus 1e-9 of the amount. One test per rule kind: context-size tiers, service tiers,
1-hour cache writes, audio and image tokens, ``tiered_pricing`` ranges, off-peak windows. The model-free
properties follow: a quote is its parts rounded once, more usage never costs less within one tier, and
the context tier chosen is the highest one below the prompt.

Derandomized with bounded example counts (test_properties.py's convention), so CI sees the same cases.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: else it fetches the map

import itertools
import json
import logging
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal

import litellm
from hypothesis import given, settings
from hypothesis import strategies as st
from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token

from core.money import round_money
from tests.tracking.test_pricing_litellm import EPOCH, _exact, _usage
from tracking.catalog import catalog_parse
from tracking.models import PROMPT_TOKEN_FIELDS, Price, PricingStatus
from tracking.pricing import PriceBook

COMPARE = settings(max_examples=150, deadline=None, derandomize=True)
FAST = settings(max_examples=200, deadline=None, derandomize=True)
EXACT = Context(prec=200)
AT = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
THRESHOLDS = (128, 200, 256, 272)  # the k-token context tiers of the shared file
TOKEN_PREFIXES = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)
_keys = itertools.count()


def _fields_litellm_reads():
    """The price fields of these tests that LiteLLM's get_model_info keeps for a registered model: it
    drops a name outside its ModelInfo (input_cost_per_token_above_128k_tokens_flex, a tier at a context
    size the shared file has no such price for), which it then bills as absent. Only these are drawn."""
    names = [
        f"{name}{tier}"
        for prefix in (*TOKEN_PREFIXES, "cache_creation_input_token_cost_above_1hr")
        for name in (prefix, *(f"{prefix}_above_{k}k_tokens" for k in THRESHOLDS))
        for tier in ("", "_flex", "_priority")
    ]
    probe = {name: 1e-8 for name in names}
    with _quiet():
        litellm.register_model({"pricing-property-probe": {**probe, "litellm_provider": "openai", "mode": "chat"}})
        info = litellm.get_model_info("pricing-property-probe", custom_llm_provider="openai")
    return frozenset(name for name in names if info.get(name) is not None)


# --- strategies ---------------------------------------------------------------------------------

# A per-token price as the file writes it: 1 to 4 significant digits, 1e-8 to 1e-4.
prices = st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(exponent, context=EXACT),
    st.integers(1, 9999),
    st.integers(-11, -8),
).filter(lambda value: Decimal("1e-8") <= value <= Decimal("1e-4"))
maybe_price = st.none() | prices
token_counts = st.integers(0, 50_000)


def _file_entry(entry):
    """The entry as LiteLLM's file has it: every Decimal a float, the JSON text our parser reads."""
    as_floats = json.loads(json.dumps(entry, default=float))
    return as_floats, json.dumps(as_floats)


def _book(key, text):
    parsed = catalog_parse(f'{{"{key}": {text}}}', source="property.json")
    rows = [
        Price(
            provider=row.provider,
            model=row.model,
            operation=row.operation,
            unit=row.unit,
            variant=row.variant,
            service_tier=row.service_tier,
            above_tokens=row.above_tokens,
            off_peak_windows=list(row.off_peak_windows),
            unit_price=row.unit_price,
            currency="USD",
            valid_from=EPOCH,
        )
        for row in parsed.prices
    ]
    return rows


def _quote(rows, quantities, service_tier="", at=AT):
    first = rows[0]
    return PriceBook(rows).quote(
        provider=first.provider,
        model=first.model,
        operation=first.operation,
        variant=first.variant,
        at=at,
        quantities=quantities,
        service_tier=service_tier,
    )


def _register(entry, provider):
    """A fresh key in LiteLLM's map for this example (never reused: its model-info lookups are cached)."""
    key = f"pricing-property-{provider}-{next(_keys)}"
    as_floats, text = _file_entry({**entry, "litellm_provider": provider, "mode": "chat"})
    with _quiet():  # it warns that a key outside its built-in map may lack cache prices: known, and tested
        litellm.register_model({key: as_floats})
    return key, text


@contextmanager
def _quiet():
    logger = logging.getLogger("LiteLLM")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


LITELLM_READS = _fields_litellm_reads()


def _litellm(key, provider, quantities, service_tier=None, at=None):
    usage = _usage(quantities)
    if at is not None:  # the moment is an argument of the generic cost function only
        costs = generic_cost_per_token(model=key, usage=usage, custom_llm_provider=provider, current_time=at)
    else:
        costs = litellm.cost_per_token(
            model=key, custom_llm_provider=provider, usage_object=usage, service_tier=service_tier
        )
    return Decimal(repr(costs[0])) + Decimal(repr(costs[1]))


def _agrees(quote, expected):
    assert quote.status == PricingStatus.PRICED, quote.prices_used
    got = _exact(quote)
    assert abs(got - expected) <= Decimal("1e-9") + Decimal("1e-9") * abs(expected), (got, expected, quote.prices_used)


def _prompt(quantities):
    return sum(quantities.get(name, 0) for name in PROMPT_TOKEN_FIELDS)


@st.composite
def prompt_split(draw, sizes, cache_read=True, cache_write=True):
    """Quantities whose prompt total is one of `sizes`: input tokens, cache reads and cache writes."""
    total = draw(sizes)
    cached = draw(st.integers(0, total)) if cache_read and draw(st.booleans()) else 0
    written = draw(st.integers(0, total - cached)) if cache_write and draw(st.booleans()) else 0
    quantities = {"input_tokens": total - cached - written, "output_tokens": draw(token_counts)}
    if cached:
        quantities["cached_input_tokens"] = cached
    if written:
        quantities["cache_write_tokens"] = written
    return quantities


def around(thresholds):
    """Prompt sizes near and across the thresholds (exactly N and N + 1 included), and anywhere."""
    near = st.builds(
        lambda n, offset: max(1, n + offset),
        st.sampled_from(thresholds),
        st.sampled_from([0, 1]) | st.integers(-3000, 3000),
    )
    return near | st.integers(1, 400_000)


@st.composite
def context_entries(draw):
    """Base token prices and 1-2 context tiers, each of the four token prices above a tier or not."""
    entry = {"input_cost_per_token": draw(prices), "output_cost_per_token": draw(prices)}
    for name in TOKEN_PREFIXES[2:]:
        if (price := draw(maybe_price)) is not None:
            entry[name] = price
    tiers = draw(st.lists(st.sampled_from(THRESHOLDS), min_size=1, max_size=2, unique=True))
    for k in tiers:
        entry[f"input_cost_per_token_above_{k}k_tokens"] = draw(prices)
        for name in TOKEN_PREFIXES[1:]:
            if (price := draw(maybe_price)) is not None:
                entry[f"{name}_above_{k}k_tokens"] = price
    return entry, [k * 1000 for k in sorted(tiers)]


# --- 1. context-size tiers ----------------------------------------------------------------------


@COMPARE
@given(st.data(), st.sampled_from(["openai", "xai"]))  # xAI's tiers include their threshold
def test_context_tiers_cost_what_litellm_bills_around_and_across_each_threshold(data, provider):
    entry, thresholds = data.draw(context_entries())
    quantities = data.draw(prompt_split(around(thresholds)))
    key, text = _register(entry, provider)

    _agrees(_quote(_book(key, text), quantities), _litellm(key, provider, quantities))


# --- 2. service tiers ---------------------------------------------------------------------------


@st.composite
def service_tier_entries(draw, tier):
    entry = {"input_cost_per_token": draw(prices), "output_cost_per_token": draw(prices)}
    if (price := draw(maybe_price)) is not None:
        entry["cache_read_input_token_cost"] = price
    own = draw(st.sets(st.sampled_from(TOKEN_PREFIXES[:3]), min_size=1))
    entry.update((f"{name}_{tier}", draw(prices)) for name in own)
    thresholds = []
    if draw(st.booleans()):
        k = draw(st.sampled_from(THRESHOLDS))
        thresholds = [k * 1000]
        entry[f"input_cost_per_token_above_{k}k_tokens"] = draw(prices)
        if (price := draw(maybe_price)) is not None:
            entry[f"output_cost_per_token_above_{k}k_tokens"] = price
        for name in draw(st.sets(st.sampled_from(TOKEN_PREFIXES[:3]))):
            if f"{name}_above_{k}k_tokens_{tier}" in LITELLM_READS:
                entry[f"{name}_above_{k}k_tokens_{tier}"] = draw(prices)
    return entry, thresholds


@COMPARE
@given(st.data(), st.sampled_from(["flex", "priority"]))
def test_a_service_tier_costs_what_litellm_bills_for_it_with_and_without_context_tiers(data, tier):
    entry, thresholds = data.draw(service_tier_entries(tier))
    sizes = around(thresholds) if thresholds else st.integers(1, 400_000)
    quantities = data.draw(prompt_split(sizes, cache_write=False))
    key, text = _register(entry, "openai")

    _agrees(_quote(_book(key, text), quantities, tier), _litellm(key, "openai", quantities, tier))


@FAST
@given(st.data(), st.sampled_from(["flex", "priority"]))
def test_a_service_tier_the_model_has_no_price_for_is_unpriced_naming_it(data, tier):
    other = "priority" if tier == "flex" else "flex"
    entry, _ = data.draw(service_tier_entries(other))  # LiteLLM bills the standard price here; we refuse
    quantities = data.draw(prompt_split(st.integers(1, 400_000)))
    _, text = _file_entry({**entry, "litellm_provider": "openai", "mode": "chat"})

    quote = _quote(_book("no-tier-model", text), quantities, tier)

    assert (quote.status, quote.amount) == (PricingStatus.UNPRICED, 0)
    assert quote.prices_used["reason"] == f"no {tier} price for openai/no-tier-model"


# --- 3. 1-hour and 5-minute cache writes ----------------------------------------------------------


@st.composite
def cache_write_entries(draw):
    entry = {
        "input_cost_per_token": draw(prices),
        "output_cost_per_token": draw(prices),
        "cache_creation_input_token_cost_above_1hr": draw(prices),
    }
    for name in ("cache_read_input_token_cost", "cache_creation_input_token_cost"):
        if (price := draw(maybe_price)) is not None:
            entry[name] = price
    thresholds = []
    if draw(st.booleans()):
        k = draw(st.sampled_from(THRESHOLDS))
        thresholds = [k * 1000]
        entry[f"input_cost_per_token_above_{k}k_tokens"] = draw(prices)
        for name in ("cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr"):
            if (price := draw(maybe_price)) is not None:
                entry[f"{name}_above_{k}k_tokens"] = price
    return entry, thresholds


@COMPARE
@given(st.data())
def test_one_hour_and_five_minute_cache_writes_cost_what_litellm_bills_anthropic_usage(data):
    entry, thresholds = data.draw(cache_write_entries())
    quantities = data.draw(prompt_split(around(thresholds) if thresholds else st.integers(1, 400_000)))
    written = quantities.pop("cache_write_tokens", 0)
    one_hour = data.draw(st.integers(1, max(1, written))) if written else data.draw(st.integers(1, 5000))
    quantities["cache_write_tokens"] = written - min(written, one_hour)
    quantities["cache_write_1h_tokens"] = one_hour
    key, text = _register(entry, "anthropic")

    _agrees(_quote(_book(key, text), quantities), _litellm(key, "anthropic", quantities))


# --- 4. audio and image tokens ----------------------------------------------------------------------

MODALITY_PRICES = {  # LiteLLM's field -> the quantity it prices
    "input_cost_per_audio_token": "input_audio_tokens",
    "output_cost_per_audio_token": "output_audio_tokens",
    "input_cost_per_image_token": "input_image_tokens",
    "output_cost_per_image_token": "output_image_tokens",
}


@COMPARE
@given(st.data())
def test_audio_and_image_tokens_cost_their_own_prices_as_litellm_bills_them(data):
    entry = {"input_cost_per_token": data.draw(prices), "output_cost_per_token": data.draw(prices)}
    if (price := data.draw(maybe_price)) is not None:
        entry["cache_read_input_token_cost"] = price
    priced = data.draw(st.sets(st.sampled_from(sorted(MODALITY_PRICES)), min_size=1))
    entry.update((name, data.draw(prices)) for name in priced)
    quantities = data.draw(prompt_split(st.integers(1, 100_000), cache_write=False))
    quantities.update((MODALITY_PRICES[name], data.draw(st.integers(1, 20_000))) for name in priced)
    if "input_cost_per_audio_token" in priced and data.draw(st.booleans()):
        entry["cache_read_input_audio_token_cost"] = data.draw(prices)
        quantities["cached_audio_tokens"] = data.draw(st.integers(1, 5000))
    key, text = _register(entry, "openai")

    _agrees(_quote(_book(key, text), quantities), _litellm(key, "openai", quantities))


# --- 5. tiered_pricing range lists --------------------------------------------------------------------


@st.composite
def tiered_entries(draw):
    """2-4 ascending contiguous ranges from 0, each with its input price and some of the others."""
    bounds = sorted(draw(st.sets(st.integers(1, 300).map(lambda k: k * 1000), min_size=2, max_size=4)))
    starts = [0, *bounds[:-1]]
    ranges = []
    for start, end in zip(starts, bounds, strict=True):
        tier = {"range": [start, end], "input_cost_per_token": draw(prices)}
        for name in TOKEN_PREFIXES[1:]:
            if (price := draw(maybe_price)) is not None:
                tier[name] = price
        ranges.append(tier)
    entry = {
        "input_cost_per_token": draw(prices),
        "output_cost_per_token": draw(prices),
        "tiered_pricing": ranges,
    }
    return entry, bounds


@COMPARE
@given(st.data())
def test_tiered_pricing_ranges_cost_what_litellm_bills_at_each_boundary_and_beyond_the_last(data):
    entry, bounds = data.draw(tiered_entries())
    quantities = data.draw(prompt_split(around(bounds)))
    key, text = _register(entry, "dashscope")

    _agrees(_quote(_book(key, text), quantities), _litellm(key, "dashscope", quantities))


# --- 6. off-peak windows --------------------------------------------------------------------------------

clock = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 30]) | st.integers(0, 59))
hours = st.builds(lambda start, end: f"{start}-{end}", clock, clock)


@st.composite
def off_peak_entries(draw):
    entry = {"input_cost_per_token": draw(prices), "output_cost_per_token": draw(prices)}
    if (price := draw(maybe_price)) is not None:
        entry["cache_read_input_token_cost"] = price
    block = {"input_cost_per_token": draw(prices)}
    for name in ("output_cost_per_token", "cache_read_input_token_cost"):
        if (price := draw(maybe_price)) is not None:
            block[name] = price
    if draw(st.booleans()):
        block["hours_utc"] = draw(hours | st.lists(hours, min_size=1, max_size=2))
    if "hours_utc" not in block or draw(st.booleans()):
        block["windows"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"hours_utc": hours | st.lists(hours, min_size=1, max_size=2)},
                    optional={"weekdays": st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True)},
                ),
                min_size=1,
                max_size=3,
            )
        )
        if draw(st.booleans()):
            block["weekday_timezone"] = draw(st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York"]))
    entry["off_peak_pricing"] = block
    return entry


def _window_edges(entry):
    """The moments a window opens or closes, on each day of the test week: the boundaries to probe."""
    block = entry["off_peak_pricing"]
    windows = [block.get("hours_utc")] + [rule["hours_utc"] for rule in block.get("windows", [])]
    texts = [w for window in windows if window for w in ([window] if isinstance(window, str) else window)]
    return sorted({edge for text in texts for edge in text.split("-")})


@COMPARE
@given(st.data())
def test_off_peak_windows_cost_what_litellm_bills_at_the_same_moment(data):
    entry = data.draw(off_peak_entries())
    week = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
    day = data.draw(st.integers(0, 6))
    edge = st.builds(
        lambda text, shift: datetime.strptime(text, "%H:%M").replace(tzinfo=UTC) + timedelta(minutes=shift),
        st.sampled_from(_window_edges(entry)),
        st.sampled_from([-1, 0, 1]),
    ).map(lambda moment: week + timedelta(days=day, hours=moment.hour, minutes=moment.minute))
    at = data.draw(edge | st.integers(0, 7 * 24 * 60 - 1).map(lambda minutes: week + timedelta(minutes=minutes)))
    quantities = data.draw(prompt_split(st.integers(1, 100_000), cache_write=False))
    key, text = _register(entry, "deepseek")

    _agrees(_quote(_book(key, text), quantities, at=at), _litellm(key, "deepseek", quantities, at=at))


# --- model-free properties ------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_a_quotes_amount_is_the_exact_sum_of_its_parts_rounded_once(data):
    entry, thresholds = data.draw(context_entries())
    quantities = data.draw(prompt_split(around(thresholds)))
    _, text = _file_entry({**entry, "litellm_provider": "openai", "mode": "chat"})

    quote = _quote(_book("sum-model", text), quantities)

    parts = quote.prices_used.values()
    exact = sum((EXACT.multiply(Decimal(p["quantity"]), Decimal(p["unit_price"])) for p in parts), Decimal(0))
    assert all(Decimal(p["amount"]) == EXACT.multiply(Decimal(p["quantity"]), Decimal(p["unit_price"])) for p in parts)
    assert quote.amount == round_money(exact) == round_money(_exact(quote))


def _tier_interval(thresholds, prompt):
    """(low, high]: the prompt sizes priced at the same context tier as `prompt`."""
    low = max((t for t in thresholds if t < prompt), default=0)
    high = min((t for t in thresholds if t >= prompt), default=10**9)
    return low, high


@FAST
@given(st.data())
def test_more_of_any_quantity_never_costs_less_within_one_context_tier(data):
    entry, thresholds = data.draw(context_entries())
    quantities = data.draw(prompt_split(around(thresholds)))
    _, text = _file_entry({**entry, "litellm_provider": "openai", "mode": "chat"})
    rows = _book("monotone-model", text)
    name = data.draw(st.sampled_from(["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"]))
    prompt = _prompt(quantities)
    _, high = _tier_interval(thresholds, prompt)
    room = 50_000 if name == "output_tokens" else high - prompt
    more = {**quantities, name: quantities.get(name, 0) + data.draw(st.integers(0, max(0, room)))}

    before, after = _quote(rows, quantities), _quote(rows, more)

    assert {u: p["above_tokens"] for u, p in before.prices_used.items()} == {
        u: p["above_tokens"] for u, p in after.prices_used.items() if u in before.prices_used
    }
    assert after.amount >= before.amount


@FAST
@given(st.data())
def test_the_context_tier_chosen_is_the_highest_threshold_below_the_prompt(data):
    entry, thresholds = data.draw(context_entries())
    quantities = data.draw(prompt_split(around(thresholds)))
    _, text = _file_entry({**entry, "litellm_provider": "openai", "mode": "chat"})
    rows = _book("tier-model", text)
    prompt = _prompt(quantities)

    quote = _quote(rows, quantities)

    for unit, part in quote.prices_used.items():
        own = {row.above_tokens: row.unit_price for row in rows if row.unit == unit}
        if 0 not in own:  # a unit without a base price is billed at its fallback unit's rows (cache -> input)
            continue
        chosen = max(above for above in own if above < prompt or above == 0)
        assert (part["above_tokens"], Decimal(part["unit_price"])) == (chosen, own[chosen]), (unit, prompt, own)
