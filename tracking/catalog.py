"""The price catalog: LiteLLM's ``model_prices_and_context_window.json`` in, versioned Price rows out.

Two layers:

* :func:`catalog_parse` reads the LiteLLM format (a JSON object of model name -> entry) into
  :class:`CatalogPrice` rows, one per (provider, model, operation, unit, variant, service tier,
  context-size tier). It never touches the database and never lets a float near a price
  (``parse_float=Decimal``). Malformed input raises :class:`CatalogError` with one message
  naming the place; nothing is imported then.
* The services :func:`price_set`, :func:`price_catalog_import` and
  :func:`price_catalog_load_default` write versions: a new price closes the version in force
  instead of overwriting it, so past events keep the price they were recorded under.

A price field's name is read as ``<field>[_above_<N>k_tokens][_<tier>]`` (the tier may also come
before the size: ``_priority_above_200k_tokens``). ``<field>`` names the unit (BASE_FIELDS), the
size suffix is the context-size tier (above_tokens = N * 1000), the tier suffix the service tier
(SERVICE_TIER_SUFFIXES). Besides those: ``tiered_pricing`` range lists (rows with above_tokens =
the range's start), ``off_peak_pricing`` (service tier "off_peak" with its windows),
``search_context_cost_per_query`` (web_search by context size), ``output_cost_per_image_<size>``
and ``output_cost_per_second_<resolution>`` (variants), and ``<field>_decisions`` (the prices of
LiteLLM's /v1/decisions route: operation "decisions"). Every other field that looks like a price
is reported: NOT_A_PRICE (with the reason) or, if unknown, an "ignored price field".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from core.money import (
    PRICE_MAX_DIGITS,
    PRICE_PLACES,
    PRICE_SIGNIFICANT_DIGITS,
    parse_currency,
    parse_decimal,
)
from core.validation import clean_text

from .models import Price, ServiceTier, Unit

# A price first seen in a catalog is valid from this instant, not from the import: a fresh
# catalog must also price events recorded (or back-filled) before it was loaded.
CATALOG_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)

DEFAULT_CATALOG_SOURCE = "costcontrol default catalog"

PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_PLACES)  # Decimal("1E-15")
PRICE_LIMIT = Decimal(10) ** (PRICE_MAX_DIGITS - PRICE_PLACES)  # the column holds prices below 1e9

EXPLICIT_CACHE_VARIANT = "explicit"

# LiteLLM field -> (unit, variant). Fields of one unit and variant are listed in order of
# preference: the first present is the price, the others are aliases of the same price and are
# never added to it (whisper-1 lists input_cost_per_second and output_cost_per_second at the same
# rate: a second costs that once).
BASE_FIELDS: dict[str, tuple[str, str]] = {
    "input_cost_per_token": (Unit.INPUT_TOKEN, ""),
    "output_cost_per_token": (Unit.OUTPUT_TOKEN, ""),
    "cache_read_input_token_cost": (Unit.CACHED_INPUT_TOKEN, ""),
    "input_cost_per_token_cache_hit": (Unit.CACHED_INPUT_TOKEN, ""),
    "cache_creation_input_token_cost": (Unit.CACHE_WRITE_TOKEN, ""),
    "cache_creation_input_token_cost_above_1hr": (Unit.CACHE_WRITE_1H_TOKEN, ""),
    "output_cost_per_reasoning_token": (Unit.REASONING_TOKEN, ""),
    "input_cost_per_audio_token": (Unit.INPUT_AUDIO_TOKEN, ""),
    "output_cost_per_audio_token": (Unit.OUTPUT_AUDIO_TOKEN, ""),
    "cache_read_input_audio_token_cost": (Unit.CACHED_AUDIO_TOKEN, ""),
    "cache_creation_input_audio_token_cost": (Unit.CACHE_WRITE_AUDIO_TOKEN, ""),
    "input_cost_per_image_token": (Unit.INPUT_IMAGE_TOKEN, ""),
    "output_cost_per_image_token": (Unit.OUTPUT_IMAGE_TOKEN, ""),
    "cache_read_input_image_token_cost": (Unit.CACHED_IMAGE_TOKEN, ""),
    "input_cost_per_video_token": (Unit.INPUT_VIDEO_TOKEN, ""),
    "output_cost_per_video_token": (Unit.OUTPUT_VIDEO_TOKEN, ""),
    "input_cost_per_character": (Unit.INPUT_CHARACTER, ""),
    "output_cost_per_character": (Unit.OUTPUT_CHARACTER, ""),
    "output_cost_per_image": (Unit.IMAGE, ""),
    # In image modes (IMAGE_MODES) LiteLLM bills input_cost_per_image per generated image
    # (OpenAI gpt-image-1 by quality/size, xAI grok-imagine); elsewhere it is an image in the input.
    "input_cost_per_image": (Unit.INPUT_IMAGE, ""),
    "input_cost_per_pixel": (Unit.PIXEL, ""),
    "output_cost_per_pixel": (Unit.PIXEL, ""),
    "ocr_cost_per_page": (Unit.PAGE, ""),
    # Mistral OCR: a page with document annotation costs this instead of ocr_cost_per_page.
    "annotation_cost_per_page": (Unit.PAGE, "annotation"),
    "google_maps_grounding_cost_per_query": (Unit.MAPS_QUERY, ""),
    "input_cost_per_second": (Unit.SECOND, ""),
    "output_cost_per_second": (Unit.SECOND, ""),
    "cost_per_second": (Unit.SECOND, ""),
    "output_cost_per_video_per_second": (Unit.SECOND, ""),  # Sora, Runway: a second of generated video
    "input_cost_per_audio_per_second": (Unit.INPUT_AUDIO_SECOND, ""),
    "input_cost_per_video_per_second": (Unit.INPUT_VIDEO_SECOND, ""),
    "input_cost_per_request": (Unit.REQUEST, ""),
    "input_cost_per_query": (Unit.REQUEST, ""),
    "cost_per_gpu_hour": (Unit.GPU_HOUR, ""),  # costcontrol's extension of the format
    # DashScope: a read of an explicitly created cache (LiteLLM never bills it): the event's variant "explicit".
    "explicit_cache_read_input_token_cost": (Unit.CACHED_INPUT_TOKEN, EXPLICIT_CACHE_VARIANT),
    # OpenAI/Azure "container" entries: a code interpreter session (LiteLLM: sessions x price).
    "code_interpreter_cost_per_session": (Unit.SESSION, ""),
    # xAI voice: a text message sent in a realtime session (LiteLLM: text_messages x price).
    "input_cost_per_text_message": (Unit.MESSAGE, ""),
    # Perplexity: citation tokens, billed besides the prompt (LiteLLM: usage.citation_tokens x price).
    "citation_cost_per_token": (Unit.CITATION_TOKEN, ""),
    # Reducto OCR: credits (LiteLLM bills credits when the response reports them, else pages).
    "ocr_cost_per_credit": (Unit.CREDIT, ""),
}
IMAGE_MODES = frozenset({"image_generation", "image_edit"})
_IMAGE_MODE_FIELDS = {**BASE_FIELDS, "input_cost_per_image": (Unit.IMAGE, "")}
_PREFERENCE = {name: rank for rank, name in enumerate(BASE_FIELDS)}
# output_cost_per_image_1K (fal nano-banana), output_cost_per_second_720p (video resolutions).
# input_cost_per_video_per_second_above_8s_interval (Vertex multimodal embeddings: a second of video
# embedded at an interval above 8 s; LiteLLM declares it but never bills it): variant "above-8s-interval".
_SIZED_FIELDS = (
    (re.compile(r"output_cost_per_image_(\d+(?:\.\d+)?k?)", re.IGNORECASE), Unit.IMAGE, "{}"),
    (re.compile(r"output_cost_per_second_(\d+(?:p|k))", re.IGNORECASE), Unit.SECOND, "{}"),
    (
        re.compile(r"input_cost_per_video_per_second_above_(\d+s)_interval"),
        Unit.INPUT_VIDEO_SECOND,
        "above-{}-interval",
    ),
)

SERVICE_TIER_SUFFIXES = {
    "batches": ServiceTier.BATCH,
    "flex": ServiceTier.FLEX,
    "priority": ServiceTier.PRIORITY,
    "balanced": ServiceTier.BALANCED,
    "ultrafast": ServiceTier.ULTRAFAST,
}
# <field>_decisions: the price of that field on LiteLLM's /v1/decisions and /v1/systemone routes
# (litellm_core_utils/decisions_pricing.py): an operation of its own, not a service tier.
DECISIONS_SUFFIX = "_decisions"
DECISIONS_OPERATION = "decisions"
_TIER_SUFFIX = re.compile(r"_(batches|flex|priority|balanced|ultrafast)$")
_ABOVE_SUFFIX = re.compile(r"_above_(\d+)(k?)_tokens$")

SEARCH_CONTEXT_FIELD = "search_context_cost_per_query"
# Bedrock guardrails: {policy counter: price per unit} -> guardrail_unit, the counter (as Bedrock's trace
# names it: contentPolicyUnits, ...) the variant (LiteLLM: units x the counter's price).
GUARDRAIL_FIELD = "guardrail_cost_per_unit"
SEARCH_CONTEXT_SIZES = {
    "search_context_size_low": "low",
    "search_context_size_medium": "medium",
    "search_context_size_high": "high",
}
TIERED_PRICING_FIELD = "tiered_pricing"
OFF_PEAK_FIELD = "off_peak_pricing"
# What a tiered_pricing range may price (LiteLLM's _get_tiered_base_costs reads these).
_TIER_FIELDS = {
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_reasoning_token",
}
# What an off_peak_pricing block may price (LiteLLM's OffPeakPricing).
_OFF_PEAK_FIELDS = {
    "input_cost_per_token": Unit.INPUT_TOKEN,
    "output_cost_per_token": Unit.OUTPUT_TOKEN,
    "output_cost_per_reasoning_token": Unit.REASONING_TOKEN,
    "cache_read_input_token_cost": Unit.CACHED_INPUT_TOKEN,
    "cache_creation_input_token_cost": Unit.CACHE_WRITE_TOKEN,
}
_WINDOW = re.compile(r"\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\s*")
_WEEKDAY_NAMES = {
    "mon": 1, "monday": 1, "tue": 2, "tues": 2, "tuesday": 2, "wed": 3, "wednesday": 3,
    "thu": 4, "thur": 4, "thurs": 4, "thursday": 4, "fri": 5, "friday": 5,
    "sat": 6, "saturday": 6, "sun": 7, "sunday": 7,
}  # fmt: skip

# Fields that look like prices but are not a price of usage in the currency, with the reason.
NOT_A_PRICE: dict[str, str] = {
    "input_dbu_cost_per_token": "Databricks DBUs per token: the same token's price in DBUs, not in the currency "
    "(the USD price is modelled)",
    "output_dbu_cost_per_token": "Databricks DBUs per token: the same token's price in DBUs, not in the currency "
    "(the USD price is modelled)",
}
# provider_specific_entry holds request settings too (bedrock_invocation_schema, video frame sizes):
# only the keys of UPLIFT_PROVIDER_SPECIFIC and FREE_PER_CALL_PROVIDER_SPECIFIC bill usage.
PROVIDER_SPECIFIC_FIELD = "provider_specific_entry"
# Price multipliers: unit "uplift", the factor as the unit price, the condition an event must meet as the
# variant (tracking.pricing.UPLIFT_CONDITIONS reads it against the event's region and speed).
UPLIFT_FIELDS = {
    "regional_processing_uplift_multiplier_eu": "data_residency:eu",
    "regional_processing_uplift_multiplier_us": "data_residency:us",
    "regional_endpoint_uplift_multiplier": "vertex_location:regional",
}
UPLIFT_PROVIDER_SPECIFIC = {"us": "inference_geo:us", "fast": "speed:fast"}
# Units each call gets free: unit "free_per_call", the count as the unit price, the freed unit as the variant.
FREE_PER_CALL_PROVIDER_SPECIFIC = {"minimax_free_input_images": Unit.INPUT_IMAGE}
# Allowances the provider deducts on its invoice, not per event: read, and said so in the summary.
FREE_ALLOWANCE_FIELD = "search_free_requests"
FREE_SEARCHES = (
    "free web-search allowance per day or month, shared by a group of models (search_free_requests): every "
    "search is priced at list price, as LiteLLM's cost function; the provider's invoice deducts the allowance"
)
# tiered_pricing of search providers: input_cost_per_query by the requested result count (Exa, Firecrawl).
MAX_RESULTS_VARIANT = "max_results:"

DOCUMENTATION_KEY = "sample_spec"

# Skip reasons (ImportReport.skipped keys).
SKIP_DOCUMENTATION = "documentation entry (sample_spec)"
SKIP_NO_PROVIDER = "no litellm_provider"
SKIP_NO_PRICE = "no usable price field"
SKIP_DUPLICATE = "duplicate alias (same provider, model, operation and variant as an earlier key)"
SKIP_TOO_LONG = "name too long for the catalog"
SKIP_OTHER_PROVIDER = "other provider (--provider)"

# Reasons a present price field adds no row of its own (ImportReport.not_prices keys).
ALIAS = "alias of a preferred field for the same unit (LiteLLM bills one of them, the first present)"
REPLACED_BY_TIERS = "replaced by the tiered_pricing range starting at 0 (LiteLLM bills the tiered table)"

# Rule kinds the modelled prices are counted by (ImportReport.modelled keys).
KIND_OFF_PEAK = "off-peak windows (service tier off_peak)"
KIND_TIERED = "tiered_pricing ranges"
KIND_DECISIONS = "Decisions route prices (operation decisions)"
KIND_UPLIFT = "price multipliers (data residency, regional endpoint, US-only inference, fast mode)"
KIND_FREE_PER_CALL = "free units per call (MiniMax prompt images)"
KIND_MAX_RESULTS = "search queries by requested result count (max_results ranges)"
KIND_SERVICE_TIER = "service tiers (batch/flex/priority/balanced/ultrafast)"
KIND_SERVICE_AND_CONTEXT = "service tiers above N tokens"
KIND_CONTEXT = "context-size tiers (above N tokens)"
KIND_DERIVED = "audio, image and video tokens at the text price (the model takes them, the file has no price)"
_UNIT_KINDS = {
    Unit.INPUT_TOKEN: "text tokens (input, output, cache, reasoning)",
    Unit.OUTPUT_TOKEN: "text tokens (input, output, cache, reasoning)",
    Unit.CACHED_INPUT_TOKEN: "text tokens (input, output, cache, reasoning)",
    Unit.CACHE_WRITE_TOKEN: "text tokens (input, output, cache, reasoning)",
    Unit.REASONING_TOKEN: "text tokens (input, output, cache, reasoning)",
    Unit.CACHE_WRITE_1H_TOKEN: "1-hour cache writes",
    Unit.INPUT_AUDIO_TOKEN: "audio tokens",
    Unit.OUTPUT_AUDIO_TOKEN: "audio tokens",
    Unit.CACHED_AUDIO_TOKEN: "audio tokens",
    Unit.CACHE_WRITE_AUDIO_TOKEN: "audio tokens",
    Unit.INPUT_IMAGE_TOKEN: "image tokens",
    Unit.OUTPUT_IMAGE_TOKEN: "image tokens",
    Unit.CACHED_IMAGE_TOKEN: "image tokens",
    Unit.INPUT_VIDEO_TOKEN: "video tokens",
    Unit.OUTPUT_VIDEO_TOKEN: "video tokens",
    Unit.INPUT_CHARACTER: "characters",
    Unit.OUTPUT_CHARACTER: "characters",
    Unit.IMAGE: "images (per image, by size/quality)",
    Unit.INPUT_IMAGE: "images in the prompt",
    Unit.PIXEL: "pixels",
    Unit.PAGE: "pages (OCR, annotation)",
    Unit.WEB_SEARCH: "web search (by context size)",
    Unit.MAPS_QUERY: "maps grounding queries",
    Unit.SECOND: "seconds (audio, video by resolution)",
    Unit.INPUT_AUDIO_SECOND: "seconds of input audio and video",
    Unit.INPUT_VIDEO_SECOND: "seconds of input audio and video",
    Unit.REQUEST: "requests and queries",
    Unit.GPU_HOUR: "GPU-hours",
    Unit.SESSION: "code interpreter sessions",
    Unit.MESSAGE: "text messages",
    Unit.CITATION_TOKEN: "citation tokens",
    Unit.GUARDRAIL_UNIT: "guardrail policy units",
    Unit.CREDIT: "credits",
}

# Audio, image and video token units -> (modality, direction, the text units whose price LiteLLM bills them
# at when the model has none of their own, first present wins, and the words saying so). The quote engine
# has no such fallback: the catalog writes these rows, only for a model that takes the modality
# (modalities_taken), so an audio quantity on a text-only model is unpriced, never the text rate.
MODALITY_UNITS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    Unit.INPUT_AUDIO_TOKEN: ("audio", "input", (Unit.INPUT_TOKEN,), "the input token price"),
    Unit.CACHED_AUDIO_TOKEN: (
        "audio",
        "input",
        (Unit.CACHED_INPUT_TOKEN, Unit.INPUT_TOKEN),
        "the cache-read price (else the input token price)",
    ),
    Unit.CACHE_WRITE_AUDIO_TOKEN: (
        "audio",
        "input",
        (Unit.CACHE_WRITE_TOKEN, Unit.INPUT_TOKEN),
        "the cache-write price (else the input token price)",
    ),
    Unit.OUTPUT_AUDIO_TOKEN: ("audio", "output", (Unit.OUTPUT_TOKEN,), "the output token price"),
    Unit.INPUT_IMAGE_TOKEN: ("image", "input", (Unit.INPUT_TOKEN,), "the input token price"),
    Unit.CACHED_IMAGE_TOKEN: (
        "image",
        "input",
        (Unit.CACHED_INPUT_TOKEN, Unit.INPUT_TOKEN),
        "the cache-read price (else the input token price)",
    ),
    Unit.OUTPUT_IMAGE_TOKEN: ("image", "output", (Unit.OUTPUT_TOKEN,), "the output token price"),
    Unit.INPUT_VIDEO_TOKEN: ("video", "input", (Unit.INPUT_TOKEN,), "the input token price"),
    Unit.OUTPUT_VIDEO_TOKEN: ("video", "output", (Unit.OUTPUT_TOKEN,), "the output token price"),
}
# Entry flags that say a model takes (input) or produces (output) a modality.
_MODALITY_FLAGS = {
    "supports_audio_input": ("audio", "input"),
    "supports_audio_output": ("audio", "output"),
    "supports_vision": ("image", "input"),
    "supports_image_input": ("image", "input"),
    "supports_video_input": ("video", "input"),
}
_MODALITY_LISTS = {"supported_modalities": "input", "supported_output_modalities": "output"}
MODALITY_DECLARATIONS = (*_MODALITY_FLAGS, *_MODALITY_LISTS)

# Leading path segments that name a size, quality or step count rather than a model:
# "hd/1024-x-1792/dall-e-3", "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1".
_VARIANT_SEGMENT = re.compile(
    r"standard|hd|low|medium|high|xhigh|max|auto|(?:\d+|max)-x-(?:\d+|max)|\d+-steps|max-steps", re.IGNORECASE
)
_FIELD_LIMITS = {"provider": 100, "model": 200, "operation": 50, "variant": 100}


class CatalogError(Exception):
    """The catalog file is malformed. The message names the place; nothing was imported."""


@dataclass(frozen=True)
class CatalogPrice:
    """One unit price read from a catalog, with the key and field it came from."""

    provider: str
    model: str
    operation: str
    unit: str
    variant: str
    unit_price: Decimal
    key: str
    field: str
    service_tier: str = ""
    above_tokens: int = 0
    # Only for the off_peak tier: [{"hours_utc": [...], "weekdays": [...], "weekday_timezone": "UTC"}].
    off_peak_windows: tuple[Mapping[str, Any], ...] = ()
    kind: str = ""
    # Not the file's price for this unit: how it was derived ("" for the file's own prices).
    derived: str = ""

    @property
    def identity(self) -> tuple[str, str, str, str, str, str, int]:
        return (
            self.provider,
            self.model,
            self.operation,
            self.unit,
            self.variant,
            self.service_tier,
            self.above_tokens,
        )


@dataclass
class ParsedCatalog:
    prices: list[CatalogPrice] = field(default_factory=list)
    entries_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    no_price_modes: Counter[str] = field(default_factory=Counter)
    ignored_fields: Counter[str] = field(default_factory=Counter)
    not_prices: Counter[str] = field(default_factory=Counter)
    # Prices of a partly duplicate alias (it adds some units, others an earlier key already priced).
    shadowed_prices: int = 0

    @property
    def modelled(self) -> Counter[str]:
        return Counter(price.kind for price in self.prices)


@dataclass
class ImportReport:
    """What an import did (or, with dry_run, would do)."""

    source: str
    entries_read: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    no_price_modes: dict[str, int] = field(default_factory=dict)
    modelled: dict[str, int] = field(default_factory=dict)
    not_prices: dict[str, int] = field(default_factory=dict)
    ignored_fields: dict[str, int] = field(default_factory=dict)
    shadowed_prices: int = 0
    dry_run: bool = False
    provider: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "provider": self.provider,
            "dry_run": self.dry_run,
            "entries_read": self.entries_read,
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": dict(self.skipped),
            "no_price_modes": dict(self.no_price_modes),
            "modelled": dict(self.modelled),
            "not_prices": dict(self.not_prices),
            "ignored_fields": dict(self.ignored_fields),
            "shadowed_prices": self.shadowed_prices,
        }

    def summary_lines(self) -> list[str]:
        only = f" (provider {self.provider} only)" if self.provider else ""
        lines = [f"Read {self.entries_read:,} entries from {self.source}{only}"]
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        lines.append(f"  added {self.added:,}   changed {self.changed:,}   unchanged {self.unchanged:,}")
        if self.modelled:
            lines.append(f"Prices by rule kind ({sum(self.modelled.values()):,} in all):")
            lines.extend(
                f"  {kind}: {count:,} price{'' if count == 1 else 's'}" for kind, count in _by_count(self.modelled)
            )
        skipped_total = sum(self.skipped.values())
        if skipped_total:
            lines.append(f"Skipped {skipped_total:,} entries:")
            for reason, count in _by_count(self.skipped):
                if reason == SKIP_NO_PRICE and self.no_price_modes:
                    modes = [mode or "(no mode)" for mode, _ in _by_count(self.no_price_modes)]
                    shown = "/".join(modes[:6]) + ("/..." if len(modes) > 6 else "")
                    reason = f"{reason} (mode {shown})"
                lines.append(f"  {count:>6,}  {reason}")
        if self.shadowed_prices:
            lines.append(f"Kept an earlier key's price for {self.shadowed_prices:,} prices of partly duplicate aliases")
        if self.not_prices:
            lines.append("Price fields that add no price of their own (fields):")
            lines.extend(f"  {count:>6,}  {reason}" for reason, count in _by_count(self.not_prices))
        if self.ignored_fields:
            lines.append("Ignored price fields (unknown, not modelled):")
            lines.extend(f"  {count:>6,}  {kind}" for kind, count in _by_count(self.ignored_fields))
        return lines


def _by_count(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


# --- parsing ------------------------------------------------------------------------------------


def round_price(value: Decimal) -> Decimal:
    """The one place a catalog price is rounded: half-to-even, once, to the column's 15 places or to
    15 significant digits, whichever comes first (what SQLite's decimal column keeps exactly; a JSON
    float carries no more meaning than that either).

    LiteLLM's file holds float artefacts such as 5.0000000000000004E-8; they round to the price
    that was meant (5E-8). copy_abs() turns a "-0" into 0 (negatives are refused before this).
    Expects a finite value below PRICE_LIMIT.
    """
    if not value:
        return Decimal(0).quantize(PRICE_QUANTUM)
    exponent = max(-PRICE_PLACES, value.adjusted() + 1 - PRICE_SIGNIFICANT_DIGITS)
    rounded = value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_EVEN)
    return rounded.quantize(PRICE_QUANTUM).copy_abs()


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        shown = str(value)
    else:
        try:
            shown = json.dumps(value, default=str)
        except ValueError:
            shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:40]}... ({len(shown):,} characters)"


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: json.loads keeps the last of two silently."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _text_problem(value: str) -> str | None:
    """Why a name from the file cannot be stored (None: it can)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (\\udXXX), not a character"
    return None


def catalog_load(data: bytes | str | Mapping[str, Any], *, source: str) -> Mapping[str, Any]:
    """The top-level object of a catalog, prices as Decimals. Raises CatalogError."""
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{source}: not valid UTF-8 (byte {exc.start})") from None
    try:
        # parse_constant: NaN/Infinity become Decimals and are refused as prices, with their place.
        # parse_int too: a 5,000-digit integer is then a price too large, with its place, rather
        # than Python's int-string limit error (and no int ever meets a float).
        loaded = json.loads(
            data, parse_float=Decimal, parse_int=Decimal, parse_constant=Decimal, object_pairs_hook=_unique_keys
        )
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _DuplicateKey as exc:
        key = json.dumps(exc.args[0], ensure_ascii=False)
        raise CatalogError(f"{source}: the key {key} appears twice in one object (which value is meant?)") from None
    except RecursionError:
        raise CatalogError(f"{source}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # no known case left; a traceback would be worse
        raise CatalogError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise CatalogError(
            f"{source}: expected a JSON object of model name -> entry at the top level, got {_type_name(loaded)}"
        )
    return loaded


def _price_value(value: Any, *, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        hint = " (load JSON with parse_float=Decimal)" if isinstance(value, float) else ""
        raise CatalogError(f"{where}: expected a non-negative number, got {_shown(value)}{hint}")
    number = Decimal(value)
    if not number.is_finite() or number < 0:
        raise CatalogError(f"{where}: expected a non-negative number, got {_shown(value)}")
    # Range before rounding (quantizing 1E+400 overflows the context), and after (999999999.99999999
    # rounds to 15 significant digits: 1E+9).
    if number >= PRICE_LIMIT or round_price(number) >= PRICE_LIMIT:
        raise CatalogError(f"{where}: {_shown(value)} is too large for a unit price (below {PRICE_LIMIT})")
    return round_price(number)


def ignored_field_kind(name: str) -> str:
    """The group an unknown price field is reported under."""
    if "per_pixel" in name:
        return "per-pixel"
    if "per_character" in name:
        return "per-character"
    if "audio" in name:
        return "audio"
    if "video" in name:
        return "video"
    if "image" in name:
        return "image"
    if "query" in name or "search" in name or "grounding" in name:
        return "search/query extras"
    if "page" in name:
        return "pages"
    return "other"


def split_model_name(key: str, provider: str) -> tuple[str, str]:
    """(model, variant) from a catalog key: provider prefix stripped, size/quality segments split off.

    "azure/hd/1024-x-1024/dall-e-3" (azure) -> ("dall-e-3", "hd/1024-x-1024");
    "gemini/imagen-3.0-generate-002" (gemini) -> ("imagen-3.0-generate-002", "");
    "vertex_ai/claude-haiku-4-5" (vertex_ai-anthropic_models) -> ("claude-haiku-4-5", "").
    """
    # The provider's family prefix too: LiteLLM files vertex_ai-anthropic_models entries under
    # "vertex_ai/...", fireworks_ai-embedding-models under "fireworks_ai/...".
    prefixes = tuple(dict.fromkeys((f"{provider}/", f"{provider.split('-', 1)[0]}/")))

    def strip_provider(name: str) -> str:
        for prefix in prefixes:
            if name.lower().startswith(prefix) and len(name) > len(prefix):
                return name[len(prefix) :]
        return name

    segments = strip_provider(key).split("/")
    variant: list[str] = []
    while len(segments) > 1 and _VARIANT_SEGMENT.fullmatch(segments[0]):
        variant.append(segments.pop(0).lower())
    # "1024-x-1024/50-steps/bedrock/amazon.nova-canvas-v1:0": the prefix may follow the variant.
    return strip_provider("/".join(segments)), "/".join(variant)


def unit_fields(mode: str) -> dict[str, tuple[str, str]]:
    """Field -> (unit, variant) for an entry of this mode."""
    return _IMAGE_MODE_FIELDS if mode in IMAGE_MODES else BASE_FIELDS


def split_price_field(name: str) -> tuple[str, str, int]:
    """(base field, service tier, above_tokens) of a price field's name.

    "input_cost_per_token_above_272k_tokens_priority" -> ("input_cost_per_token", "priority", 272000);
    "cache_creation_input_token_cost_above_1hr" -> (itself, "", 0): a unit of its own.
    """
    base, tier, above = name, "", 0
    for _ in range(2):  # the tier before or after the size: _priority_above_200k_tokens
        match = _TIER_SUFFIX.search(base)
        if match and not tier:
            tier, base = SERVICE_TIER_SUFFIXES[match.group(1)], base[: match.start()]
        match = _ABOVE_SUFFIX.search(base)
        if match and not above:
            above, base = int(match.group(1)) * (1000 if match.group(2) else 1), base[: match.start()]
    return base, tier, above


def _base_unit(base: str, fields: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
    if base in fields:
        return fields[base]
    for pattern, unit, variant in _SIZED_FIELDS:
        match = pattern.fullmatch(base)
        if match:
            return unit, variant.format(match.group(1).lower())
    return None


def _rule_kind(unit: str, service_tier: str, above_tokens: int) -> str:
    if service_tier:
        return KIND_SERVICE_AND_CONTEXT if above_tokens else KIND_SERVICE_TIER
    if above_tokens:
        return KIND_CONTEXT
    return _UNIT_KINDS[unit]


@dataclass(frozen=True)
class _Row:
    """One price of an entry, before the entry's provider, model and variant are known."""

    unit: str
    variant: str
    service_tier: str
    above_tokens: int
    field: str
    value: Decimal
    kind: str
    off_peak_windows: tuple[Mapping[str, Any], ...] = ()
    derived: str = ""

    @property
    def slot(self) -> tuple[str, str, str, int]:
        return (self.unit, self.variant, self.service_tier, self.above_tokens)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    number = Decimal(value)
    return number if number.is_finite() else None


def _tier_rows(value: Any, entry: Mapping[str, Any], where: str, *, entry_where: str) -> list[_Row]:
    """The rows of a tiered_pricing range list (of token prices by prompt size, or of a search provider's
    query prices by result count).

    As LiteLLM's _get_tiered_base_costs: one range is chosen by the prompt's size and prices every
    token of the call; a range that omits cache reads or writes bills them at its input rate (and
    1-hour writes at its write rate); one that omits the output rate bills the model's own.
    """
    if not isinstance(value, list) or not value:
        raise CatalogError(f"{where}: expected a non-empty list of price ranges, got {_shown(value)}")
    if all(isinstance(tier, Mapping) and "max_results_range" in tier for tier in value):
        return _max_results_rows(value, where)
    ranges: list[tuple[Decimal, Decimal, Mapping[str, Decimal], str]] = []
    for index, tier in enumerate(value):
        place = f"{where}[{index}]"
        if not isinstance(tier, Mapping):
            raise CatalogError(f"{place}: expected an object with a range and its prices, got {_type_name(tier)}")
        start, end = _range(tier.get("range"), where=f"{place}.range")
        prices = {}
        for name, price in tier.items():
            if name == "range":
                continue
            if name not in _TIER_FIELDS:
                raise CatalogError(f"{place}: {json.dumps(name)} is not a price a range can hold")
            prices[name] = _price_value(price, where=f"{place}.{name}")
        if "input_cost_per_token" not in prices:
            raise CatalogError(f"{place}: a range needs input_cost_per_token")
        ranges.append((start, end, prices, place))
    ranges.sort(key=lambda item: item[0])
    if ranges[0][0] != 0:
        raise CatalogError(
            f"{ranges[0][3]}.range: the first range starts at {ranges[0][0]}, not 0 (which price is below it?)"
        )
    for (_, end, _, place), (start, _, _, next_place) in pairwise(ranges):
        if start < end:
            raise CatalogError(f"{next_place}.range: overlaps {place}.range (starts at {start}, before {end})")
        if start > end:
            raise CatalogError(f"{next_place}.range: leaves a gap after {place}.range ({end} to {start})")
    own_output = entry.get("output_cost_per_token")
    rows = []
    for start, _, prices, _ in ranges:
        above = int(start)
        write = prices.get("cache_creation_input_token_cost", prices["input_cost_per_token"])
        chosen = {
            Unit.INPUT_TOKEN: prices["input_cost_per_token"],
            Unit.CACHED_INPUT_TOKEN: prices.get("cache_read_input_token_cost", prices["input_cost_per_token"]),
            Unit.CACHE_WRITE_TOKEN: write,
            Unit.CACHE_WRITE_1H_TOKEN: prices.get("cache_creation_input_token_cost_above_1hr", write),
        }
        if "output_cost_per_token" in prices:
            chosen[Unit.OUTPUT_TOKEN] = prices["output_cost_per_token"]
        elif own_output is not None:
            chosen[Unit.OUTPUT_TOKEN] = _price_value(own_output, where=f"{entry_where}.output_cost_per_token")
        reasoning = prices.get("output_cost_per_reasoning_token", prices.get("output_cost_per_token"))
        if reasoning is not None:
            chosen[Unit.REASONING_TOKEN] = reasoning
        rows.extend(
            _Row(unit, "", "", above, TIERED_PRICING_FIELD, price, KIND_TIERED) for unit, price in chosen.items()
        )
    return rows


def _free_count(value: Any, *, where: str) -> Decimal:
    number = _number(value)
    if number is None or number < 0 or number != number.to_integral_value():
        raise CatalogError(f"{where}: expected a whole number of free units, got {_shown(value)}")
    return _price_value(value, where=where)


def _max_results_rows(value: list[Mapping[str, Any]], where: str) -> list[_Row]:
    """A search provider's price per query by the requested result count: a request row per range, its
    variant naming the range ("max_results:0-25"); tracking.pricing picks the range holding the event's
    max_results as LiteLLM's search_provider_cost_per_query does."""
    rows = []
    for index, tier in enumerate(value):
        start, end = _range(tier["max_results_range"], where=f"{where}[{index}].max_results_range")
        price = _price_value(tier.get("input_cost_per_query"), where=f"{where}[{index}].input_cost_per_query")
        variant = f"{MAX_RESULTS_VARIANT}{start:f}-{end:f}"
        rows.append(_Row(Unit.REQUEST, variant, "", 0, TIERED_PRICING_FIELD, price, KIND_MAX_RESULTS))
    return rows


def _range(value: Any, *, where: str) -> tuple[Decimal, Decimal]:
    numbers = [_number(item) for item in value] if isinstance(value, list) else []
    if len(numbers) != 2 or None in numbers or numbers[0] < 0 or numbers[0] >= numbers[1]:  # type: ignore[operator]
        raise CatalogError(f"{where}: expected two ascending numbers [start, end], got {_shown(value)}")
    start, end = numbers
    if start != start.to_integral_value():  # type: ignore[union-attr]
        raise CatalogError(f"{where}: a range starts at a whole number of tokens, got {start}")
    return start, end  # type: ignore[return-value]


def _hours(value: Any, *, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise CatalogError(f'{where}: expected "HH:MM-HH:MM" or a list of them, got {_shown(value)}')
    hours = []
    for item in items:
        match = _WINDOW.fullmatch(item) if isinstance(item, str) else None
        if match is None:
            raise CatalogError(f'{where}: expected "HH:MM-HH:MM" (UTC, 00:00 to 23:59), got {_shown(item)}')
        hours.append("{}:{}-{}:{}".format(*match.groups()))
    return hours


def _weekdays(value: Any, *, where: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise CatalogError(f"{where}: expected a list of weekdays (1 = Monday .. 7 = Sunday), got {_shown(value)}")
    days = set()
    for item in value:
        number = _number(item)
        day = int(number) if number is not None and number == number.to_integral_value() else None
        if isinstance(item, str):
            day = _WEEKDAY_NAMES.get(item.strip().lower())
        if day is None or not 1 <= day <= 7:
            raise CatalogError(f"{where}: expected weekdays 1 (Monday) to 7 (Sunday), got {_shown(item)}")
        days.add(day)
    return sorted(days)


def off_peak_windows(value: Mapping[str, Any], *, where: str) -> tuple[dict[str, Any], ...]:
    """An off_peak_pricing block's windows, normalised: each {"hours_utc": [...], "weekdays": [...],
    "weekday_timezone": ...}. As LiteLLM's _is_off_peak: hours are UTC, start inclusive, end
    exclusive, a window may wrap past midnight and one whose ends are equal is the whole day; the
    weekday is read on the calendar of weekday_timezone (default UTC); no weekdays: every day.
    """
    zone = value.get("weekday_timezone", "UTC")
    if not isinstance(zone, str) or not zone.strip():
        raise CatalogError(f"{where}.weekday_timezone: expected an IANA time zone name, got {_shown(zone)}")
    try:
        ZoneInfo(zone.strip())
    except (ValueError, ZoneInfoNotFoundError):
        raise CatalogError(f"{where}.weekday_timezone: unknown time zone {_shown(zone)}") from None
    zone = zone.strip()
    every_day = list(range(1, 8))
    windows = []
    if "hours_utc" in value:
        windows.append({"hours_utc": _hours(value["hours_utc"], where=f"{where}.hours_utc"), "weekdays": every_day})
    rules = value.get("windows", [])
    if not isinstance(rules, list):
        raise CatalogError(f"{where}.windows: expected a list of windows, got {_shown(rules)}")
    for index, rule in enumerate(rules):
        place = f"{where}.windows[{index}]"
        if not isinstance(rule, Mapping) or "hours_utc" not in rule or set(rule) - {"hours_utc", "weekdays"}:
            raise CatalogError(f"{place}: expected an object with hours_utc and weekdays, got {_shown(rule)}")
        weekdays = _weekdays(rule["weekdays"], where=f"{place}.weekdays") if "weekdays" in rule else every_day
        windows.append({"hours_utc": _hours(rule["hours_utc"], where=f"{place}.hours_utc"), "weekdays": weekdays})
    if not windows:
        raise CatalogError(f"{where}: no hours_utc or windows (when is it off-peak?)")
    return tuple({**window, "weekday_timezone": zone} for window in windows)


def off_peak_windows_normalised(windows: Any) -> tuple[dict[str, Any], ...]:
    """Windows in Price.off_peak_windows' form ([{"hours_utc", "weekdays", "weekday_timezone"}]),
    checked and normalised. All windows must share one weekday_timezone. Raises CatalogError."""
    if not isinstance(windows, list) or not windows:
        raise CatalogError(f"expected a list of windows, got {_shown(windows)}")
    zones = {window.get("weekday_timezone", "UTC") if isinstance(window, Mapping) else None for window in windows}
    if len(zones) != 1 or None in zones:
        raise CatalogError("every window needs the same weekday_timezone (default UTC)")
    rules = [{name: value for name, value in window.items() if name != "weekday_timezone"} for window in windows]
    return off_peak_windows({"windows": rules, "weekday_timezone": zones.pop()}, where="off_peak_windows")


def _off_peak_rows(value: Any, where: str) -> list[_Row]:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{where}: expected an object of off-peak prices and windows, got {_type_name(value)}")
    unknown = set(value) - set(_OFF_PEAK_FIELDS) - {"hours_utc", "windows", "weekday_timezone"}
    if unknown:
        raise CatalogError(f"{where}: {json.dumps(sorted(unknown)[0])} is not an off-peak price or window")
    windows = off_peak_windows(value, where=where)
    rows = [
        _Row(
            unit,
            "",
            ServiceTier.OFF_PEAK,
            0,
            f"{OFF_PEAK_FIELD}.{name}",
            _price_value(value[name], where=f"{where}.{name}"),
            KIND_OFF_PEAK,
            windows,
        )
        for name, unit in _OFF_PEAK_FIELDS.items()
        if name in value
    ]
    if not rows:
        raise CatalogError(f"{where}: no off-peak price")
    return rows


def _entry_rows(entry: Mapping[str, Any], mode: str, where: str) -> tuple[list[_Row], list[tuple[str, str]]]:
    """The prices of one entry, and a note (category, reason) for each price field that adds none.

    Categories: "not_prices", "ignored_fields". Raises CatalogError.
    """
    fields = unit_fields(mode)
    candidates: list[tuple[tuple[int, str], _Row]] = []
    notes: list[tuple[str, str]] = []
    tiered: list[_Row] | None = None
    for name, value in entry.items():
        place = f"{where}.{name}"
        if name in NOT_A_PRICE:
            notes.append(("not_prices", NOT_A_PRICE[name]))
        elif name in UPLIFT_FIELDS:
            factor = _price_value(value, where=place)
            candidates.append(((0, name), _Row(Unit.UPLIFT, UPLIFT_FIELDS[name], "", 0, name, factor, KIND_UPLIFT)))
        elif name == FREE_ALLOWANCE_FIELD:
            notes.append(("not_prices", FREE_SEARCHES))
        elif name == PROVIDER_SPECIFIC_FIELD:
            if isinstance(value, Mapping):
                candidates.extend(
                    (
                        (0, f"{name}.{sub}"),
                        _Row(
                            Unit.UPLIFT,
                            condition,
                            "",
                            0,
                            f"{name}.{sub}",
                            _price_value(value[sub], where=f"{place}.{sub}"),
                            KIND_UPLIFT,
                        ),
                    )
                    for sub, condition in UPLIFT_PROVIDER_SPECIFIC.items()
                    if sub in value
                )
                candidates.extend(
                    (
                        (0, f"{name}.{sub}"),
                        _Row(
                            Unit.FREE_PER_CALL,
                            str(unit),
                            "",
                            0,
                            f"{name}.{sub}",
                            _free_count(value[sub], where=f"{place}.{sub}"),
                            KIND_FREE_PER_CALL,
                        ),
                    )
                    for sub, unit in FREE_PER_CALL_PROVIDER_SPECIFIC.items()
                    if sub in value
                )
        elif name == TIERED_PRICING_FIELD:
            tiered = _tier_rows(value, entry, place, entry_where=where)
        elif name == OFF_PEAK_FIELD:
            candidates.extend(((0, name), row) for row in _off_peak_rows(value, place))
        elif name == GUARDRAIL_FIELD:
            if not isinstance(value, Mapping) or not value:
                raise CatalogError(f"{place}: expected an object of policy counter -> price, got {_shown(value)}")
            for counter, price in value.items():
                row = _Row(
                    Unit.GUARDRAIL_UNIT,
                    counter.strip(),
                    "",
                    0,
                    name,
                    _price_value(price, where=f"{place}.{counter}"),
                    _UNIT_KINDS[Unit.GUARDRAIL_UNIT],
                )
                candidates.append(((0, name), row))
        elif name == SEARCH_CONTEXT_FIELD:
            if not isinstance(value, Mapping) or not value or set(value) - set(SEARCH_CONTEXT_SIZES):
                raise CatalogError(
                    f"{place}: expected an object of {'/'.join(SEARCH_CONTEXT_SIZES)} -> price, got {_shown(value)}"
                )
            for size, price in value.items():
                row = _Row(
                    Unit.WEB_SEARCH,
                    SEARCH_CONTEXT_SIZES[size],
                    "",
                    0,
                    name,
                    _price_value(price, where=f"{place}.{size}"),
                    _UNIT_KINDS[Unit.WEB_SEARCH],
                )
                candidates.append(((0, name), row))
        else:
            decisions = name.endswith(DECISIONS_SUFFIX)
            base, tier, above = split_price_field(name.removesuffix(DECISIONS_SUFFIX))
            unit = _base_unit(base, fields)
            if unit is None:
                if "cost" in name or "pricing" in name:
                    notes.append(("ignored_fields", ignored_field_kind(name)))
                continue
            price = _price_value(value, where=place)
            if not decisions:  # a Decisions price is read from the entry's Decisions view
                row = _Row(unit[0], unit[1], tier, above, name, price, _rule_kind(unit[0], tier, above))
                candidates.append(((_PREFERENCE.get(base, len(_PREFERENCE)), name), row))
    rows: dict[tuple[str, str, str, int], _Row] = {}
    for _, row in sorted(candidates, key=lambda item: item[0]):
        if row.slot in rows:
            notes.append(("not_prices", ALIAS))
        else:
            rows[row.slot] = row
    if tiered:
        covered = {row.unit for row in tiered}
        for slot, row in list(rows.items()):
            if row.unit in covered and row.service_tier == "":
                del rows[slot]
                notes.append(("not_prices", REPLACED_BY_TIERS))
        rows.update((row.slot, row) for row in tiered)
    rows.update((row.slot, row) for row in _modality_rows(entry, list(rows.values())))
    return list(rows.values()), notes


def modalities_taken(entry: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(modality, direction) pairs an entry declares: ("audio", "input") for supports_audio_input or
    "audio" in supported_modalities, ("image", "output") for "image" in supported_output_modalities, ..."""
    taken = {pair for flag, pair in _MODALITY_FLAGS.items() if entry.get(flag) is True}
    for name, direction in _MODALITY_LISTS.items():
        listed = entry.get(name)
        if isinstance(listed, list):
            taken.update((modality, direction) for modality in ("audio", "image", "video") if modality in listed)
    return frozenset(taken)


def _modality_rows(entry: Mapping[str, Any], rows: list[_Row]) -> list[_Row]:
    """The audio, image and video token rows LiteLLM's cost function implies and the file does not state.

    For a model that takes a modality (it declares it, or prices one of its token units), each of the
    modality's token units without a price in the file gets the text unit's rows it is billed at
    (MODALITY_UNITS), with the same service tiers, context tiers and off-peak windows; batch rows are
    chosen apart, as the quote engine's batch prices stand alone.
    """
    by_unit: dict[str, list[_Row]] = {}
    for row in rows:
        by_unit.setdefault(row.unit, []).append(row)
    taken = modalities_taken(entry) | {MODALITY_UNITS[unit][:2] for unit in by_unit if unit in MODALITY_UNITS}
    derived = []
    for unit, (modality, direction, sources, words) in MODALITY_UNITS.items():
        if (modality, direction) not in taken or unit in by_unit:
            continue
        note = f"derived: {words}, the model takes {modality} {direction} and the file has no {Unit(unit).label} price"
        for batch in (False, True):
            for source in sources:
                picked = [row for row in by_unit.get(source, ()) if (row.service_tier == ServiceTier.BATCH) == batch]
                if picked:
                    derived.extend(replace(row, unit=unit, kind=KIND_DERIVED, derived=note) for row in picked)
                    break
    return derived


def _decisions_rows(entry: Mapping[str, Any], mode: str, where: str) -> list[_Row]:
    """The prices of LiteLLM's Decisions route: the entry with each <field>_decisions in place of
    <field> (litellm_core_utils/decisions_pricing.apply_decisions_pricing)."""
    overrides = {name.removesuffix(DECISIONS_SUFFIX): name for name in entry if name.endswith(DECISIONS_SUFFIX)}
    if not overrides:
        return []
    view = {name: value for name, value in entry.items() if not name.endswith(DECISIONS_SUFFIX)}
    view.update((plain, entry[name]) for plain, name in overrides.items())
    rows, _ = _entry_rows(view, mode, where)
    return [
        _Row(
            row.unit,
            row.variant,
            row.service_tier,
            row.above_tokens,
            overrides.get(row.field, row.field),
            row.value,
            KIND_DECISIONS,
            row.off_peak_windows,
            row.derived,
        )
        for row in rows
    ]


def catalog_parse(data: bytes | str | Mapping[str, Any], *, source: str, provider: str | None = None) -> ParsedCatalog:
    """Read a LiteLLM-format catalog. Raises CatalogError (naming the place) on malformed input.

    The whole file is validated even when `provider` selects a part of it: a broken file is
    refused, not half-read. When two keys price the same identity, the first in file order wins.
    """
    raw = catalog_load(data, source=source)
    only = provider.strip().lower() if provider else None
    parsed = ParsedCatalog()
    # identity -> its index in parsed.prices: the first key's price wins, but a price the file states
    # beats one an earlier alias derived (an alias may price the audio its first key only declares).
    seen: dict[tuple[str, str, str, str, str, str, int], int] = {}
    for key, entry in raw.items():
        parsed.entries_read += 1
        where = f"{source}: {json.dumps(key)}"
        if not isinstance(entry, Mapping):
            raise CatalogError(f"{where}: expected an object, got {_type_name(entry)}")
        problem = "is empty" if not key.strip() else _text_problem(key)
        if problem:
            raise CatalogError(f"{where}: the model name {problem}")
        if key == DOCUMENTATION_KEY:
            parsed.skipped[SKIP_DOCUMENTATION] += 1
            continue
        raw_provider = entry.get("litellm_provider")
        mode = entry.get("mode")
        mode = "" if mode is None else mode  # not `or ""`: [] or {} would pass for no mode
        if raw_provider is not None and not isinstance(raw_provider, str):
            raise CatalogError(f"{where}.litellm_provider: expected a string, got {_shown(raw_provider)}")
        if not isinstance(mode, str):
            raise CatalogError(f"{where}.mode: expected a string, got {_shown(mode)}")
        for name, text in (("litellm_provider", raw_provider or ""), ("mode", mode)):
            problem = _text_problem(text)
            if problem:
                raise CatalogError(f"{where}.{name}: {problem}")
        mode = mode.strip()

        rows, notes = _entry_rows(entry, mode, where)
        operations = [(mode, row) for row in rows]
        operations.extend((DECISIONS_OPERATION, row) for row in _decisions_rows(entry, mode, where))
        entry_provider = (raw_provider or "").strip().lower()
        if not entry_provider:
            parsed.skipped[SKIP_NO_PROVIDER] += 1
            continue
        if only and entry_provider != only:
            parsed.skipped[SKIP_OTHER_PROVIDER] += 1
            continue

        for category, reason in notes:
            getattr(parsed, category)[reason] += 1
        if not operations:
            parsed.skipped[SKIP_NO_PRICE] += 1
            parsed.no_price_modes[mode] += 1
            continue
        model, key_variant = split_model_name(key, entry_provider)
        names_by_field = {"provider": entry_provider, "model": model, "operation": mode, "variant": key_variant}
        longest_variant = max(len(row.variant) for _, row in operations) + 1
        if any(len(value) > _FIELD_LIMITS[name] for name, value in names_by_field.items()) or (
            len(key_variant) + longest_variant > _FIELD_LIMITS["variant"]
        ):
            parsed.skipped[SKIP_TOO_LONG] += 1
            continue

        fresh = []
        replaced = 0
        for operation, row in operations:
            variant = "/".join(part for part in (key_variant, row.variant) if part)
            price = CatalogPrice(
                entry_provider,
                model,
                operation,
                row.unit,
                variant,
                row.value,
                key,
                row.field,
                service_tier=row.service_tier,
                above_tokens=row.above_tokens,
                off_peak_windows=row.off_peak_windows,
                kind=row.kind,
                derived=row.derived,
            )
            index = seen.get(price.identity)
            if index is None:
                seen[price.identity] = len(parsed.prices) + len(fresh)
                fresh.append(price)
            elif parsed.prices[index].derived and not price.derived:
                parsed.prices[index] = price
                replaced += 1
        if not fresh and not replaced:
            parsed.skipped[SKIP_DUPLICATE] += 1
            continue
        # An alias that adds a unit the first key lacked contributes that unit only.
        parsed.shadowed_prices += len(operations) - len(fresh) - replaced
        parsed.prices.extend(fresh)
    return parsed


# --- services -------------------------------------------------------------------------------------


def _lock_prices() -> None:
    """Serialise catalog writers: two imports (or an import and price_set) must not both open a version.

    PostgreSQL: SHARE ROW EXCLUSIVE conflicts with itself and with row writes, not with reads, so
    events are still priced meanwhile. SQLite: the write lock serialises writers already.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {Price._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")


def _text(value: Any, name: str, *, required: bool = False) -> str:
    return clean_text(value, field=name, max_length=_FIELD_LIMITS.get(name, 200), required=required)


_KEY_FIELDS = ("provider", "model", "operation", "unit", "variant", "service_tier", "above_tokens")


def price_set(
    *,
    provider: str,
    model: str,
    operation: str,
    unit: str,
    variant: str = "",
    service_tier: str = "",
    above_tokens: int = 0,
    off_peak_windows: list[Mapping[str, Any]] | None = None,
    unit_price: Decimal | int | str,
    currency: str = "USD",
    valid_from: datetime,
    source: str = "",
) -> Price:
    """Put a price in force from `valid_from`, closing the version in force at that instant.

    A price's key is (provider, model, operation, unit, variant, service_tier, above_tokens).
    The same price, currency and off-peak windows as the open version change nothing and return
    that version. `off_peak_windows` (in off_peak_pricing's format, see off_peak_windows()) is
    required for the off_peak tier and refused for any other.
    Raises ValidationError naming the field for bad input, and for a `valid_from` not later than
    the open version's (history is appended to, not rewritten); nothing is written then.
    """
    provider = _text(provider, "provider", required=True).lower()
    model = _text(model, "model", required=True)
    operation = _text(operation, "operation")
    variant = _text(variant, "variant")
    source = _text(source, "source")
    if unit not in Unit.values:
        raise ValidationError({"unit": f"unknown unit {unit!r} (one of {', '.join(Unit.values)})"})
    if service_tier not in ServiceTier.values:
        raise ValidationError(
            {"service_tier": f"unknown service tier {service_tier!r} (one of {', '.join(ServiceTier.values)})"}
        )
    if isinstance(above_tokens, bool) or not isinstance(above_tokens, int) or above_tokens < 0:
        raise ValidationError({"above_tokens": f"must be a whole number of tokens, 0 or more, got {above_tokens!r}"})
    windows: list[dict[str, Any]] = []
    if (service_tier == ServiceTier.OFF_PEAK) != bool(off_peak_windows):
        raise ValidationError({"off_peak_windows": "required for the off_peak service tier, and only for it"})
    if off_peak_windows:
        try:
            windows = [dict(window) for window in off_peak_windows_normalised(off_peak_windows)]
        except CatalogError as exc:
            raise ValidationError({"off_peak_windows": str(exc)}) from None
    price = parse_decimal(unit_price, field="unit_price")
    if price < 0:
        raise ValidationError({"unit_price": f"must not be negative, got {unit_price}"})
    # Range first: quantizing a huge value to 15 places exceeds the context's precision.
    if price >= PRICE_LIMIT:
        raise ValidationError({"unit_price": f"{unit_price} is out of range (below {PRICE_LIMIT})"})
    if price != price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN):
        raise ValidationError({"unit_price": f"{unit_price} has more than {PRICE_PLACES} decimal places"})
    if price and len(price.normalize().as_tuple().digits) > PRICE_SIGNIFICANT_DIGITS:
        raise ValidationError(
            {
                "unit_price": f"{unit_price} has more than {PRICE_SIGNIFICANT_DIGITS} significant digits (SQLite keeps no more)"
            }
        )
    price = price.quantize(PRICE_QUANTUM).copy_abs()
    currency = parse_currency(currency)
    if not isinstance(valid_from, datetime):
        raise ValidationError({"valid_from": "must be a timestamp"})
    if timezone.is_naive(valid_from):
        raise ValidationError({"valid_from": "must include a time zone"})

    key = {
        "provider": provider,
        "model": model,
        "operation": operation,
        "unit": unit,
        "variant": variant,
        "service_tier": service_tier,
        "above_tokens": above_tokens,
    }
    with transaction.atomic():
        _lock_prices()
        versions = Price.objects.filter(**key)
        current = versions.filter(valid_until__isnull=True).order_by("-valid_from").first()
        if current is not None:
            if current.unit_price == price and current.currency == currency and current.off_peak_windows == windows:
                return current
            if valid_from <= current.valid_from:
                raise ValidationError(
                    {
                        "valid_from": f"must be later than {current.valid_from.isoformat()}, "
                        f"when the price in force ({current.unit_price.normalize():f} {current.currency}) began"
                    }
                )
            Price.objects.filter(pk=current.pk).update(valid_until=valid_from)
        else:
            last_end = versions.aggregate(end=Max("valid_until"))["end"]
            if last_end is not None and valid_from < last_end:
                raise ValidationError(
                    {"valid_from": f"must not be earlier than {last_end.isoformat()}, when the last version ended"}
                )
        return Price.objects.create(
            **key,
            off_peak_windows=windows,
            unit_price=price,
            currency=currency,
            valid_from=valid_from,
            valid_until=None,
            source=source,
        )


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def price_catalog_import(
    *,
    data: bytes | str | Mapping[str, Any],
    source: str,
    dry_run: bool = False,
    provider: str | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a LiteLLM-format catalog in one transaction and report what changed.

    `progress(done, total)` is called as the parsed prices are compared (for a progress bar).

    For each price: no open version of its key -> added, valid from CATALOG_EPOCH (or from the
    end of the key's last closed version); the same price -> unchanged; a different price ->
    the open version is closed at `now` and the new one opens at `now` ("changed"). Keys the
    catalog does not mention are left as they are. Re-importing the same file changes nothing.

    Malformed input raises CatalogError before anything is written. `dry_run` reports the same
    numbers and writes nothing. `provider` imports one provider's prices only.
    """
    now = now or timezone.now()
    source_label = source.strip() or "catalog"
    parsed = catalog_parse(data, source=source_label, provider=provider)
    only = provider.strip().lower() if provider else None
    report = ImportReport(
        source=source_label,
        entries_read=parsed.entries_read,
        skipped=dict(parsed.skipped),
        no_price_modes=dict(parsed.no_price_modes),
        modelled=dict(parsed.modelled),
        not_prices=dict(parsed.not_prices),
        ignored_fields=dict(parsed.ignored_fields),
        shadowed_prices=parsed.shadowed_prices,
        dry_run=dry_run,
        provider=only,
    )
    stored_source = source_label[:200]

    with transaction.atomic():
        if not dry_run:
            _lock_prices()
        scope = Price.objects.filter(provider=only) if only else Price.objects.all()
        open_versions: dict[tuple[str, ...], Price] = {}
        # Oldest first, so that if a key ever has two open versions the newest one is compared.
        for price in (
            scope.filter(valid_until__isnull=True)
            .order_by("valid_from")
            .only(*_KEY_FIELDS, "unit_price", "currency", "off_peak_windows", "valid_from")
        ):
            open_versions[tuple(getattr(price, name) for name in _KEY_FIELDS)] = price
        # Keys whose versions are all closed: a new version must not overlap the last one.
        last_ends = {
            tuple(row[name] for name in _KEY_FIELDS): row["end"]
            for row in scope.filter(valid_until__isnull=False).values(*_KEY_FIELDS).annotate(end=Max("valid_until"))
        }

        new_rows: list[Price] = []
        closing: list[int] = []
        total = len(parsed.prices)
        for done, item in enumerate(parsed.prices, start=1):
            if progress is not None and (done % 200 == 0 or done == total):
                progress(done, total)
            current = open_versions.get(item.identity)
            if current is None:
                last_end = last_ends.get(item.identity)
                valid_from = max(CATALOG_EPOCH, last_end) if last_end else CATALOG_EPOCH
                report.added += 1
            elif (
                current.unit_price == item.unit_price
                and current.currency == "USD"
                and current.off_peak_windows == list(item.off_peak_windows)
            ):
                report.unchanged += 1
                continue
            else:
                if current.valid_from >= now:
                    raise CatalogError(
                        f"{source_label}: {json.dumps(item.key)}.{item.field}: the price in force began at "
                        f"{current.valid_from.isoformat()}, not before this import ({now.isoformat()})"
                    )
                closing.append(current.pk)
                valid_from = now
                report.changed += 1
            new_rows.append(
                Price(
                    provider=item.provider,
                    model=item.model,
                    operation=item.operation,
                    unit=item.unit,
                    variant=item.variant,
                    service_tier=item.service_tier,
                    above_tokens=item.above_tokens,
                    off_peak_windows=list(item.off_peak_windows),
                    unit_price=item.unit_price,
                    currency="USD",
                    valid_from=valid_from,
                    source=f"{stored_source[: 198 - len(item.derived)]}; {item.derived}"
                    if item.derived
                    else stored_source,
                )
            )
        if not dry_run:
            for chunk in _chunks(closing, 500):
                Price.objects.filter(pk__in=chunk).update(valid_until=now)
            Price.objects.bulk_create(new_rows, batch_size=500)
    return report


def price_catalog_load_default() -> ImportReport:
    """Import the catalog shipped with costcontrol (settings.COSTCONTROL_DEFAULT_CATALOG). Idempotent."""
    path = Path(settings.COSTCONTROL_DEFAULT_CATALOG)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the default catalog ({exc.strerror})") from None
    return price_catalog_import(data=data, source=DEFAULT_CATALOG_SOURCE)
