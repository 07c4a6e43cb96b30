"""Prices and the rules behind an amount, in words a person reads (the admin's price list, a model's
rules and a ledger entry's provenance). The one place these words are made.

- A unit price reads per 1 M for tokens, characters and pixels ("2.50 USD / 1M input tokens"),
  per unit otherwise ("0.04 USD / image").
- A priced part of an entry reads "input tokens, above 200k tokens, priority: 300,000 x 0.0000045 =
  1.35 USD" (CostEntry.prices_used as tracking.pricing.Quote writes it). Entries written before the
  quantity and amount were recorded there ({"price_id", "unit_price"} only) take the quantity from the
  entry's own column.
- An unpriced entry reads as the reason the quote gave ("no flex price for openai/gpt-4o ...").
- A price multiplier (unit "uplift") reads "x 1.1 on token prices"; applied to an entry, "x 1.1 for
  processing in the EU (data residency), on 0.0165 USD of token prices: +0.00165 USD".
- Free units per call (unit "free_per_call") read "5 free per call"; applied, "images in the prompt:
  5 of 7 free per call".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from core.money import format_money, format_money_fine, round_money

from .models import UNIT_QUANTITY_FIELD, CostEntry, PricingStatus, ServiceTier, Unit

MILLION = Decimal(1_000_000)
_TIER_WORDS = dict(ServiceTier.choices)
_PLURALS = (
    ("token", "tokens"),
    ("character", "characters"),
    ("query", "queries"),
    ("GPU-hour", "GPU-hours"),
    ("second", "seconds"),
    ("image", "images"),
    ("pixel", "pixels"),
    ("page", "pages"),
    ("request", "requests"),
    ("session", "sessions"),
    ("message", "messages"),
    ("unit", "units"),
    ("credit", "credits"),
)


def is_per_million(unit: str) -> bool:
    """Tokens, characters and pixels cost fractions of a cent each: they read per 1 M."""
    return unit.endswith(("_token", "_character")) or unit == Unit.PIXEL


def unit_words(unit: str, *, plural: bool = False) -> str:
    """The unit's label ("input token", "cache write token (1-hour lifetime)"), the counted noun made plural."""
    label = str(Unit(unit).label) if unit in Unit.values else unit.replace("_", " ")
    if not plural:
        return label
    # The counted noun, tokens before images ("input image token"); the first match is made plural.
    for noun, nouns in _PLURALS:
        plural_label, found = re.subn(rf"\b{noun}\b", nouns, label, count=1)
        if found:
            return plural_label
    return label


def tokens_short(count: int) -> str:
    """200000 -> "200k", 1000000 -> "1M", 128500 -> "128,500"."""
    if count and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count and count % 1_000 == 0:
        return f"{count // 1_000}k"
    return f"{count:,}"


def context_tier_words(above_tokens: int) -> str:
    return f"above {tokens_short(above_tokens)} tokens" if above_tokens else ""


def service_tier_words(service_tier: str) -> str:
    """ "" (standard) -> "standard"; "off_peak" -> "off-peak"; an unknown tier as it was written."""
    return str(_TIER_WORDS.get(service_tier, service_tier))


# An uplift price's condition (its variant) in words: what made the call cost more.
UPLIFT_CONDITION_WORDS = {
    "data_residency:eu": "processing in the EU (data residency)",
    "data_residency:us": "processing in the US (data residency)",
    "vertex_location:regional": "a regional Vertex AI endpoint (not global)",
    "inference_geo:us": "US-only inference",
    "speed:fast": "fast mode",
}


def uplift_condition_words(condition: str) -> str:
    return UPLIFT_CONDITION_WORDS.get(condition, condition)


def price_amount(unit_price: Decimal, currency: str, unit: str) -> str:
    """The price of one unit, or of 1 M for token-like units: "2.50 USD", "0.04 USD"; a multiplier "x 1.1"."""
    if unit == Unit.UPLIFT:
        return f"x {unit_price.normalize():f}"
    if unit == Unit.FREE_PER_CALL:
        return f"{unit_price.normalize():f} free"
    if is_per_million(unit):
        return format_money((unit_price * MILLION).normalize(), currency)
    return format_money(unit_price.normalize(), currency)


def price_per(unit: str, *, short: bool = False) -> str:
    """What price_amount is per: "1M input tokens" ("1M tokens" short, beside the unit's name), "image"."""
    if unit == Unit.UPLIFT:
        return "token prices"
    if unit == Unit.FREE_PER_CALL:
        return "call"
    if not is_per_million(unit):
        return unit_words(unit)
    if short:
        return "1M pixels" if unit == Unit.PIXEL else "1M tokens" if unit.endswith("_token") else "1M characters"
    return f"1M {unit_words(unit, plural=True)}"


def quantity_lines(entry: CostEntry) -> list[tuple[str, str]]:
    """(what, how many) of each quantity the entry has, in the ledger's unit order: ("input tokens", "250,000")."""
    shown = []
    for unit, quantity_field in UNIT_QUANTITY_FIELD.items():
        quantity = _decimal(getattr(entry, quantity_field, None))
        if quantity:
            shown.append((unit_words(unit, plural=True), _quantity_words(quantity)))
    return shown


def price_words(unit_price: Decimal, currency: str, unit: str) -> str:
    """ "2.50 USD / 1M input tokens", "0.04 USD / image", "0.035 USD / web search query", "x 1.1 on token prices"."""
    if unit == Unit.UPLIFT:
        return f"{price_amount(unit_price, currency, unit)} on {price_per(unit)}"
    if unit == Unit.FREE_PER_CALL:
        return f"{price_amount(unit_price, currency, unit)} per {price_per(unit)}"
    return f"{price_amount(unit_price, currency, unit)} / {price_per(unit)}"


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool | float):
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def _quantity_words(quantity: Decimal) -> str:
    return f"{quantity.normalize():,f}" if quantity != quantity.to_integral_value() else f"{int(quantity):,}"


@dataclass(frozen=True)
class ProvenanceLine:
    """One line of an entry's provenance; price_id names the price version (None for a reason).

    `text` says it in one sentence; part, quantity, unit_price and amount split it into the columns of
    the entry page's table (empty where the line has no such column, e.g. a reason)."""

    text: str
    price_id: int | None = None
    part: str = field(default="", compare=False)
    quantity: str = field(default="", compare=False)
    unit_price: str = field(default="", compare=False)
    amount: str = field(default="", compare=False)


def provenance_lines(entry: CostEntry) -> list[ProvenanceLine]:
    """How the entry's amount was made, one line per priced part (in the ledger's unit order), or
    the reason it is not priced."""
    used = entry.prices_used if isinstance(entry.prices_used, dict) else {}
    if entry.pricing_status == PricingStatus.EXPLICIT:
        return [ProvenanceLine("the amount was given with the event (not priced from the catalog)")]
    if entry.pricing_status == PricingStatus.UNPRICED:
        return [ProvenanceLine(_unpriced_reason(entry, used))]
    lines = []
    free = used.get(Unit.FREE_PER_CALL)
    for unit, allowance in free.items() if isinstance(free, dict) else ():
        if isinstance(allowance, dict):
            price_id = allowance.get("price_id") if isinstance(allowance.get("price_id"), int) else None
            part, free = (
                unit_words(unit, plural=True),
                f"{allowance.get('free')} of {allowance.get('reported')} free per call",
            )
            lines.append(ProvenanceLine(f"{part}: {free}", price_id, part=part, quantity=free))
    for unit, quantity_field in UNIT_QUANTITY_FIELD.items():
        part = used.get(unit)
        if isinstance(part, dict):
            lines.append(_part_line(entry, unit, quantity_field, part))
    if isinstance(used.get(Unit.UPLIFT), dict):
        lines.extend(_uplift_lines(entry, used[Unit.UPLIFT]))
    return lines


def _uplift_lines(entry: CostEntry, part: dict[str, Any]) -> list[ProvenanceLine]:
    """One line per multiplier the entry met, the surcharge on the last (the factors multiply)."""
    rules = [rule for rule in part.get("rules") or () if isinstance(rule, dict)]
    base, amount = _decimal(part.get("applies_to")), _decimal(part.get("amount"))
    lines = []
    for index, rule in enumerate(rules):
        factor = _decimal(rule.get("factor"))
        factor_words = f"x {factor.normalize():f}" if factor is not None else "x ?"
        part = f"for {uplift_condition_words(str(rule.get('condition', '')))}"
        text, quantity, surcharge = f"{factor_words} {part}", "", ""
        if index == len(rules) - 1 and base is not None and amount is not None:
            quantity = f"{format_money(round_money(base), entry.currency)} of token prices"
            surcharge = f"+{format_money_fine(round_money(amount), entry.currency)}"
            text += f", on {quantity}: {surcharge}"
        price_id = rule.get("price_id") if isinstance(rule.get("price_id"), int) else None
        lines.append(
            ProvenanceLine(text, price_id, part=part, quantity=quantity, unit_price=factor_words, amount=surcharge)
        )
    return lines


def _part_line(entry: CostEntry, unit: str, quantity_field: str, part: dict[str, Any]) -> ProvenanceLine:
    names = [unit_words(unit, plural=True)]
    above = part.get("above_tokens") or 0
    if isinstance(above, int) and above > 0:
        names.append(context_tier_words(above))
    if part.get("service_tier"):
        names.append(service_tier_words(str(part["service_tier"])))
    unit_price = _decimal(part.get("unit_price"))
    # Entries recorded before the quantity was kept in prices_used: the entry's own column.
    quantity = _decimal(part.get("quantity"))
    if quantity is None:
        quantity = _decimal(getattr(entry, quantity_field, None))
    price_id = part.get("price_id") if isinstance(part.get("price_id"), int) else None
    what = ", ".join(names)
    if unit_price is None or quantity is None:
        return ProvenanceLine(f"{what}: price #{price_id}", price_id, part=what)
    amount = _decimal(part.get("amount"))
    if amount is None:
        amount = quantity * unit_price
    amount_words = format_money_fine(round_money(amount), entry.currency)  # the exact amount is the ledger's
    text = f"{what}: {_quantity_words(quantity)} x {unit_price.normalize():f} = {amount_words}"
    return ProvenanceLine(
        text,
        price_id,
        part=what,
        quantity=_quantity_words(quantity),
        unit_price=price_words(unit_price, entry.currency, unit),
        amount=amount_words,
    )


def _unpriced_reason(entry: CostEntry, used: dict[str, Any]) -> str:
    if used.get("reason"):
        return str(used["reason"])
    model = f"{entry.provider}/{entry.model}"
    missing = used.get("missing_units")
    if isinstance(missing, list) and missing:
        units = ", ".join(unit_words(str(u), plural=True) for u in missing)
        return f"no price for {units} of {model}"
    currencies = used.get("mixed_currencies")
    if isinstance(currencies, list) and currencies:
        return f"the prices of {model} are in several currencies ({', '.join(map(str, currencies))})"
    if entry.note:
        return entry.note
    return f"no price of {model} in force at {entry.occurred_at:%Y-%m-%d %H:%M %Z}"


# Operations in words: what a person calls them ("gpu_idle" is "GPU idle"); any other reads with spaces.
OPERATION_WORDS = {
    "gpu_busy": "GPU busy",
    "gpu_idle": "GPU idle",
    "chat": "chat",
    "completion": "text completion",
    "responses": "responses (API)",
    "embedding": "embedding",
    "image_generation": "image generation",
    "image_edit": "image editing",
    "video_generation": "video generation",
    "audio_speech": "speech (text to audio)",
    "audio_transcription": "transcription (audio to text)",
    "realtime": "realtime voice",
    "moderation": "moderation",
    "rerank": "reranking",
    "ocr": "OCR (text from documents)",
    "vector_store": "vector store",
}


def operation_words(operation: str) -> str:
    """ "gpu_idle" -> "GPU idle", "image_generation" -> "image generation"; "" -> "any operation"."""
    if not operation:
        return "any operation"
    return OPERATION_WORDS.get(operation, operation.replace("_", " "))
