"""Importing the price catalog (LiteLLM format): mapping, versions, bad files, the command, the default catalog."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import PriceFactory
from tests.price_file import PRICE_FILE as REAL_FILE
from tracking.catalog import (
    ALIAS,
    CATALOG_EPOCH,
    FREE_SEARCHES,
    KIND_CONTEXT,
    KIND_DECISIONS,
    KIND_DERIVED,
    KIND_FREE_PER_CALL,
    KIND_MAX_RESULTS,
    KIND_OFF_PEAK,
    KIND_SERVICE_AND_CONTEXT,
    KIND_SERVICE_TIER,
    KIND_TIERED,
    KIND_UPLIFT,
    NOT_A_PRICE,
    REPLACED_BY_TIERS,
    SKIP_DOCUMENTATION,
    SKIP_DUPLICATE,
    SKIP_NO_PRICE,
    SKIP_NO_PROVIDER,
    CatalogError,
    catalog_load,
    price_catalog_import,
    price_catalog_load_default,
)
from tracking.management.commands.build_default_catalog import build_catalog, render_json
from tracking.models import Price
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

GPT_4O = {
    "litellm_provider": "openai",
    "mode": "chat",
    "input_cost_per_token": 2.5e-06,
    "output_cost_per_token": 1e-05,
    "max_tokens": 16384,
}


def catalog(**entries: dict) -> str:
    """A catalog file's text. Keys with characters Python names cannot hold go through `entries`."""
    return json.dumps(entries)


def open_price(provider: str, model: str, unit: str, **key: object) -> Price:
    """The open standard-tier, base-context price of a unit, unless `key` names another tier."""
    key = {"service_tier": "", "above_tokens": 0, **key}
    return Price.objects.get(provider=provider, model=model, unit=unit, valid_until__isnull=True, **key)


def price_rows() -> list[tuple]:
    return list(Price.objects.order_by("pk").values_list("pk", "unit_price", "valid_from", "valid_until"))


# --- the real LiteLLM file ------------------------------------------------------------------------


def test_it_imports_litellms_real_file_and_a_second_import_changes_nothing():
    first = price_catalog_import(data=REAL_FILE.read_bytes(), source="model_prices.json", now=NOW)

    assert first.entries_read == 4262
    assert first.added > 5000
    assert (first.changed, first.unchanged) == (0, 0)
    assert Price.objects.count() == first.added
    # Skips are grouped by reason, not listed per entry.
    assert first.skipped[SKIP_DOCUMENTATION] == 1
    assert first.skipped[SKIP_NO_PRICE] > 0
    assert set(first.skipped) <= {SKIP_DOCUMENTATION, SKIP_NO_PROVIDER, SKIP_NO_PRICE, SKIP_DUPLICATE}
    assert first.ignored_fields == {}  # every price field is modelled, or reported with its reason
    assert first.modelled[KIND_SERVICE_TIER] > 2000
    assert first.modelled[KIND_CONTEXT] > 500
    gpt_4o_input = open_price("openai", "gpt-4o", "input_token", operation="chat", variant="")
    assert gpt_4o_input.unit_price == Decimal("0.0000025")
    assert gpt_4o_input.valid_from == CATALOG_EPOCH

    second = price_catalog_import(data=REAL_FILE.read_bytes(), source="model_prices.json", now=NOW + timedelta(days=1))

    assert (second.added, second.changed, second.unchanged) == (0, 0, first.added)
    assert Price.objects.count() == first.added


def test_the_command_reports_the_real_file_in_a_few_grouped_lines():
    out = StringIO()

    call_command("import_prices", str(REAL_FILE), stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == f"Read 4,262 entries from {REAL_FILE.name}"
    assert lines[1].split()[:2] == ["added", f"{Price.objects.count():,}"]
    assert "  context-size tiers (above N tokens): 909 prices" in lines
    assert "Ignored price fields (unknown, not modelled):" not in lines
    assert len(lines) < 60  # one line per reason and per kind, never one per entry


# --- mapping ----------------------------------------------------------------------------------------


def test_it_maps_each_litellm_price_field_to_its_unit():
    data = catalog(
        **{
            "claude-x": {
                "litellm_provider": "anthropic",
                "mode": "chat",
                "input_cost_per_token": 3e-06,
                "output_cost_per_token": 1.5e-05,
                "cache_read_input_token_cost": 3e-07,
                "cache_creation_input_token_cost": 3.75e-06,
                "output_cost_per_reasoning_token": 1.5e-05,
            },
            "stability/sd3-large": {
                "litellm_provider": "stability",
                "mode": "image_generation",
                "output_cost_per_image": 0.065,
            },
            "tavily/search": {"litellm_provider": "tavily", "mode": "search", "input_cost_per_query": 0.008},
            "my-gpu": {"litellm_provider": "gpu", "mode": "gpu", "cost_per_gpu_hour": 0.5},
        }
    )

    report = price_catalog_import(data=data, source="t.json")

    assert report.added == 8
    prices = {(p.provider, p.model, p.unit): p.unit_price for p in Price.objects.all()}
    assert prices == {
        ("anthropic", "claude-x", "input_token"): Decimal("0.000003"),
        ("anthropic", "claude-x", "output_token"): Decimal("0.000015"),
        ("anthropic", "claude-x", "cached_input_token"): Decimal("0.0000003"),
        ("anthropic", "claude-x", "cache_write_token"): Decimal("0.00000375"),
        ("anthropic", "claude-x", "reasoning_token"): Decimal("0.000015"),
        ("stability", "sd3-large", "image"): Decimal("0.065"),
        ("tavily", "search", "request"): Decimal("0.008"),
        ("gpu", "my-gpu", "gpu_hour"): Decimal("0.5"),
    }
    assert open_price("stability", "sd3-large", "image").operation == "image_generation"


def test_it_splits_quality_and_size_off_the_model_name_into_the_variant():
    data = catalog(
        **{
            "azure/hd/1024-x-1024/dall-e-3": {
                "litellm_provider": "azure",
                "mode": "image_generation",
                "output_cost_per_image": 0.08,
            },
            "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1": {
                "litellm_provider": "bedrock",
                "mode": "image_generation",
                "output_cost_per_image": 0.04,
            },
        }
    )

    price_catalog_import(data=data, source="t.json")

    dall_e = open_price("azure", "dall-e-3", "image")
    assert dall_e.variant == "hd/1024-x-1024"
    sdxl = open_price("bedrock", "stability.stable-diffusion-xl-v1", "image")
    assert sdxl.variant == "1024-x-1024/50-steps"


@pytest.mark.parametrize(
    ("key", "provider", "model"),
    [
        ("stability/sd3-large", "stability", "sd3-large"),
        ("gemini/imagen-3.0-generate-002", "gemini", "imagen-3.0-generate-002"),
        ("gpt-4o", "openai", "gpt-4o"),
        ("fal_ai/fal-ai/flux/schnell", "fal_ai", "fal-ai/flux/schnell"),
        ("vertex_ai/claude-sonnet-4@20250514", "vertex_ai-anthropic_models", "claude-sonnet-4@20250514"),
    ],
)
def test_it_strips_the_provider_prefix_from_the_model_name(key, provider, model):
    data = catalog(**{key: {"litellm_provider": provider.upper(), "mode": "chat", "input_cost_per_token": 1e-06}})

    price_catalog_import(data=data, source="t.json")

    price = Price.objects.get()
    assert (price.provider, price.model) == (provider, model)


def test_whisper_seconds_are_priced_once_not_input_plus_output():
    data = catalog(
        **{
            "whisper-1": {
                "litellm_provider": "openai",
                "mode": "audio_transcription",
                "input_cost_per_second": 0.0001,
                "output_cost_per_second": 0.0001,
            }
        }
    )
    price_catalog_import(data=data, source="t.json")

    entry = cost_entry_record(provider="openai", model="whisper-1", seconds="60").entry

    assert Price.objects.get().unit_price == Decimal("0.0001")
    assert entry.amount == Decimal("0.006")


def test_input_cost_per_image_is_the_generated_image_in_image_modes_and_the_prompt_image_in_chat():
    data = catalog(
        **{
            "high/1024-x-1024/gpt-image-1": {
                "litellm_provider": "openai",
                "mode": "image_generation",
                "input_cost_per_image": 0.167,
                "input_cost_per_pixel": 1.59e-07,
            },
            "gemini-2.5-flash": {
                "litellm_provider": "gemini",
                "mode": "chat",
                "input_cost_per_token": 3e-07,
                "input_cost_per_image": 0.0011,  # an image in the prompt
            },
        }
    )

    report = price_catalog_import(data=data, source="t.json")

    image = open_price("openai", "gpt-image-1", "image")
    assert (image.variant, image.unit_price) == ("high/1024-x-1024", Decimal("0.167"))
    assert open_price("openai", "gpt-image-1", "pixel").unit_price == Decimal("0.000000159")
    assert not Price.objects.filter(provider="gemini", unit="image").exists()
    assert open_price("gemini", "gemini-2.5-flash", "input_image").unit_price == Decimal("0.0011")
    assert report.ignored_fields == {}


def test_an_alias_of_an_earlier_key_is_skipped_as_a_duplicate_and_the_first_price_wins():
    data = catalog(
        **{
            "deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat", "input_cost_per_token": 2.8e-07},
            "deepseek/deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat", "input_cost_per_token": 9e-07},
        }
    )

    report = price_catalog_import(data=data, source="t.json")

    assert report.added == 1
    assert report.skipped == {SKIP_DUPLICATE: 1}
    assert Price.objects.get().unit_price == Decimal("0.00000028")


def test_a_free_model_is_priced_at_zero_rather_than_skipped():
    data = catalog(**{"ollama/llama3": {"litellm_provider": "ollama", "mode": "chat", "input_cost_per_token": 0.0}})

    report = price_catalog_import(data=data, source="t.json")

    assert report.added == 1
    assert Price.objects.get().unit_price == Decimal(0)
    assert cost_entry_record(provider="ollama", model="llama3", input_tokens=10**6).entry.amount == Decimal(0)


def test_float_artefacts_in_the_file_round_to_the_price_that_was_meant():
    data = '{"m": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": 5.0000000000000004E-8}}'

    price_catalog_import(data=data, source="t.json")

    assert Price.objects.get().unit_price == Decimal("0.00000005")


def test_skips_and_fields_without_a_price_are_counted_by_reason_and_kind():
    data = catalog(
        sample_spec={"litellm_provider": "one of ...", "input_cost_per_token": 0.0},
        orphan={"mode": "chat", "input_cost_per_token": 1e-06},
        model_a={
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "input_cost_per_token_batches": 5e-07,
            "output_cost_per_token_priority": 2e-06,
            "input_cost_per_token_above_200k_tokens": 2e-06,
            "input_dbu_cost_per_token": 1e-05,
            "regional_processing_uplift_multiplier_eu": 1.1,
            "input_cost_per_hologram": 0.5,
        },
        reranker={"litellm_provider": "cohere", "mode": "rerank", "input_cost_per_hologram": 1e-06},
    )

    report = price_catalog_import(data=data, source="t.json")

    assert report.skipped == {SKIP_DOCUMENTATION: 1, SKIP_NO_PROVIDER: 1, SKIP_NO_PRICE: 1}
    assert report.no_price_modes == {"rerank": 1}
    assert report.modelled == {
        "text tokens (input, output, cache, reasoning)": 1,
        KIND_SERVICE_TIER: 2,
        KIND_CONTEXT: 1,
        KIND_UPLIFT: 1,
    }
    assert report.not_prices == {NOT_A_PRICE["input_dbu_cost_per_token"]: 1}
    assert report.ignored_fields == {"other": 2}
    lines = report.summary_lines()
    assert "no usable price field (mode rerank)" in "\n".join(lines)
    assert "  service tiers (batch/flex/priority/balanced/ultrafast): 2 prices" in lines
    assert "Ignored price fields (unknown, not modelled):" in lines


# --- versions ---------------------------------------------------------------------------------------


def test_a_changed_price_closes_the_old_version_and_each_event_is_priced_at_its_own_time():
    change = datetime(2026, 6, 1, tzinfo=UTC)
    price_catalog_import(data=catalog(**{"gpt-4o": GPT_4O}), source="v1.json", now=change - timedelta(days=30))
    cheaper = {**GPT_4O, "input_cost_per_token": 1e-06}

    report = price_catalog_import(data=catalog(**{"gpt-4o": cheaper}), source="v2.json", now=change)

    assert (report.added, report.changed, report.unchanged) == (0, 1, 1)
    old = Price.objects.get(unit="input_token", valid_until__isnull=False)
    new = open_price("openai", "gpt-4o", "input_token")
    assert (old.unit_price, old.valid_from, old.valid_until) == (Decimal("0.0000025"), CATALOG_EPOCH, change)
    assert (new.unit_price, new.valid_from, new.source) == (Decimal("0.000001"), change, "v2.json")
    with time_machine.travel(change + timedelta(days=1), tick=False):
        before = cost_entry_record(
            provider="openai", model="gpt-4o", input_tokens=1_000_000, occurred_at=change - timedelta(seconds=1)
        )
        after = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1_000_000)
    assert (before.entry.amount, after.entry.amount) == (Decimal("2.5"), Decimal(1))


def test_a_price_first_seen_after_its_key_was_closed_starts_where_the_last_version_ended():
    ended = datetime(2025, 1, 1, tzinfo=UTC)
    PriceFactory(provider="openai", model="gpt-4o", unit="input_token", valid_until=ended)

    price_catalog_import(data=catalog(**{"gpt-4o": GPT_4O}), source="t.json", now=NOW)

    assert open_price("openai", "gpt-4o", "input_token").valid_from == ended
    assert open_price("openai", "gpt-4o", "output_token").valid_from == CATALOG_EPOCH


def test_prices_the_catalog_does_not_mention_are_left_in_force():
    kept = PriceFactory(provider="openai", model="in-house-model", unit="input_token")

    price_catalog_import(data=catalog(**{"gpt-4o": GPT_4O}), source="t.json")

    kept.refresh_from_db()
    assert kept.valid_until is None


# --- bad files ------------------------------------------------------------------------------------


# A good entry first in each file: a half-read file must not import it.
GOOD = '{"o1": {"litellm_provider": "openai", "input_cost_per_token": 1.5e-05}, '


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + '"gpt-4o": {"litellm_provider": "openai",,}}', "bad.json: not valid JSON: Expecting property name"),
        ('{\n  "a": {}\n  "b": {}\n}', "bad.json: not valid JSON: Expecting ',' delimiter at line 3 column 3"),
        ("[1, 2]", "bad.json: expected a JSON object of model name -> entry at the top level, got a list"),
        (GOOD + '"gpt-4o": "cheap"}', 'bad.json: "gpt-4o": expected an object, got a string'),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": "abc"}}',
            'bad.json: "gpt-4o".input_cost_per_token: expected a non-negative number, got "abc"',
        ),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "output_cost_per_token": -1e-06}}',
            'bad.json: "gpt-4o".output_cost_per_token: expected a non-negative number, got -0.000001',
        ),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": NaN}}',
            'bad.json: "gpt-4o".input_cost_per_token: expected a non-negative number, got NaN',
        ),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "output_cost_per_image": Infinity}}',
            'bad.json: "gpt-4o".output_cost_per_image: expected a non-negative number, got Infinity',
        ),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": "NaN"}}',
            'bad.json: "gpt-4o".input_cost_per_token: expected a non-negative number, got "NaN"',
        ),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": true}}',
            'bad.json: "gpt-4o".input_cost_per_token: expected a non-negative number, got true',
        ),
        (
            GOOD + '"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": 1e12}}',
            'bad.json: "gpt-4o".input_cost_per_token: 1E+12 is too large for a unit price',
        ),
    ],
)
def test_a_malformed_file_is_refused_with_the_place_named_and_nothing_is_imported(text, message):
    PriceFactory(provider="openai", model="gpt-4o", unit="input_token", unit_price="0.000001")
    before = price_rows()

    with pytest.raises(CatalogError) as excinfo:
        price_catalog_import(data=text, source="bad.json")

    assert message in str(excinfo.value)
    assert price_rows() == before


def test_the_command_refuses_a_malformed_file_with_the_message_and_imports_nothing(tmp_path):
    path = tmp_path / "model_prices.json"
    path.write_text('{"o1": {"litellm_provider": "openai", "input_cost_per_token": 1.5e-05}, "gpt-4o": [1]}')

    with pytest.raises(CommandError, match=r'model_prices.json: "gpt-4o": expected an object, got a list'):
        call_command("import_prices", str(path), stdout=StringIO())

    assert not Price.objects.exists()


def test_the_command_says_when_the_file_is_missing(tmp_path):
    with pytest.raises(CommandError, match=r"nope\.json: no such file"):
        call_command("import_prices", str(tmp_path / "nope.json"), stdout=StringIO())


def test_floats_handed_in_as_a_dict_are_refused_so_none_becomes_a_price():
    with pytest.raises(CatalogError, match=r"got 2.5e-06 \(load JSON with parse_float=Decimal\)"):
        price_catalog_import(data={"gpt-4o": GPT_4O}, source="dict")


# --- options and the command ------------------------------------------------------------------------


def test_a_dry_run_reports_the_changes_and_writes_nothing():
    price_catalog_import(data=catalog(**{"gpt-4o": GPT_4O}), source="t.json", now=NOW)
    before = price_rows()
    changed = catalog(**{"gpt-4o": {**GPT_4O, "output_cost_per_token": 8e-06}, "o1": GPT_4O})

    report = price_catalog_import(data=changed, source="t.json", dry_run=True, now=NOW + timedelta(days=1))

    assert (report.added, report.changed, report.unchanged) == (2, 1, 1)
    assert price_rows() == before


def test_the_dry_run_option_of_the_command_writes_nothing(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(catalog(**{"gpt-4o": GPT_4O}))
    out = StringIO()

    call_command("import_prices", str(path), "--dry-run", stdout=out)

    assert "Dry run: nothing was written." in out.getvalue()
    assert "added 2" in out.getvalue()
    assert not Price.objects.exists()


def test_the_provider_option_imports_that_providers_prices_only(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(
        catalog(
            **{
                "gpt-4o": GPT_4O,
                "claude-x": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06},
            }
        )
    )
    out = StringIO()

    call_command("import_prices", str(path), "--provider", "Anthropic", stdout=out)

    assert set(Price.objects.values_list("provider", flat=True)) == {"anthropic"}
    assert "Read 2 entries from p.json (provider anthropic only)" in out.getvalue()


def test_the_command_prints_how_many_prices_were_added_changed_and_unchanged(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(catalog(**{"gpt-4o": GPT_4O}))
    call_command("import_prices", str(path), stdout=StringIO())
    path.write_text(catalog(**{"gpt-4o": {**GPT_4O, "output_cost_per_token": 8e-06}}))
    out = StringIO()

    call_command("import_prices", str(path), stdout=out)

    assert out.getvalue().splitlines() == [
        "Read 1 entries from prices.json",
        "  added 0   changed 1   unchanged 1",
        "Prices by rule kind (2 in all):",
        "  text tokens (input, output, cache, reasoning): 2 prices",
    ]


def test_the_command_prints_the_report_as_json(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(catalog(**{"gpt-4o": GPT_4O, "sample_spec": {}}))
    out = StringIO()

    call_command("import_prices", str(path), "--json", stdout=out)

    report = json.loads(out.getvalue())
    assert (report["entries_read"], report["added"], report["changed"], report["unchanged"]) == (2, 2, 0, 0)
    assert report["skipped"] == {SKIP_DOCUMENTATION: 1}


# --- the default catalog ------------------------------------------------------------------------------


def test_the_default_catalog_prices_gpt_4o_and_loads_twice_without_changes():
    first = price_catalog_load_default()

    assert first.added > 500
    assert (first.changed, first.unchanged) == (0, 0)
    assert first.skipped == {}  # built from the importer's own view: no aliases, nothing unpriced
    assert first.ignored_fields == {}
    entry = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500).entry
    assert entry.amount == Decimal("0.0075")

    second = price_catalog_load_default()

    assert (second.added, second.changed, second.unchanged) == (0, 0, first.added)


def test_the_default_catalog_has_image_prices_by_variant_and_a_gpu_hour_price():
    price_catalog_load_default()

    hd = cost_entry_record(provider="openai", model="dall-e-3", variant="hd/1024-x-1792", images=2).entry
    flux = cost_entry_record(provider="replicate", model="black-forest-labs/flux-schnell", images=10).entry
    gpu = cost_entry_record(provider="gpu", model="default", gpu_hours="2").entry

    assert (hd.amount, flux.amount, gpu.amount) == (Decimal("0.24"), Decimal("0.03"), Decimal("1"))
    assert open_price("openai", "dall-e-3", "image", variant="hd/1024-x-1792").source == "costcontrol default catalog"


def test_the_committed_default_catalog_is_what_build_default_catalog_makes_from_litellms_file(tmp_path):
    output = tmp_path / "catalog.json"

    call_command("build_default_catalog", "--source", str(REAL_FILE), "--output", str(output), stdout=StringIO())
    first = output.read_bytes()
    call_command("build_default_catalog", "--source", str(REAL_FILE), "--output", str(output), stdout=StringIO())

    assert output.read_bytes() == first
    assert first == Path(settings.COSTCONTROL_DEFAULT_CATALOG).read_bytes()


def test_the_default_catalog_keeps_only_mapped_fields_and_drops_aliases():
    raw = catalog_load(
        catalog(
            **{
                "gpt-4o": {**GPT_4O, "input_cost_per_token_batches": 1.25e-06},
                "openai/gpt-4o": GPT_4O,
                "together_ai/llama": {"litellm_provider": "together_ai", "input_cost_per_token": 1e-07},
            }
        ),
        source="t.json",
    )

    built = build_catalog(raw, source="t.json")

    assert built["gpt-4o"] == {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": Decimal("0.000002500000000"),
        "input_cost_per_token_batches": Decimal("0.000001250000000"),
        "output_cost_per_token": Decimal("0.000010000000000"),
    }
    assert "openai/gpt-4o" not in built
    assert "together_ai/llama" not in built
    assert '"input_cost_per_token": 0.0000025,' in render_json(built)


# --- price rules: one table per field kind ------------------------------------------------------------

BASE = {"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": 1e-06}


def open_rules(model: str = "m") -> set[tuple]:
    return set(
        Price.objects.filter(model=model, valid_until__isnull=True).values_list(
            "operation", "unit", "variant", "service_tier", "above_tokens", "unit_price"
        )
    )


@pytest.mark.parametrize(
    ("field", "mode", "unit", "variant", "service_tier", "above_tokens"),
    [
        ("input_cost_per_token_above_200k_tokens", "chat", "input_token", "", "", 200_000),
        ("output_cost_per_token_above_128k_tokens", "chat", "output_token", "", "", 128_000),
        ("cache_read_input_token_cost_above_272k_tokens", "chat", "cached_input_token", "", "", 272_000),
        ("cache_creation_input_token_cost_above_200k_tokens", "chat", "cache_write_token", "", "", 200_000),
        ("cache_creation_input_token_cost_above_1hr", "chat", "cache_write_1h_token", "", "", 0),
        (
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens",
            "chat",
            "cache_write_1h_token",
            "",
            "",
            200_000,
        ),
        ("input_cost_per_token_batches", "chat", "input_token", "", "batch", 0),
        ("input_cost_per_token_flex", "chat", "input_token", "", "flex", 0),
        ("output_cost_per_token_priority", "chat", "output_token", "", "priority", 0),
        ("cache_read_input_token_cost_balanced", "chat", "cached_input_token", "", "balanced", 0),
        ("input_cost_per_token_ultrafast", "chat", "input_token", "", "ultrafast", 0),
        ("input_cost_per_token_above_272k_tokens_priority", "chat", "input_token", "", "priority", 272_000),
        ("input_cost_per_token_priority_above_200k_tokens", "chat", "input_token", "", "priority", 200_000),
        ("input_cost_per_audio_token_above_200k_tokens_flex", "chat", "input_audio_token", "", "flex", 200_000),
        ("output_cost_per_audio_token", "chat", "output_audio_token", "", "", 0),
        ("cache_read_input_audio_token_cost_priority", "chat", "cached_audio_token", "", "priority", 0),
        ("cache_creation_input_audio_token_cost", "chat", "cache_write_audio_token", "", "", 0),
        ("input_cost_per_image_token_batches", "chat", "input_image_token", "", "batch", 0),
        ("output_cost_per_image_token_priority", "chat", "output_image_token", "", "priority", 0),
        ("cache_read_input_image_token_cost", "chat", "cached_image_token", "", "", 0),
        ("input_cost_per_video_token_batches", "chat", "input_video_token", "", "batch", 0),
        ("output_cost_per_video_token", "chat", "output_video_token", "", "", 0),
        ("output_cost_per_reasoning_token", "chat", "reasoning_token", "", "", 0),
        ("input_cost_per_character_above_128k_tokens", "chat", "input_character", "", "", 128_000),
        ("output_cost_per_character", "audio_speech", "output_character", "", "", 0),
        ("input_cost_per_image", "chat", "input_image", "", "", 0),
        ("input_cost_per_image_above_128k_tokens", "chat", "input_image", "", "", 128_000),
        ("input_cost_per_image", "image_generation", "image", "", "", 0),
        ("output_cost_per_image_1K", "image_generation", "image", "1k", "", 0),
        ("output_cost_per_image_1536", "image_generation", "image", "1536", "", 0),
        ("output_cost_per_pixel", "image_generation", "pixel", "", "", 0),
        ("ocr_cost_per_page_batches", "ocr", "page", "", "batch", 0),
        ("annotation_cost_per_page", "ocr", "page", "annotation", "", 0),
        ("google_maps_grounding_cost_per_query", "chat", "maps_query", "", "", 0),
        ("input_cost_per_audio_per_second_above_128k_tokens", "chat", "input_audio_second", "", "", 128_000),
        ("input_cost_per_video_per_second", "chat", "input_video_second", "", "", 0),
        ("output_cost_per_second_720p", "video_generation", "second", "720p", "", 0),
        ("output_cost_per_video_per_second", "video_generation", "second", "", "", 0),
        ("input_cost_per_token_cache_hit", "chat", "cached_input_token", "", "", 0),
        ("explicit_cache_read_input_token_cost", "chat", "cached_input_token", "explicit", "", 0),
        ("code_interpreter_cost_per_session", "chat", "session", "", "", 0),
        ("input_cost_per_text_message", "realtime", "message", "", "", 0),
        ("citation_cost_per_token", "chat", "citation_token", "", "", 0),
        ("ocr_cost_per_credit", "ocr", "credit", "", "", 0),
        (
            "input_cost_per_video_per_second_above_8s_interval",
            "embedding",
            "input_video_second",
            "above-8s-interval",
            "",
            0,
        ),
        (
            "input_cost_per_video_per_second_above_15s_interval",
            "embedding",
            "input_video_second",
            "above-15s-interval",
            "",
            0,
        ),
    ],
)
def test_each_price_field_becomes_a_rule_of_its_unit_tier_and_variant(
    field, mode, unit, variant, service_tier, above_tokens
):
    report = price_catalog_import(data=catalog(m={**BASE, "mode": mode, field: 0.25}), source="t.json")

    assert (mode, unit, variant, service_tier, above_tokens, Decimal("0.25")) in open_rules()
    derived = report.modelled.get(KIND_DERIVED, 0)  # a modality's other units at the text price
    assert (report.added - derived, report.ignored_fields, report.not_prices) == (2, {}, {})


def test_bedrock_guardrail_prices_become_guardrail_units_by_policy():
    prices = {"contentPolicyUnits": 0.00015, "wordPolicyUnits": 0.0}
    entry = {"litellm_provider": "bedrock", "mode": "guardrail", "guardrail_cost_per_unit": prices}

    price_catalog_import(data=catalog(**{"bedrock/guardrails": entry}), source="t.json")

    assert open_rules("guardrails") == {
        ("guardrail", "guardrail_unit", "contentPolicyUnits", "", 0, Decimal("0.00015")),
        ("guardrail", "guardrail_unit", "wordPolicyUnits", "", 0, Decimal(0)),
    }


def test_search_context_prices_become_web_search_prices_by_context_size():
    prices = {"search_context_size_low": 0.03, "search_context_size_medium": 0.035, "search_context_size_high": 0.05}

    price_catalog_import(data=catalog(m={**BASE, "search_context_cost_per_query": prices}), source="t.json")

    web = {(v, p) for _, u, v, _, _, p in open_rules() if u == "web_search"}
    assert web == {("low", Decimal("0.03")), ("medium", Decimal("0.035")), ("high", Decimal("0.05"))}


def test_an_alias_adds_no_price_and_is_reported_as_an_alias():
    data = catalog(
        m={**BASE, "mode": "audio_transcription", "input_cost_per_second": 1e-04, "output_cost_per_second": 2e-04}
    )

    report = price_catalog_import(data=data, source="t.json")

    assert open_price("acme", "m", "second").unit_price == Decimal("0.0001")
    assert report.not_prices == {ALIAS: 1}


def test_decisions_prices_are_the_decisions_operation_with_the_plain_price_where_none_is_given():
    data = catalog(
        m={
            **BASE,
            "output_cost_per_token": 5e-07,
            "output_cost_per_token_decisions": 0.0,
            "input_cost_per_token_decisions": 2e-07,
        }
    )

    price_catalog_import(data=data, source="t.json")

    decisions = {(u, p) for op, u, _, _, _, p in open_rules() if op == "decisions"}
    assert decisions == {("input_token", Decimal("2E-7")), ("output_token", Decimal(0))}
    assert ("chat", "output_token", "", "", 0, Decimal("5E-7")) in open_rules()


QWEN = {
    "litellm_provider": "dashscope",
    "mode": "chat",
    "input_cost_per_token": 5e-08,
    "output_cost_per_token": 4e-07,
    "tiered_pricing": [
        {
            "input_cost_per_token": 5e-08,
            "output_cost_per_token": 4e-07,
            "cache_read_input_token_cost": 1e-08,
            "range": [0, 256000.0],
        },
        {"input_cost_per_token": 2.5e-07, "range": [256000.0, 1000000.0]},
    ],
}


def test_tiered_pricing_ranges_become_context_tiers_and_omitted_rates_fall_back_as_litellm_does():
    report = price_catalog_import(data=catalog(qwen=QWEN), source="t.json")

    rules = {(u, a): p for _, u, _, _, a, p in open_rules("qwen")}
    assert rules == {
        ("input_token", 0): Decimal("5E-8"),
        ("output_token", 0): Decimal("4E-7"),
        ("cached_input_token", 0): Decimal("1E-8"),
        ("cache_write_token", 0): Decimal("5E-8"),  # no cache write in the range: its input rate
        ("cache_write_1h_token", 0): Decimal("5E-8"),
        ("reasoning_token", 0): Decimal("4E-7"),
        ("input_token", 256_000): Decimal("2.5E-7"),
        ("output_token", 256_000): Decimal("4E-7"),  # no output rate in the range: the model's own
        ("cached_input_token", 256_000): Decimal("2.5E-7"),
        ("cache_write_token", 256_000): Decimal("2.5E-7"),
        ("cache_write_1h_token", 256_000): Decimal("2.5E-7"),
    }
    assert report.modelled == {KIND_TIERED: 11}
    assert report.not_prices == {REPLACED_BY_TIERS: 2}


def test_tiered_pricing_rows_bill_what_litellms_cost_per_token_bills_in_each_range(monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    entry = json.loads(REAL_FILE.read_text())["dashscope/qwen-flash"]
    price_catalog_import(data=catalog(**{"dashscope/qwen-flash": entry}), source="t.json")

    for prompt, completion in ((1000, 10), (256_000, 10), (256_001, 7), (2_000_000, 3)):
        tier = max(a for _, _, _, _, a, _ in open_rules("qwen-flash") if prompt > a)
        ours = {u: p for _, u, _, _, a, p in open_rules("qwen-flash") if a == tier}
        prompt_cost, completion_cost = litellm.cost_per_token(
            model="dashscope/qwen-flash", prompt_tokens=prompt, completion_tokens=completion
        )
        assert abs(prompt * ours["input_token"] - Decimal(repr(prompt_cost))) < Decimal("1e-9"), prompt
        assert abs(completion * ours["output_token"] - Decimal(repr(completion_cost))) < Decimal("1e-9"), prompt


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ({"range": [0, 1]}, "expected a non-empty list of price ranges"),
        ([{"input_cost_per_token": 1e-06, "range": [0]}], "expected two ascending numbers"),
        ([{"input_cost_per_token": 1e-06, "range": [5, 1]}], "expected two ascending numbers"),
        ([{"input_cost_per_token": 1e-06, "range": ["0", "1k"]}], "expected two ascending numbers"),
        (
            [{"input_cost_per_token": 1e-06, "range": [0, 300]}, {"input_cost_per_token": 2e-06, "range": [200, 900]}],
            "overlaps",
        ),
        ([{"input_cost_per_token": "cheap", "range": [0, 300]}], "expected a non-negative number"),
        ([{"input_cost_per_token": 1e-06, "range": [100, 300]}], "not 0"),
        ([{"output_cost_per_token": 1e-06, "range": [0, 300]}], "needs input_cost_per_token"),
    ],
)
def test_a_malformed_tier_list_is_refused_naming_the_entry_and_nothing_is_imported(tiers, message):
    data = catalog(**{"gpt-4o": GPT_4O, "dashscope/qwen-max": {**BASE, "tiered_pricing": tiers}})

    with pytest.raises(CatalogError) as error:
        price_catalog_import(data=data, source="t.json")

    assert '"dashscope/qwen-max".tiered_pricing' in str(error.value)
    assert message in str(error.value)
    assert not Price.objects.exists()


DEEPSEEK_OFF_PEAK = {
    "litellm_provider": "deepseek",
    "mode": "chat",
    "input_cost_per_token": 6.6e-07,
    "output_cost_per_token": 1.98e-06,
    "off_peak_pricing": {
        "cache_read_input_token_cost": 2.2e-08,
        "input_cost_per_token": 3.3e-07,
        "output_cost_per_token": 9.9e-07,
        "weekday_timezone": "Asia/Shanghai",
        "windows": [
            {"hours_utc": ["00:00-01:00", "16:30-00:30"], "weekdays": [1, 2, 3, 4, 5]},
            {"hours_utc": "00:00-00:00", "weekdays": ["Sat", "sunday"]},
        ],
    },
}


def test_off_peak_prices_are_the_off_peak_tier_with_their_windows_normalised():
    report = price_catalog_import(data=catalog(**{"deepseek-v4-pro": DEEPSEEK_OFF_PEAK}), source="t.json")

    off_peak = Price.objects.filter(service_tier="off_peak").order_by("unit")
    assert [(p.unit, p.unit_price) for p in off_peak] == [
        ("cached_input_token", Decimal("2.2E-8")),
        ("input_token", Decimal("3.3E-7")),
        ("output_token", Decimal("9.9E-7")),
    ]
    assert off_peak[0].off_peak_windows == [
        {"hours_utc": ["00:00-01:00", "16:30-00:30"], "weekdays": [1, 2, 3, 4, 5], "weekday_timezone": "Asia/Shanghai"},
        {"hours_utc": ["00:00-00:00"], "weekdays": [6, 7], "weekday_timezone": "Asia/Shanghai"},
    ]
    assert report.modelled[KIND_OFF_PEAK] == 3


def test_off_peak_hours_for_every_day_apply_on_all_seven_days_in_utc():
    block = {"input_cost_per_token": 1e-07, "hours_utc": "16:30-00:30"}

    price_catalog_import(data=catalog(m={**BASE, "off_peak_pricing": block}), source="t.json")

    assert Price.objects.get(service_tier="off_peak").off_peak_windows == [
        {"hours_utc": ["16:30-00:30"], "weekdays": [1, 2, 3, 4, 5, 6, 7], "weekday_timezone": "UTC"}
    ]


def test_moved_off_peak_windows_are_a_changed_price():
    price_catalog_import(
        data=catalog(m={**BASE, "off_peak_pricing": {"input_cost_per_token": 1e-07, "hours_utc": "16:30-00:30"}}),
        source="t.json",
        now=NOW,
    )

    report = price_catalog_import(
        data=catalog(m={**BASE, "off_peak_pricing": {"input_cost_per_token": 1e-07, "hours_utc": "17:00-01:00"}}),
        source="t.json",
        now=NOW + timedelta(days=1),
    )

    assert (report.added, report.changed, report.unchanged) == (0, 1, 1)
    assert Price.objects.get(service_tier="off_peak", valid_until__isnull=True).off_peak_windows[0]["hours_utc"] == [
        "17:00-01:00"
    ]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"input_cost_per_token": 1e-07, "hours_utc": "16:30-24:30"}, 'expected "HH:MM-HH:MM"'),
        ({"input_cost_per_token": 1e-07, "hours_utc": "9-17"}, 'expected "HH:MM-HH:MM"'),
        ({"input_cost_per_token": 1e-07, "windows": [{"hours_utc": "00:00-01:00", "weekdays": [0]}]}, "weekdays 1"),
        ({"input_cost_per_token": 1e-07, "windows": [{"hours_utc": "00:00-01:00", "weekdays": [8]}]}, "weekdays 1"),
        (
            {"input_cost_per_token": 1e-07, "windows": [{"hours_utc": "00:00-01:00", "weekdays": "Mon"}]},
            "a list of weekdays",
        ),
        (
            {"input_cost_per_token": 1e-07, "hours_utc": "00:00-01:00", "weekday_timezone": "Mars/Olympus"},
            "unknown time zone",
        ),
        ({"input_cost_per_token": 1e-07}, "when is it off-peak"),
        ({"hours_utc": "00:00-01:00"}, "no off-peak price"),
        ({"input_cost_per_token": "half", "hours_utc": "00:00-01:00"}, "expected a non-negative number"),
    ],
)
def test_malformed_off_peak_windows_are_refused_naming_the_entry_and_nothing_is_imported(block, message):
    data = catalog(**{"gpt-4o": GPT_4O, "deepseek-v4-pro": {**BASE, "off_peak_pricing": block}})

    with pytest.raises(CatalogError) as error:
        price_catalog_import(data=data, source="t.json")

    assert '"deepseek-v4-pro".off_peak_pricing' in str(error.value)
    assert message in str(error.value)
    assert not Price.objects.exists()


def test_a_batch_price_and_a_long_prompt_price_are_versioned_apart_from_the_standard_price():
    gpt = {**GPT_4O, "input_cost_per_token_batches": 1.25e-06, "input_cost_per_token_above_200k_tokens": 5e-06}
    price_catalog_import(data=catalog(**{"gpt-4o": gpt}), source="v1.json", now=NOW)

    report = price_catalog_import(
        data=catalog(**{"gpt-4o": {**gpt, "input_cost_per_token_batches": 1e-06}}),
        source="v2.json",
        now=NOW + timedelta(days=1),
    )

    assert (report.added, report.changed, report.unchanged) == (0, 1, 3)
    assert open_price("openai", "gpt-4o", "input_token", service_tier="batch").unit_price == Decimal("0.000001")
    assert open_price("openai", "gpt-4o", "input_token").valid_from == CATALOG_EPOCH
    assert open_price("openai", "gpt-4o", "input_token", above_tokens=200_000).unit_price == Decimal("0.000005")


# --- modalities: a model that takes audio, images or video and the file prices them as text -----------

GPT_4O_AUDIO = {  # openai/gpt-4o-audio-preview, as if the file had no audio prices
    "litellm_provider": "openai",
    "mode": "chat",
    "input_cost_per_token": 2.5e-06,
    "output_cost_per_token": 1e-05,
    "input_cost_per_token_batches": 1.25e-06,
    "input_cost_per_token_priority": 5e-06,
    "input_cost_per_token_above_200k_tokens": 5e-06,
    "supports_audio_input": True,
    "supported_output_modalities": ["text", "audio"],
}


def test_a_model_that_takes_audio_without_an_audio_price_gets_the_text_price_rows_litellm_bills_it_at():
    report = price_catalog_import(data=catalog(**{"gpt-4o-audio": GPT_4O_AUDIO}), source="t.json")

    audio = {rule[1:] for rule in open_rules("gpt-4o-audio") if "audio" in rule[1]}
    assert audio == {
        ("input_audio_token", "", "", 0, Decimal("0.0000025")),
        ("input_audio_token", "", "batch", 0, Decimal("0.00000125")),
        ("input_audio_token", "", "priority", 0, Decimal("0.000005")),
        ("input_audio_token", "", "", 200_000, Decimal("0.000005")),
        ("output_audio_token", "", "", 0, Decimal("0.00001")),
        # No cache-read or cache-write price: the input token price, as LiteLLM bills them.
        *{(unit, "", tier, above, price) for unit in ("cached_audio_token", "cache_write_audio_token")
          for tier, above, price in (("", 0, Decimal("0.0000025")), ("batch", 0, Decimal("0.00000125")),
                                     ("priority", 0, Decimal("0.000005")), ("", 200_000, Decimal("0.000005")))},
    }  # fmt: skip
    assert report.modelled[KIND_DERIVED] == 13
    assert open_price("openai", "gpt-4o-audio", "input_audio_token").source == (
        "t.json; derived: the input token price, the model takes audio input and the file has no input audio "
        "token price"
    )
    assert open_price("openai", "gpt-4o-audio", "input_token").source == "t.json"


def test_a_modality_price_of_its_own_is_kept_and_a_text_only_model_gets_no_modality_rows():
    data = catalog(
        **{
            "gpt-4o-audio": {**GPT_4O_AUDIO, "input_cost_per_audio_token": 4e-05},
            "gpt-3.5-turbo": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 5e-07},
        }
    )

    price_catalog_import(data=data, source="t.json")

    assert open_price("openai", "gpt-4o-audio", "input_audio_token").unit_price == Decimal("0.00004")
    assert {rule[1] for rule in open_rules("gpt-3.5-turbo")} == {"input_token"}


@pytest.mark.parametrize(
    ("declared", "units"),
    [
        ({"supports_vision": True}, {"input_image_token", "cached_image_token"}),
        ({"supports_image_input": True}, {"input_image_token", "cached_image_token"}),
        ({"supported_modalities": ["text", "image"]}, {"input_image_token", "cached_image_token"}),
        ({"supported_output_modalities": ["image"]}, {"output_image_token"}),
        ({"supports_video_input": True}, {"input_video_token"}),
        ({"supported_modalities": ["video"]}, {"input_video_token"}),
        ({"supports_audio_output": True}, {"output_audio_token"}),
        ({"supports_audio_input": False, "supports_vision": None}, set()),
    ],
)
def test_each_way_a_model_declares_a_modality_gives_that_modalitys_token_rows(declared, units):
    price_catalog_import(data=catalog(m={**BASE, "output_cost_per_token": 2e-06, **declared}), source="t.json")

    assert {rule[1] for rule in open_rules()} - {"input_token", "output_token"} == units


def test_the_real_file_leaves_no_price_field_that_bills_usage_unmodelled():
    report = price_catalog_import(data=REAL_FILE.read_bytes(), source="model_prices.json", dry_run=True)

    assert report.ignored_fields == {}
    assert set(report.not_prices) == {
        ALIAS,
        NOT_A_PRICE["input_dbu_cost_per_token"],
        FREE_SEARCHES,
    }
    kinds = (KIND_SERVICE_TIER, KIND_SERVICE_AND_CONTEXT, KIND_CONTEXT, KIND_TIERED, KIND_OFF_PEAK, KIND_DECISIONS)
    for kind in (*kinds, KIND_UPLIFT, KIND_MAX_RESULTS, KIND_FREE_PER_CALL):
        assert report.modelled[kind] > 0, kind
    assert not Price.objects.exists()
