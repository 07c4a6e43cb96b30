"""Price multipliers (unit "uplift") and search prices by result count, against LiteLLM's cost function.

Every model of the shared price file with an uplift field (OpenAI data residency, Vertex AI regional
endpoints, Anthropic and Bedrock US-only inference, Anthropic fast mode) is priced by
``PriceBook.quote`` with the event's region and speed, and by LiteLLM 1.108.11 with the matching
argument (data_residency, vertex_location) or usage attribute (inference_geo, speed); the two agree to
1e-9 USD. Exa's and Firecrawl's query prices by max_results follow LiteLLM's search_provider_cost_per_query.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: else it fetches the map

from decimal import Decimal

import litellm
import pytest
from litellm.search import search_provider_cost_per_query

from tests.tracking.test_pricing_litellm import (
    AT,
    EPOCH,
    KEYS_BY_IDENTITY,
    RAW,
    ROWS_BY_KEY,
    TOLERANCE,
    _exact,
    _price_rows,
    _usage,
)
from tracking.catalog import UPLIFT_FIELDS, UPLIFT_PROVIDER_SPECIFIC, catalog_parse
from tracking.models import Price, PricingStatus
from tracking.pricing import PriceBook

# condition -> (the event's region, speed; LiteLLM's keyword arguments; its usage attributes), and a case
# that must not be uplifted beside each.
CASES = {
    "data_residency:eu": [("eu", "", {"data_residency": "eu"}, {}), ("us", "", {"data_residency": "us"}, {})],
    "data_residency:us": [("us", "", {"data_residency": "us"}, {}), ("", "", {}, {})],
    "vertex_location:regional": [
        ("us-east5", "", {"vertex_location": "us-east5"}, {}),
        ("europe-west4", "", {"vertex_location": "europe-west4"}, {}),
        ("global", "", {"vertex_location": "global"}, {}),
    ],
    "inference_geo:us": [("us", "", {}, {"inference_geo": "us"}), ("global", "", {}, {"inference_geo": "global"})],
    "speed:fast": [("", "fast", {}, {"speed": "fast"}), ("us", "fast", {}, {"inference_geo": "us", "speed": "fast"})],
}
assert set(CASES) == {*UPLIFT_FIELDS.values(), *UPLIFT_PROVIDER_SPECIFIC.values()}


def _uplift_cases():
    cases = []
    for key, rows in sorted(ROWS_BY_KEY.items()):
        for row in rows:
            if row.unit == "uplift":
                cases.extend(
                    pytest.param(key, *case, id=f"{row.variant}-{key}-{case[0] or '_'}-{case[1] or '_'}")
                    for case in CASES[row.variant]
                )
    return cases


def _quantities(entry):
    quantities = {"input_tokens": 1000, "output_tokens": 500}
    if "cache_read_input_token_cost" in entry:
        quantities["cached_input_tokens"] = 300
    if "cache_creation_input_token_cost" in entry:
        quantities["cache_write_tokens"] = 200
    if "output_cost_per_reasoning_token" in entry:
        quantities["reasoning_tokens"] = 700
    return quantities


@pytest.mark.parametrize(("key", "region", "speed", "arguments", "usage_attributes"), _uplift_cases())
def test_the_uplifted_quote_equals_litellms_cost_function(key, region, speed, arguments, usage_attributes):
    entry = RAW[key]
    # An alias that adds only the uplift (the earlier key priced the tokens) is priced by both keys' rows.
    uplift = next(row for row in ROWS_BY_KEY[key] if row.unit == "uplift")
    identity = (uplift.provider, uplift.model, uplift.operation, uplift.variant.rpartition("/")[0])
    keys = sorted(KEYS_BY_IDENTITY[identity] | {key})
    rows = [row for alias in keys for row in _price_rows(alias)]
    first = next(row for row in rows if row.unit != "uplift")
    quantities = _quantities(entry)
    quote = PriceBook(rows).quote(
        provider=first.provider,
        model=first.model,
        operation=first.operation,
        variant=first.variant,
        at=AT,
        quantities=quantities,
        region=region,
        speed=speed,
    )
    usage = _usage(quantities)
    for name, value in usage_attributes.items():
        setattr(usage, name, value)
    provider = "vertex_ai" if "vertex_location" in arguments else entry["litellm_provider"]
    costs = litellm.cost_per_token(model=key, custom_llm_provider=provider, usage_object=usage, **arguments)
    expected = Decimal(repr(costs[0])) + Decimal(repr(costs[1]))

    assert quote.status == PricingStatus.PRICED
    assert abs(_exact(quote) - expected) <= TOLERANCE, (quote.prices_used, expected)
    assert abs(quote.amount - expected) < Decimal("0.000001")


def test_every_model_with_an_uplift_field_in_the_shared_file_is_compared():
    def has_uplift(entry):
        specific = entry.get("provider_specific_entry")
        return any(name in entry for name in UPLIFT_FIELDS) or (
            isinstance(specific, dict) and any(name in specific for name in UPLIFT_PROVIDER_SPECIFIC)
        )

    with_uplift = {key for key, entry in RAW.items() if isinstance(entry, dict) and has_uplift(entry)}
    compared = {param.values[0] for param in _uplift_cases()}

    assert compared == with_uplift
    assert len(compared) == 88  # 22 OpenAI, 39 Vertex AI, 16 Anthropic, 11 Bedrock


# --- search queries by requested result count (Exa, Firecrawl) --------------------------------------


@pytest.mark.parametrize("key", ["exa_ai/search", "firecrawl/search"])
@pytest.mark.parametrize("max_results", [None, 0, 1, 10, 11, 25, 26, 40, 100, 150])
def test_a_search_costs_what_litellm_bills_for_its_requested_result_count(key, max_results):
    rows = _price_rows(key)
    first = rows[0]
    quote = PriceBook(rows).quote(
        provider=first.provider,
        model=first.model,
        operation=first.operation,
        variant="" if max_results is None else f"max_results:{max_results}",
        at=AT,
        quantities={"requests": 3},
    )
    options = {} if max_results is None else {"max_results": max_results}
    expected = search_provider_cost_per_query(
        model=key, custom_llm_provider=RAW[key]["litellm_provider"], number_of_queries=3, optional_params=options
    )[0]

    assert quote.status == PricingStatus.PRICED
    assert abs(_exact(quote) - Decimal(repr(expected))) <= TOLERANCE


def test_a_search_naming_no_count_is_unpriced_naming_the_request_price():
    rows = _price_rows("exa_ai/search")

    quote = PriceBook(rows).quote(
        provider="exa_ai",
        model="search",
        operation="search",
        variant="max_results:many",
        at=AT,
        quantities={"requests": 1},
    )

    assert quote.status == PricingStatus.UNPRICED
    assert quote.prices_used["reason"] == "no price for exa_ai/search: request"


def test_the_catalog_names_each_result_count_range_in_the_request_prices_variant():
    parsed = catalog_parse(RAW_EXA, source="t.json")

    assert sorted((p.unit, p.variant, p.unit_price) for p in parsed.prices) == [
        ("request", "max_results:0-25", Decimal("0.005")),
        ("request", "max_results:26-100", Decimal("0.025")),
    ]


RAW_EXA = (
    b'{"exa_ai/search": {"litellm_provider": "exa_ai", "mode": "search", "tiered_pricing": ['
    b'{"input_cost_per_query": 0.005, "max_results_range": [0, 25]},'
    b'{"input_cost_per_query": 0.025, "max_results_range": [26, 100]}]}}'
)


# --- what the ledger keeps and says -------------------------------------------------------------------


def _row(unit, unit_price, variant="", pk=None):
    return Price(
        pk=pk,
        provider="openai",
        model="gpt-x",
        operation="chat",
        unit=unit,
        variant=variant,
        unit_price=Decimal(unit_price),
        currency="USD",
        valid_from=EPOCH,
    )


GPT_X = [
    _row("input_token", "0.000002", pk=1),
    _row("output_token", "0.000008", pk=2),
    _row("web_search", "0.01", variant="medium", pk=3),
    _row("uplift", "1.1", variant="data_residency:eu", pk=4),
    _row("uplift", "1.1", variant="data_residency:us", pk=5),
]


def _gpt_x(region="", speed="", **quantities):
    return PriceBook(GPT_X).quote(
        provider="openai",
        model="gpt-x",
        operation="chat",
        variant="",
        at=AT,
        quantities=quantities or {"input_tokens": 1000, "output_tokens": 500, "web_searches": 1},
        region=region,
        speed=speed,
    )


def test_processing_in_the_eu_costs_10_percent_more_on_the_token_prices_only():
    quote = _gpt_x(region="EU")

    # tokens 0.002 + 0.004 = 0.006, x 1.1 = 0.0066; the web search 0.01 is not uplifted.
    assert quote.amount == Decimal("0.0166")
    assert quote.prices_used["uplift"] == {
        "factor": "1.1",
        "applies_to": "0.006",
        "amount": "0.0006",
        "rules": [{"price_id": 4, "factor": "1.1", "condition": "data_residency:eu"}],
    }
    assert quote.prices_used["input_token"]["amount"] == "0.002"  # the parts keep their list amounts


@pytest.mark.parametrize("region", ["", "global", "ap", "us-central1"])
def test_a_call_outside_the_uplifted_regions_costs_the_list_price(region):
    quote = _gpt_x(region=region)

    assert quote.amount == Decimal("0.016")
    assert "uplift" not in quote.prices_used


def test_fast_mode_in_the_us_multiplies_both_factors():
    rows = [
        _row("input_token", "0.000005", pk=1),
        _row("uplift", "1.1", variant="inference_geo:us", pk=2),
        _row("uplift", "2", variant="speed:fast", pk=3),
    ]

    quote = PriceBook(rows).quote(
        provider="openai",
        model="gpt-x",
        operation="chat",
        variant="",
        at=AT,
        quantities={"input_tokens": 1000},
        region="us",
        speed="fast",
    )

    assert quote.amount == Decimal("0.011")
    assert quote.prices_used["uplift"]["factor"] == "2.2"
    assert [rule["condition"] for rule in quote.prices_used["uplift"]["rules"]] == ["inference_geo:us", "speed:fast"]


def test_an_uplift_price_is_never_a_unit_price_of_its_own():
    rows = [_row("uplift", "1.1", variant="data_residency:eu", pk=1)]

    quote = PriceBook(rows).quote(
        provider="openai", model="gpt-x", operation="chat", variant="", at=AT, quantities={"input_tokens": 1000}
    )

    assert quote.status == PricingStatus.UNPRICED
    assert quote.prices_used["missing_units"] == ["input_token"]


@pytest.mark.django_db
def test_an_event_processed_in_the_eu_is_stored_with_its_region_and_the_surcharge_in_words():
    from tracking.provenance import provenance_lines
    from tracking.services import cost_entry_record

    for row in GPT_X:
        Price.objects.create(**{f.name: getattr(row, f.name) for f in Price._meta.concrete_fields if f.name != "id"})

    result = cost_entry_record(
        provider="openai",
        model="gpt-x",
        region="eu",
        input_tokens=1000,
        output_tokens=500,
        occurred_at=AT,
        idempotency_key="eu-1",
    )

    entry = result.entry
    assert (entry.region, entry.speed, entry.amount) == ("eu", "", Decimal("0.006600"))
    assert [line.text for line in provenance_lines(entry)][-1] == (
        "x 1.1 for processing in the EU (data residency), on 0.006 USD of token prices: +0.0006 USD"
    )


def test_an_uplift_price_reads_as_a_factor_on_token_prices():
    from tracking.provenance import price_words

    assert price_words(Decimal("1.1"), "USD", "uplift") == "x 1.1 on token prices"


# --- free units per call (MiniMax prompt images) --------------------------------------------------------


@pytest.mark.parametrize("images", [1, 5, 7])
def test_a_minimax_video_bills_only_the_prompt_images_beyond_the_free_ones_as_litellm(images):
    from litellm.cost_calculator import _video_input_image_cost
    from litellm.llms.minimax.videos.transformation import _billable_input_image_count

    key = "minimax/MiniMax-H3"
    rows = _price_rows(key)
    first = rows[0]
    quote = PriceBook(rows).quote(
        provider=first.provider,
        model=first.model,
        operation=first.operation,
        variant="768p",
        at=AT,
        quantities={"input_images": images, "seconds": Decimal(6)},
    )
    billable = _billable_input_image_count(key, images)
    images_cost = _video_input_image_cost(key, "minimax", None, {"billable_input_image_count": billable})
    seconds_cost = 6 * RAW[key]["output_cost_per_second_768p"]

    assert quote.status == PricingStatus.PRICED
    parts = [part for name, part in quote.prices_used.items() if name != "free_per_call"]
    assert abs(sum(Decimal(part["amount"]) for part in parts) - Decimal(repr(images_cost + seconds_cost))) <= TOLERANCE
    assert quote.prices_used["free_per_call"]["input_image"]["free"] == min(images, 5)


@pytest.mark.django_db
def test_the_free_prompt_images_are_said_on_the_entry():
    from tracking.provenance import provenance_lines
    from tracking.services import cost_entry_record

    for row in _price_rows("minimax/MiniMax-H3"):
        row.save()

    entry = cost_entry_record(
        provider="minimax",
        model="MiniMax-H3",
        variant="768p",
        input_images=7,
        seconds="6",
        occurred_at=AT,
        idempotency_key="minimax-1",
    ).entry

    assert entry.amount == Decimal("0.560000")  # 2 x 0.04 + 6 x 0.08
    assert [line.text for line in provenance_lines(entry)] == [
        "images in the prompt: 5 of 7 free per call",
        "seconds: 6 x 0.08 = 0.48 USD",
        "images in the prompt: 2 x 0.04 = 0.08 USD",
    ]


@pytest.mark.django_db
def test_the_ledger_entry_page_shows_the_region_and_the_surcharge(admin_client):
    from django.urls import reverse

    from tracking.services import cost_entry_record

    for row in GPT_X:
        Price.objects.create(**{f.name: getattr(row, f.name) for f in Price._meta.concrete_fields if f.name != "id"})
    entry = cost_entry_record(
        provider="openai", model="gpt-x", region="eu", input_tokens=1000, occurred_at=AT, idempotency_key="eu-2"
    ).entry
    price_list = admin_client.get(reverse("admin:tracking_price_changelist") + "?unit=uplift").content.decode()

    page = admin_client.get(reverse("admin:tracking_costentry_change", args=[entry.pk])).content.decode()

    assert "x 1.1 for processing in the EU (data residency), on 0.002 USD of token prices: +0.0002 USD" in page
    assert '<div class="readonly">eu</div>' in page
    assert "x 1.1 on token prices" in price_list
