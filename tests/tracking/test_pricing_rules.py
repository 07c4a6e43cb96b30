"""The quote engine's price rules, one table per rule kind, on hand-made (unsaved) Price rows.

The hand-checked provider examples use the providers' published prices (the shared price file's).
"""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from tracking.models import Price, PricingStatus
from tracking.pricing import PriceBook

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
WEDNESDAY_NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def row(unit, unit_price, *, tier="", above=0, variant="", windows=(), model="m", provider="p", pk=None):
    return Price(
        pk=pk,
        provider=provider,
        model=model,
        operation="chat",
        unit=unit,
        variant=variant,
        service_tier=tier,
        above_tokens=above,
        off_peak_windows=list(windows),
        unit_price=Decimal(unit_price),
        currency="USD",
        valid_from=EPOCH,
    )


def quote(rows, *, service_tier="", at=WEDNESDAY_NOON, variant="", **quantities):
    first = rows[0]
    return PriceBook(rows).quote(
        provider=first.provider,
        model=first.model,
        operation="chat",
        variant=variant,
        at=at,
        quantities=quantities,
        service_tier=service_tier,
    )


def amount(rows, **kwargs):
    result = quote(rows, **kwargs)
    assert result.status == PricingStatus.PRICED, result.prices_used
    return result.amount


# --- context-size tiers ---------------------------------------------------------------------------

GEMINI_25_PRO = [  # gemini/gemini-2.5-pro: 1.25 / 10 USD per 1M, 2.50 / 15 above 200k prompt tokens
    row("input_token", "0.00000125", model="gemini-2.5-pro", provider="gemini"),
    row("input_token", "0.0000025", above=200_000, model="gemini-2.5-pro", provider="gemini"),
    row("output_token", "0.00001", model="gemini-2.5-pro", provider="gemini"),
    row("output_token", "0.000015", above=200_000, model="gemini-2.5-pro", provider="gemini"),
    row("cached_input_token", "0.000000125", model="gemini-2.5-pro", provider="gemini"),
]


def test_a_300k_prompt_to_gemini_2_5_pro_is_billed_at_the_above_200k_prices():
    # Google's rate card: 300,000 x 2.50/1M + 1,000 x 15/1M = 0.765 USD.
    assert amount(GEMINI_25_PRO, input_tokens=300_000, output_tokens=1000) == Decimal("0.765")


@pytest.mark.parametrize(
    ("input_tokens", "cached_input_tokens", "expected"),
    [
        (200_000, 0, Decimal("0.35")),  # exactly 200k is not above 200k: base prices
        (200_001, 0, Decimal("0.6500025")),  # one more token: every input and output token at the tier
        (150_000, 60_000, Decimal("0.5325")),  # cached tokens count towards the prompt's size
    ],
)
def test_the_prompts_total_tokens_choose_the_context_tier(input_tokens, cached_input_tokens, expected):
    result = amount(
        GEMINI_25_PRO, input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=10_000
    )

    assert result == expected


def test_a_unit_without_a_tiered_price_keeps_its_base_price_above_the_threshold():
    result = quote(GEMINI_25_PRO, input_tokens=250_000, cached_input_tokens=100_000)

    assert result.prices_used["cached_input_token"]["unit_price"] == "0.000000125"
    assert result.prices_used["input_token"]["above_tokens"] == 200_000


def test_the_highest_tier_below_the_prompt_wins():
    rows = [row("input_token", "1"), row("input_token", "2", above=32_000), row("input_token", "3", above=128_000)]

    assert [amount(rows, input_tokens=n) / n for n in (32_000, 32_001, 128_000, 128_001)] == [1, 2, 2, 3]


def test_xai_context_tiers_include_the_threshold():
    rows = [
        row("input_token", "0.000003", provider="xai", model="grok-4"),
        row("input_token", "0.000006", above=128_000, provider="xai", model="grok-4"),
    ]

    assert amount(rows, input_tokens=128_000) == Decimal("0.768")
    assert amount(rows, input_tokens=127_999) == Decimal("0.383997")


def test_a_cache_read_without_a_price_costs_the_tiered_input_price():
    rows = [row("input_token", "1"), row("input_token", "2", above=100)]

    assert amount(rows, input_tokens=50, cached_input_tokens=60) == 220


# --- service tiers --------------------------------------------------------------------------------

GPT_4O = [
    row("input_token", "0.0000025", model="gpt-4o", provider="openai", pk=1),
    row("output_token", "0.00001", model="gpt-4o", provider="openai", pk=2),
    row("cached_input_token", "0.00000125", model="gpt-4o", provider="openai", pk=3),
    row("input_token", "0.00000425", tier="priority", model="gpt-4o", provider="openai", pk=4),
    row("output_token", "0.000017", tier="priority", model="gpt-4o", provider="openai", pk=5),
    row("cached_input_token", "0.000002125", tier="priority", model="gpt-4o", provider="openai", pk=6),
    row("input_token", "0.00000125", tier="batch", model="gpt-4o", provider="openai", pk=7),
    row("output_token", "0.000005", tier="batch", model="gpt-4o", provider="openai", pk=8),
]


def test_gpt_4o_on_the_priority_tier_costs_the_priority_prices():
    # The call: 1,000 input and 350 output tokens, 0.006 USD standard, 0.0102 USD priority.
    assert amount(GPT_4O, input_tokens=1000, output_tokens=350) == Decimal("0.006")
    assert amount(GPT_4O, input_tokens=1000, output_tokens=350, service_tier="priority") == Decimal("0.0102")


@pytest.mark.parametrize("name", ["fast", "priority"])
def test_litellms_fast_tier_is_priority(name):
    assert amount(GPT_4O, input_tokens=1000, service_tier=name) == Decimal("0.00425")


@pytest.mark.parametrize("name", ["", "default", "standard", "auto"])
def test_the_standard_tier_has_several_names(name):
    assert amount(GPT_4O, input_tokens=1000, service_tier=name) == Decimal("0.0025")


def test_o4_mini_on_the_flex_tier_costs_half():
    rows = [
        row("input_token", "0.0000011", model="o4-mini", provider="openai"),
        row("output_token", "0.0000044", model="o4-mini", provider="openai"),
        row("input_token", "0.00000055", tier="flex", model="o4-mini", provider="openai"),
        row("output_token", "0.0000022", tier="flex", model="o4-mini", provider="openai"),
    ]

    assert amount(rows, input_tokens=4000, output_tokens=1000) == Decimal("0.0088")
    assert amount(rows, input_tokens=4000, output_tokens=1000, service_tier="flex") == Decimal("0.0044")


def test_a_batch_call_costs_the_batch_prices():
    assert amount(GPT_4O, input_tokens=1000, output_tokens=350, service_tier="batch") == Decimal("0.003")


def test_a_tier_the_model_has_no_price_for_is_unpriced_and_named():
    result = quote(GPT_4O, input_tokens=1000, service_tier="flex")

    assert (result.status, result.amount) == (PricingStatus.UNPRICED, 0)
    assert result.prices_used == {"reason": "no flex price for openai/gpt-4o"}


def test_an_unknown_service_tier_is_unpriced_and_named():
    result = quote(GPT_4O, input_tokens=1000, service_tier="scale")

    assert result.status == PricingStatus.UNPRICED
    assert result.prices_used == {"reason": "unknown service tier 'scale'"}


def test_a_unit_the_tier_does_not_price_takes_the_standard_price_as_litellm():
    rows = [row("input_token", "1"), row("output_token", "10"), row("input_token", "2", tier="priority")]

    result = quote(rows, input_tokens=1, output_tokens=1, service_tier="priority")

    assert result.amount == 12
    assert result.prices_used["output_token"]["service_tier"] == ""


def test_above_a_threshold_a_tier_without_its_own_tiered_price_takes_the_standard_tiered_one():
    rows = [
        row("input_token", "1"),
        row("input_token", "2", above=100),
        row("input_token", "3", tier="priority"),
        row("output_token", "30", tier="priority"),
        row("output_token", "40", tier="priority", above=100),
    ]

    assert amount(rows, input_tokens=101, output_tokens=1, service_tier="priority") == 101 * 2 + 40
    assert amount(rows, input_tokens=100, output_tokens=1, service_tier="priority") == 100 * 3 + 30


def test_reasoning_on_a_tier_with_an_output_price_costs_the_tiers_output_price():
    rows = [
        row("input_token", "1"),
        row("output_token", "10"),
        row("reasoning_token", "5"),
        row("output_token", "20", tier="flex"),
    ]

    assert amount(rows, reasoning_tokens=1) == 5
    assert amount(rows, reasoning_tokens=1, service_tier="flex") == 20


def test_a_batch_cache_read_without_a_batch_price_costs_the_batch_input_price():
    rows = [*GPT_4O]

    assert amount(rows, input_tokens=100, cached_input_tokens=100, service_tier="batch") == Decimal("0.00025")


def test_batch_image_output_without_a_batch_image_price_is_unpriced_not_billed_as_text():
    rows = [
        row("output_token", "0.00001"),
        row("output_image_token", "0.00003"),
        row("output_token", "0.000005", tier="batch"),
    ]

    result = quote(rows, output_tokens=10, output_image_tokens=100, service_tier="batch")

    assert result.prices_used == {
        "missing_units": ["output_image_token"],
        "reason": "no batch price for p/m: output image token",
    }


# --- off-peak -------------------------------------------------------------------------------------

DEEPSEEK_WINDOWS = [
    {"hours_utc": ["00:00-01:00", "04:00-06:00", "10:00-00:00"], "weekdays": [1, 2, 3, 4, 5]},
    {"hours_utc": "00:00-00:00", "weekdays": [6, 7]},
]
DEEPSEEK_V4_PRO = [
    row("input_token", "0.00000132", model="deepseek-v4-pro", provider="deepseek"),
    row("output_token", "0.00000396", model="deepseek-v4-pro", provider="deepseek"),
    row("cached_input_token", "0.000000044", model="deepseek-v4-pro", provider="deepseek"),
    row("cache_write_token", "0", model="deepseek-v4-pro", provider="deepseek"),
    *(
        row(unit, price, tier="off_peak", windows=DEEPSEEK_WINDOWS, model="deepseek-v4-pro", provider="deepseek")
        for unit, price in [("input_token", "0.00000066"), ("output_token", "0.00000198")]
    ),
]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2026, 3, 4, 12, 0, tzinfo=UTC), Decimal("0.00264")),  # Wednesday 12:00: off-peak
        (datetime(2026, 3, 4, 9, 59, tzinfo=UTC), Decimal("0.00528")),  # Wednesday 09:59: peak
        (datetime(2026, 3, 4, 6, 0, tzinfo=UTC), Decimal("0.00528")),  # a window's end is exclusive
        (datetime(2026, 3, 4, 4, 0, tzinfo=UTC), Decimal("0.00264")),  # its start inclusive
        (datetime(2026, 3, 7, 8, 0, tzinfo=UTC), Decimal("0.00264")),  # Saturday: all day
    ],
)
def test_a_standard_call_inside_an_off_peak_window_costs_the_off_peak_price(at, expected):
    assert amount(DEEPSEEK_V4_PRO, input_tokens=1000, output_tokens=1000, at=at) == expected


def test_an_off_peak_block_without_a_cache_read_price_keeps_the_standard_one():
    result = quote(DEEPSEEK_V4_PRO, cached_input_tokens=1000, input_tokens=1)

    assert result.prices_used["cached_input_token"]["unit_price"] == "0.000000044"
    assert result.prices_used["input_token"]["service_tier"] == "off_peak"


# --- cache lifetimes and modalities ---------------------------------------------------------------

CLAUDE_SONNET_4_5 = [
    row("input_token", "0.000003", model="claude-sonnet-4-5", provider="anthropic"),
    row("output_token", "0.000015", model="claude-sonnet-4-5", provider="anthropic"),
    row("cache_write_token", "0.00000375", model="claude-sonnet-4-5", provider="anthropic"),
    row("cache_write_1h_token", "0.000006", model="claude-sonnet-4-5", provider="anthropic"),
]


def test_claude_1_hour_cache_writes_cost_twice_the_input_price():
    # Anthropic: 5-minute writes 1.25x, 1-hour writes 2x the 3 USD/1M input price.
    assert amount(CLAUDE_SONNET_4_5, cache_write_tokens=10_000, cache_write_1h_tokens=10_000) == Decimal("0.0975")


@pytest.mark.parametrize(
    ("rows", "quantities", "expected_unit_price"),
    [
        ([row("input_token", "3"), row("cache_write_token", "4")], {"cache_write_1h_tokens": 1}, "4"),
        ([row("input_token", "3")], {"cache_write_1h_tokens": 1}, "3"),
        ([row("input_token", "3")], {"cache_write_tokens": 1}, "3"),
        ([row("input_token", "3"), row("input_audio_token", "7")], {"input_audio_tokens": 1}, "7"),
        ([row("output_token", "9"), row("output_image_token", "40")], {"output_image_tokens": 1}, "40"),
        ([row("output_token", "9")], {"reasoning_tokens": 1}, "9"),
    ],
)
def test_a_token_without_its_own_price_costs_the_price_litellm_falls_back_to(rows, quantities, expected_unit_price):
    result = quote(rows, **quantities)
    (unit,) = result.prices_used

    assert result.prices_used[unit]["unit_price"] == expected_unit_price


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ("input_audio_tokens", "input_audio_token"),
        ("output_audio_tokens", "output_audio_token"),
        ("cached_audio_tokens", "cached_audio_token"),
        ("cache_write_audio_tokens", "cache_write_audio_token"),
        ("input_image_tokens", "input_image_token"),
        ("output_image_tokens", "output_image_token"),
        ("cached_image_tokens", "cached_image_token"),
        ("input_video_tokens", "input_video_token"),
        ("output_video_tokens", "output_video_token"),
        ("input_characters", "input_character"),
        ("output_characters", "output_character"),
        ("input_images", "input_image"),
        ("pixels", "pixel"),
        ("pages", "page"),
        ("web_searches", "web_search"),
        ("maps_queries", "maps_query"),
        ("seconds", "second"),
        ("input_audio_seconds", "input_audio_second"),
    ],
)
def test_a_quantity_the_model_has_no_price_for_is_unpriced_and_named(quantity, unit):
    result = quote([row("input_token", "1")], input_tokens=10, **{quantity: 3})

    assert (result.status, result.amount) == (PricingStatus.UNPRICED, 0)
    assert result.prices_used["missing_units"] == [unit]
    assert result.prices_used["reason"].startswith("no price for p/m: ")


def test_audio_tokens_on_a_text_only_model_are_unpriced_not_billed_at_the_text_rate():
    gpt_35_turbo = [
        row("input_token", "0.0000005", model="gpt-3.5-turbo", provider="openai"),
        row("output_token", "0.0000015", model="gpt-3.5-turbo", provider="openai"),
    ]

    result = quote(gpt_35_turbo, input_tokens=100, input_audio_tokens=50)

    assert (result.status, result.amount) == (PricingStatus.UNPRICED, 0)
    assert result.prices_used == {
        "missing_units": ["input_audio_token"],
        "reason": "no price for openai/gpt-3.5-turbo: input audio token",
    }


def test_a_missing_unit_on_a_tier_names_the_tier():
    result = quote([row("input_token", "1"), row("input_token", "1", tier="flex")], pages=1, service_tier="flex")

    assert result.prices_used == {"missing_units": ["page"], "reason": "no flex price for p/m: page"}


@pytest.mark.parametrize(
    ("quantities", "expected"),
    [
        ({"input_characters": 1000}, Decimal("0.03")),
        ({"pixels": 1_048_576}, Decimal("1.048576")),
        ({"pages": 3}, Decimal("0.003")),
        ({"maps_queries": 2}, Decimal("0.05")),
        ({"seconds": Decimal("1.5")}, Decimal("0.15")),
        ({"input_audio_seconds": Decimal("2")}, Decimal("0.0002")),
        ({"input_images": 2}, Decimal("0.002")),
    ],
)
def test_counted_units_cost_quantity_times_price(quantities, expected):
    rows = [
        row("input_character", "0.00003"),
        row("pixel", "0.000001"),
        row("page", "0.001"),
        row("maps_query", "0.025"),
        row("second", "0.1"),
        row("input_audio_second", "0.0001"),
        row("input_image", "0.001"),
    ]

    assert amount(rows, **quantities) == expected


WEB_SEARCH = [
    row("input_token", "0.000001"),
    row("web_search", "0.03", variant="low"),
    row("web_search", "0.035", variant="medium"),
    row("web_search", "0.05", variant="high"),
]


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("", Decimal("0.035")), ("low", Decimal("0.03")), ("high", Decimal("0.05")), ("hd/1024-x-1024", Decimal("0.035"))],
)
def test_a_web_search_costs_its_context_sizes_price_medium_unless_named(variant, expected):
    assert amount(WEB_SEARCH, web_searches=1, variant=variant) == expected


def test_a_unit_priced_without_variants_ignores_the_events_variant():
    rows = [row("input_token", "1"), row("image", "0.08", variant="hd/1024-x-1792")]

    assert amount(rows, input_tokens=1, images=1, variant="hd/1024-x-1792") == Decimal("1.08")
    assert quote(rows, images=1, variant="standard/1024-x-1024").prices_used["missing_units"] == ["image"]


# --- provenance -----------------------------------------------------------------------------------


def test_each_priced_unit_records_the_rule_that_priced_it():
    rows = [
        Price(
            pk=41,
            provider="gemini",
            model="gemini-2.5-pro",
            operation="chat",
            unit="input_token",
            service_tier="priority",
            above_tokens=200_000,
            unit_price=Decimal("0.0000045"),
            valid_from=EPOCH,
        )
    ]

    result = quote(rows, input_tokens=300_000, service_tier="priority")

    assert result.prices_used == {
        "input_token": {
            "price_id": 41,
            "unit_price": "0.0000045",
            "quantity": "300000",
            "amount": "1.35",
            "service_tier": "priority",
            "above_tokens": 200_000,
            "valid_from": "2020-01-01T00:00:00+00:00",
        }
    }


def test_a_float_quantity_is_refused_not_rounded():
    with pytest.raises(ValidationError, match="must be an integer or Decimal"):
        quote(GPT_4O, input_tokens=1.5)


# --- sessions, messages, citation tokens, guardrail units, credits --------------------------------


@pytest.mark.parametrize(
    ("unit", "quantity", "count", "unit_price", "expected"),
    [
        ("session", "sessions", 3, "0.03", Decimal("0.09")),  # OpenAI code interpreter
        ("message", "messages", 5, "0.004", Decimal("0.02")),  # xAI voice text messages
        ("citation_token", "citation_tokens", 700, "0.000002", Decimal("0.0014")),  # Perplexity
        ("credit", "credits", Decimal("2.5"), "0.015", Decimal("0.0375")),  # Reducto (credits may be fractional)
    ],
)
def test_usage_counted_in_its_own_unit_costs_count_times_price(unit, quantity, count, unit_price, expected):
    assert amount([row(unit, unit_price)], **{quantity: count}) == expected


@pytest.mark.parametrize("quantity", ["sessions", "messages", "citation_tokens", "guardrail_units", "credits"])
def test_that_usage_on_a_model_without_its_price_is_unpriced_not_billed_as_tokens(quantity):
    result = quote([row("input_token", "1"), row("output_token", "1")], input_tokens=10, **{quantity: 2})

    assert (result.status, result.prices_used["missing_units"]) == (PricingStatus.UNPRICED, [quantity[:-1]])


BEDROCK_GUARDRAILS = [
    row("guardrail_unit", price, variant=policy, model="guardrails", provider="bedrock")
    for policy, price in [("contentPolicyUnits", "0.00015"), ("contextualGroundingPolicyUnits", "0.0001")]
]


def test_guardrail_units_are_priced_by_the_policy_named_in_the_variant():
    assert amount(BEDROCK_GUARDRAILS, variant="contentPolicyUnits", guardrail_units=10) == Decimal("0.0015")
    unnamed = quote(BEDROCK_GUARDRAILS, guardrail_units=10)  # two policies: which one?
    assert unnamed.prices_used == {
        "missing_units": ["guardrail_unit"],
        "reason": "no price for bedrock/guardrails: guardrail policy unit",
    }


@pytest.mark.parametrize(
    ("rows", "expected_units"),
    [
        ([row("credit", "0.015"), row("page", "0.01")], ["credit"]),
        ([row("page", "0.01")], ["page"]),
    ],
)
def test_an_ocr_call_reporting_credits_and_pages_is_billed_by_credits_where_priced_else_pages(rows, expected_units):
    result = quote(rows, credits=Decimal(6), pages=4)

    assert result.status == PricingStatus.PRICED
    assert list(result.prices_used) == expected_units


def test_citation_tokens_do_not_choose_the_context_tier():
    rows = [row("input_token", "1"), row("input_token", "2", above=1000), row("citation_token", "5")]

    result = quote(rows, input_tokens=10, citation_tokens=5000)

    assert result.prices_used["input_token"]["above_tokens"] == 0


def test_an_explicit_cache_read_is_priced_by_the_explicit_variant_and_an_implicit_one_by_the_plain_price():
    qwen = [  # dashscope/qwen3.7-max: implicit cache reads 20 %, explicit ones 10 % of the input price
        row("input_token", "0.0000025"),
        row("cached_input_token", "0.0000005"),
        row("cached_input_token", "0.00000025", variant="explicit"),
    ]

    assert amount(qwen, cached_input_tokens=1000) == Decimal("0.0005")
    assert amount(qwen, cached_input_tokens=1000, variant="explicit") == Decimal("0.00025")
    assert amount(qwen, input_tokens=1000, variant="explicit") == Decimal("0.0025")  # input: no variants


def test_video_embedding_seconds_are_priced_by_the_interval_named_in_the_variant():
    vertex = [
        row("input_video_second", "0.0005"),
        row("input_video_second", "0.001", variant="above-8s-interval"),
        row("input_video_second", "0.002", variant="above-15s-interval"),
    ]

    assert amount(vertex, input_video_seconds=Decimal(10)) == Decimal("0.005")
    assert amount(vertex, input_video_seconds=Decimal(10), variant="above-15s-interval") == Decimal("0.02")
