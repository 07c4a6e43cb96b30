"""The price catalog: LiteLLM's ``model_prices_and_context_window.json`` in, versioned Price rows out.

Two layers:

* :func:`catalog_parse` reads the LiteLLM format (a JSON object of model name -> entry) into
  :class:`CatalogPrice` rows, one per (provider, model, operation, unit, variant). It never
  touches the database and never lets a float near a price (``parse_float=Decimal``). Malformed
  input raises :class:`CatalogError` with one message naming the place; nothing is imported then.
* The services :func:`price_set`, :func:`price_catalog_import` and
  :func:`price_catalog_load_default` write versions: a new price closes the version in force
  instead of overwriting it, so past events keep the price they were recorded under.

What the parser maps (everything else is counted by kind as an "ignored price field"):

=================================================  ==================
LiteLLM field                                      unit
=================================================  ==================
input_cost_per_token                               input_token
output_cost_per_token                              output_token
cache_read_input_token_cost                        cached_input_token
cache_creation_input_token_cost                    cache_write_token
output_cost_per_reasoning_token                    reasoning_token
output_cost_per_image (image modes: else input_*)  image
input_cost_per_second, else output_*, else cost_*  second
input_cost_per_request, else input_cost_per_query  request
cost_per_gpu_hour (our extension)                  gpu_hour
=================================================  ==================
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

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

from .models import Price, Unit

# A price first seen in a catalog is valid from this instant, not from the import: a fresh
# catalog must also price events recorded (or back-filled) before it was loaded.
CATALOG_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)

DEFAULT_CATALOG_SOURCE = "costcontrol default catalog"

PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_PLACES)  # Decimal("1E-15")
PRICE_LIMIT = Decimal(10) ** (PRICE_MAX_DIGITS - PRICE_PLACES)  # the column holds prices below 1e9

# Unit -> the LiteLLM fields that carry it, in order of preference. The first present field is the
# price; the others are aliases of the same price and are never added to it (whisper-1 lists
# input_cost_per_second and output_cost_per_second at the same rate: a second costs that once).
UNIT_FIELDS: dict[str, tuple[str, ...]] = {
    Unit.INPUT_TOKEN: ("input_cost_per_token",),
    Unit.OUTPUT_TOKEN: ("output_cost_per_token",),
    Unit.CACHED_INPUT_TOKEN: ("cache_read_input_token_cost", "input_cost_per_token_cache_hit"),
    Unit.CACHE_WRITE_TOKEN: ("cache_creation_input_token_cost",),
    Unit.REASONING_TOKEN: ("output_cost_per_reasoning_token",),
    Unit.IMAGE: ("output_cost_per_image",),
    Unit.SECOND: ("input_cost_per_second", "output_cost_per_second", "cost_per_second"),
    Unit.REQUEST: ("input_cost_per_request", "input_cost_per_query"),
    Unit.GPU_HOUR: ("cost_per_gpu_hour",),
}
# In image modes LiteLLM's own cost calculator bills input_cost_per_image per generated image
# (OpenAI gpt-image-1 by quality/size, xAI grok-imagine); in chat modes it is the price of an
# image in the prompt, which we do not model.
IMAGE_MODES = frozenset({"image_generation", "image_edit"})
_IMAGE_MODE_FIELDS = {**UNIT_FIELDS, Unit.IMAGE: ("output_cost_per_image", "input_cost_per_image")}

DOCUMENTATION_KEY = "sample_spec"

# Skip reasons (ImportReport.skipped keys).
SKIP_DOCUMENTATION = "documentation entry (sample_spec)"
SKIP_NO_PROVIDER = "no litellm_provider"
SKIP_NO_PRICE = "no usable price field"
SKIP_DUPLICATE = "duplicate alias (same provider, model, operation and variant as an earlier key)"
SKIP_TOO_LONG = "name too long for the catalog"
SKIP_OTHER_PROVIDER = "other provider (--provider)"

# Leading path segments that name a size, quality or step count rather than a model:
# "hd/1024-x-1792/dall-e-3", "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1".
_VARIANT_SEGMENT = re.compile(
    r"standard|hd|low|medium|high|xhigh|max|auto|(?:\d+|max)-x-(?:\d+|max)|\d+-steps|max-steps", re.IGNORECASE
)
_FIELD_LIMITS = {"provider": 100, "model": 200, "operation": 50, "variant": 100}

# Ignored price fields are reported by kind, first matching rule wins.
_TIER_SUFFIXES = ("_batches", "_priority", "_flex", "_ultrafast", "_balanced", "_decisions")
_CONTEXT_TIER = re.compile(r"_above_\d+k_tokens")
_VIDEO_RESOLUTION = re.compile(r"_per_second_\d+(?:p|k)$")


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

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        return (self.provider, self.model, self.operation, self.unit, self.variant)


@dataclass
class ParsedCatalog:
    prices: list[CatalogPrice] = field(default_factory=list)
    entries_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    no_price_modes: Counter[str] = field(default_factory=Counter)
    ignored_fields: Counter[str] = field(default_factory=Counter)
    # Prices of a partly duplicate alias (it adds some units, others an earlier key already priced).
    shadowed_prices: int = 0


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
            "ignored_fields": dict(self.ignored_fields),
            "shadowed_prices": self.shadowed_prices,
        }

    def summary_lines(self) -> list[str]:
        only = f" (provider {self.provider} only)" if self.provider else ""
        lines = [f"Read {self.entries_read:,} entries from {self.source}{only}"]
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        lines.append(f"  added {self.added:,}   changed {self.changed:,}   unchanged {self.unchanged:,}")
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
        if self.ignored_fields:
            lines.append("Ignored price fields (not modelled):")
            for kind, count in _by_count(self.ignored_fields):
                lines.append(f"  {count:>6,}  {kind}")
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
    """The group an unmodelled price field is reported under."""
    if name.endswith(_TIER_SUFFIXES):
        return "batch/priority/flex tiers"
    if _CONTEXT_TIER.search(name):
        return "context-size tiers (above N tokens)"
    if "above_1hr" in name:
        return "1-hour cache writes"
    if "per_pixel" in name:
        return "per-pixel"
    if "per_character" in name:
        return "per-character"
    if "audio" in name:
        return "audio tokens and audio seconds"
    if "video" in name or _VIDEO_RESOLUTION.search(name):
        return "video"
    if "image" in name:
        return "image tokens and prompt images"
    if "query" in name or "search" in name or "grounding" in name:
        return "search/query extras"
    if "per_page" in name:
        return "per-page (OCR, annotation)"
    if "dbu_cost" in name:
        return "Databricks DBUs"
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


def unit_fields(mode: str) -> dict[str, tuple[str, ...]]:
    return _IMAGE_MODE_FIELDS if mode in IMAGE_MODES else UNIT_FIELDS


def catalog_parse(data: bytes | str | Mapping[str, Any], *, source: str, provider: str | None = None) -> ParsedCatalog:
    """Read a LiteLLM-format catalog. Raises CatalogError (naming the place) on malformed input.

    The whole file is validated even when `provider` selects a part of it: a broken file is
    refused, not half-read. When two keys price the same (provider, model, operation, unit,
    variant), the first in file order wins.
    """
    raw = catalog_load(data, source=source)
    only = provider.strip().lower() if provider else None
    parsed = ParsedCatalog()
    seen: set[tuple[str, str, str, str, str]] = set()
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

        fields = unit_fields(mode)
        prices: dict[str, tuple[str, Decimal]] = {}
        for unit, names in fields.items():
            for name in names:
                if name in entry:
                    value = _price_value(entry[name], where=f"{where}.{name}")
                    prices.setdefault(unit, (name, value))
        entry_provider = (raw_provider or "").strip().lower()
        if not entry_provider:
            parsed.skipped[SKIP_NO_PROVIDER] += 1
            continue
        if only and entry_provider != only:
            parsed.skipped[SKIP_OTHER_PROVIDER] += 1
            continue

        mapped = {name for names in fields.values() for name in names}
        for name in entry:
            if "cost" in name and name not in mapped:
                parsed.ignored_fields[ignored_field_kind(name)] += 1
        if not prices:
            parsed.skipped[SKIP_NO_PRICE] += 1
            parsed.no_price_modes[mode] += 1
            continue
        model, variant = split_model_name(key, entry_provider)
        names_by_field = {"provider": entry_provider, "model": model, "operation": mode, "variant": variant}
        if any(len(value) > _FIELD_LIMITS[name] for name, value in names_by_field.items()):
            parsed.skipped[SKIP_TOO_LONG] += 1
            continue

        fresh = []
        for unit, (name, value) in prices.items():
            price = CatalogPrice(entry_provider, model, mode, unit, variant, value, key, name)
            if price.identity not in seen:
                seen.add(price.identity)
                fresh.append(price)
        if not fresh:
            parsed.skipped[SKIP_DUPLICATE] += 1
            continue
        # An alias that adds a unit the first key lacked contributes that unit only.
        parsed.shadowed_prices += len(prices) - len(fresh)
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


_KEY_FIELDS = ("provider", "model", "operation", "unit", "variant")


def price_set(
    *,
    provider: str,
    model: str,
    operation: str,
    unit: str,
    variant: str = "",
    unit_price: Decimal | int | str,
    currency: str = "USD",
    valid_from: datetime,
    source: str = "",
) -> Price:
    """Put a price in force from `valid_from`, closing the version in force at that instant.

    The same price (and currency) as the open version changes nothing and returns that version.
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

    key = {"provider": provider, "model": model, "operation": operation, "unit": unit, "variant": variant}
    with transaction.atomic():
        _lock_prices()
        versions = Price.objects.filter(**key)
        current = versions.filter(valid_until__isnull=True).order_by("-valid_from").first()
        if current is not None:
            if current.unit_price == price and current.currency == currency:
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
            **key, unit_price=price, currency=currency, valid_from=valid_from, valid_until=None, source=source
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
            .only(*_KEY_FIELDS, "unit_price", "currency", "valid_from")
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
            elif current.unit_price == item.unit_price and current.currency == "USD":
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
                    unit_price=item.unit_price,
                    currency="USD",
                    valid_from=valid_from,
                    source=stored_source,
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
