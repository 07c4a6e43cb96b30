"""python manage.py build_default_catalog --source model_prices.json [--output tracking/data/default_catalog.json]

Writes the price catalog costcontrol ships (`price_catalog_load_default` imports it): the
entries of the common providers taken from LiteLLM's file, slimmed to the price fields the
importer uses (service tiers, context-size tiers, off-peak windows and modalities included, and the
modality declarations of a model whose audio, image or video tokens are priced as text), plus EXTRAS below for what LiteLLM lacks. Same input, same bytes out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.catalog import (
    MODALITY_DECLARATIONS,
    TIERED_PRICING_FIELD,
    CatalogError,
    catalog_load,
    catalog_parse,
)

# Providers whose every priced entry is shipped: the common LLM APIs, plus the direct image APIs.
PROVIDERS = frozenset({"openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "stability", "black_forest_labs"})


def _image(provider: str, price: str) -> dict[str, Any]:
    return {"litellm_provider": provider, "mode": "image_generation", "output_cost_per_image": Decimal(price)}


# What LiteLLM's file lacks, in its own format so the importer needs no special case (USD).
# An extra replaces the fields of a LiteLLM entry with the same key.
EXTRAS: dict[str, dict[str, Any]] = {
    # OpenAI DALL-E 3 and DALL-E 2, per image by quality and size: https://openai.com/api/pricing/
    # (LiteLLM prices these only per pixel, which we do not model).
    "standard/1024-x-1024/dall-e-3": _image("openai", "0.04"),
    "standard/1024-x-1792/dall-e-3": _image("openai", "0.08"),
    "standard/1792-x-1024/dall-e-3": _image("openai", "0.08"),
    "hd/1024-x-1024/dall-e-3": _image("openai", "0.08"),
    "hd/1024-x-1792/dall-e-3": _image("openai", "0.12"),
    "hd/1792-x-1024/dall-e-3": _image("openai", "0.12"),
    "1024-x-1024/dall-e-2": _image("openai", "0.02"),
    "512-x-512/dall-e-2": _image("openai", "0.018"),
    "256-x-256/dall-e-2": _image("openai", "0.016"),
    # Replicate's official FLUX models, billed per output image: https://replicate.com/pricing and
    # each model's page. (stability-ai/sdxl and most community models are billed by GPU time, not
    # per image, so they are left out: record them with an explicit amount or GPU-seconds.)
    "replicate/black-forest-labs/flux-schnell": _image("replicate", "0.003"),
    "replicate/black-forest-labs/flux-dev": _image("replicate", "0.025"),
    "replicate/black-forest-labs/flux-pro": _image("replicate", "0.055"),
    "replicate/black-forest-labs/flux-1.1-pro": _image("replicate", "0.04"),
    "replicate/black-forest-labs/flux-1.1-pro-ultra": _image("replicate", "0.06"),
    # Gemini API Imagen 3, per image: https://ai.google.dev/gemini-api/docs/pricing
    # (LiteLLM lists -generate-001 and -fast-generate-001 only; the fast one is restated here).
    "gemini/imagen-3.0-generate-002": _image("gemini", "0.03"),
    "gemini/imagen-3.0-fast-generate-001": _image("gemini", "0.02"),
    # GPU time sampled on our own machines: the seed's GPU_BURST_COST_DOLLARS default, 0.50 USD per
    # GPU-hour. cost_per_gpu_hour is costcontrol's extension of the LiteLLM format.
    "gpu/default": {"litellm_provider": "gpu", "mode": "gpu", "cost_per_gpu_hour": Decimal("0.50")},
}


def render_json(value: Any, indent: int = 0) -> str:
    """JSON with sorted keys, two-space indent (lists too), and Decimals written as plain numbers (0.0000025)."""
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pad = "  " * (indent + 1)
        items = [
            f"{pad}{json.dumps(key, ensure_ascii=False)}: {render_json(value[key], indent + 1)}"
            for key in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        pad = "  " * (indent + 1)
        items = [f"{pad}{render_json(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return json.dumps(value, ensure_ascii=False)


def build_catalog(raw: Mapping[str, Any], *, source: str) -> dict[str, dict[str, Any]]:
    """The shipped catalog from a LiteLLM catalog: selected providers, mapped fields only, EXTRAS merged.

    Only the price fields the importer would use are written (an alias that duplicates an earlier
    key is dropped here; tiered_pricing, off_peak_pricing and search_context_cost_per_query whole),
    so loading the result reports no duplicates, no aliases and no ignored fields.
    """
    catalog_parse(raw, source=source)  # refuses a malformed file as a whole
    selected = {
        key: entry
        for key, entry in raw.items()
        if isinstance(entry, Mapping) and str(entry.get("litellm_provider") or "").lower() in PROVIDERS
    }
    # Extras first: where one prices the same thing as a LiteLLM alias, the extra wins.
    merged: dict[str, Mapping[str, Any]] = {key: {**selected.get(key, {}), **extra} for key, extra in EXTRAS.items()}
    for key, entry in selected.items():
        merged.setdefault(key, entry)

    output: dict[str, dict[str, Any]] = {}
    for price in catalog_parse(merged, source=source).prices:
        entry = merged[price.key]
        slim = output.setdefault(price.key, {"litellm_provider": entry["litellm_provider"]})
        if entry.get("mode"):
            slim["mode"] = entry["mode"]
        # "off_peak_pricing.input_cost_per_token": the whole block (its windows too).
        name = price.field.split(".", 1)[0]
        slim[name] = price.unit_price if name == price.field and isinstance(entry[name], Decimal) else entry[name]
        if name == TIERED_PRICING_FIELD and "output_cost_per_token" in entry:
            slim["output_cost_per_token"] = entry["output_cost_per_token"]  # a range without one bills this
        if price.derived:  # a modality priced as text: the declaration that the model takes it
            slim.update((flag, entry[flag]) for flag in MODALITY_DECLARATIONS if flag in entry)
    return output


class Command(BaseCommand):
    help = (
        "Build tracking/data/default_catalog.json (the catalog costcontrol ships) from LiteLLM's "
        "model_prices_and_context_window.json: common providers only, mapped price fields only, plus "
        "costcontrol's extras (OpenAI image sizes, Replicate per-image, Imagen, a GPU-hour default)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", required=True, help="LiteLLM's model_prices_and_context_window.json.")
        parser.add_argument(
            "--output",
            default=str(settings.COSTCONTROL_DEFAULT_CATALOG),
            help="Where to write the catalog (default: settings.COSTCONTROL_DEFAULT_CATALOG).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = Path(options["source"])
        output = Path(options["output"])
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            raise CommandError(f"{source}: no such file") from None
        except OSError as exc:
            raise CommandError(f"{source}: cannot read ({exc.strerror})") from None
        try:
            catalog = build_catalog(catalog_load(data, source=source.name), source=source.name)
        except CatalogError as exc:
            raise CommandError(str(exc)) from None
        text = render_json(catalog) + "\n"
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{output}: cannot write ({exc.strerror})") from None
        providers = Counter(entry["litellm_provider"] for entry in catalog.values())
        prices = sum(
            len(set(entry) - {"litellm_provider", "mode", *MODALITY_DECLARATIONS}) for entry in catalog.values()
        )
        self.stdout.write(f"Wrote {len(catalog):,} entries ({prices:,} price fields, {len(text):,} bytes) to {output}")
        for provider, count in sorted(providers.items(), key=lambda item: (-item[1], item[0])):
            self.stdout.write(f"  {count:>5,}  {provider}")
