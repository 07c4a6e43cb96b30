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
from tracking.catalog import (
    CATALOG_EPOCH,
    SKIP_DOCUMENTATION,
    SKIP_DUPLICATE,
    SKIP_NO_PRICE,
    SKIP_NO_PROVIDER,
    KIND_CONTEXT,
    KIND_SERVICE_TIER,
    NO_RULE_YET,
    NOT_A_PRICE,
    CatalogError,
    catalog_load,
    price_catalog_import,
    price_catalog_load_default,
)
from tracking.management.commands.build_default_catalog import build_catalog, render_json
from tracking.models import Price
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

REAL_FILE = Path(settings.BASE_DIR).parent / "shared/data/model_prices.json"
needs_real_file = pytest.mark.skipif(not REAL_FILE.exists(), reason=f"LiteLLM's price file is not at {REAL_FILE}")

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

GPT_4O = {
    "litellm_provider": "openai",
    "mode": "chat",
    "input_cost_per_token": 2.5e-06,
    "output_cost_per_token": 1e-05,
    "max_tokens": 16384,
    "supports_vision": True,
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


@needs_real_file
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


@needs_real_file
def test_the_command_reports_the_real_file_in_a_few_grouped_lines():
    out = StringIO()

    call_command("import_prices", str(REAL_FILE), stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == "Read 4,262 entries from model_prices.json"
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
            "code_interpreter_cost_per_session": 0.03,
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
    }
    assert report.not_prices == {NOT_A_PRICE["input_dbu_cost_per_token"]: 1}
    assert report.no_rule_yet == {NO_RULE_YET["code_interpreter_cost_per_session"]: 1}
    assert report.ignored_fields == {"other": 2}
    lines = report.summary_lines()
    assert "no usable price field (mode rerank)" in "\n".join(lines)
    assert "  service tiers (batch/flex/priority/balanced/ultrafast): 2 prices" in lines
    assert "Bill usage, but no rule in the design yet (fields, not imported):" in lines


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


@needs_real_file
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
