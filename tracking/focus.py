"""The ledger as FOCUS 1.2 cost and usage rows (FinOps Open Cost and Usage Specification), for FinOps tools.

One row per UTC day, provider, model, operation, service, team, subject, job, service tier, tags, price
(the catalog row that priced it) and pricing unit: an entry priced from the catalog gives a row part
per unit its prices_used names (input tokens, cached input tokens, output tokens, GPU-hours ...); an
explicit amount one part per call; an unpriced entry a part per quantity, at 0; a correction an
Adjustment. Each entry's parts are rounded to the ledger's 9 places and what rounding and uplifts
(data residency, fast mode) leave goes to its largest part, so BilledCost sums to the ledger, exactly,
per day and provider. Amounts are written as exact decimals, never floats.

The ledger is read once, in occurred_at order, with a server-side cursor; a day's rows are written when
the next day begins, so memory holds one day's groups, never the ledger.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from django.db.models import QuerySet

from core.csv import Echo
from core.money import round_money

from .models import UNIT_QUANTITY_FIELD, CostEntry, PricingStatus, Unit
from .provenance import context_tier_words, service_tier_words, unit_words

SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "Generative AI"
# The providers' names as they bill; any other provider id is shown as it is.
PROVIDER_NAMES = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "azure": "Microsoft Azure",
    "azure_ai": "Microsoft Azure",
    "bedrock": "Amazon Web Services",
    "vertex_ai": "Google Cloud",
    "gemini": "Google",
    "mistral": "Mistral AI",
    "xai": "xAI",
    "gpu": "Self-hosted GPUs",
}
# FOCUS units (its UnitFormat: a count word, plural, title case) of the ledger's units.
PRICING_UNITS = {
    Unit.GPU_HOUR: "Hours",
    Unit.SECOND: "Seconds",
    Unit.INPUT_AUDIO_SECOND: "Seconds",
    Unit.INPUT_VIDEO_SECOND: "Seconds",
    Unit.IMAGE: "Images",
    Unit.INPUT_IMAGE: "Images",
    Unit.REQUEST: "Requests",
    Unit.PIXEL: "Pixels",
    Unit.PAGE: "Pages",
    Unit.WEB_SEARCH: "Requests",
    Unit.MAPS_QUERY: "Requests",
    Unit.SESSION: "Sessions",
    Unit.MESSAGE: "Messages",
    Unit.CREDIT: "Credits",
    Unit.GUARDRAIL_UNIT: "Units",
    Unit.INPUT_CHARACTER: "Characters",
    Unit.OUTPUT_CHARACTER: "Characters",
}
TOKENS = "Tokens"  # every *_token unit
CALL = "call"  # the part of an entry with an explicit amount (no unit prices): one per call

COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "CommitmentDiscountStatus",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedUnitPrice",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Provider",
    "x_Model",
    "x_Operation",
    "x_Service",
    "x_Team",
    "x_Subject",
    "x_Job",
    "x_ServiceTier",
    "x_PricingRule",
    "x_PricingStatus",
    "x_Entries",
)
# Written with the ledger's 9 places (FOCUS tools read a column of whole numbers as integers, not decimals).
COST_COLUMNS = frozenset(("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingCurrencyEffectiveCost"))

_FIELDS = (
    "occurred_at",
    "provider",
    "model",
    "operation",
    "service",
    "subject",
    "job",
    "team__name",
    "tags",
    "service_tier",
    "region",
    "currency",
    "amount",
    "pricing_status",
    "prices_used",
    "corrects_id",
    *UNIT_QUANTITY_FIELD.values(),
)
_QUANTITY_UNITS = tuple((field, unit) for unit, field in UNIT_QUANTITY_FIELD.items())


@dataclass
class _Group:
    billed: Decimal
    listed: Decimal
    quantity: Decimal
    entries: int


def focus_rows(start: date, end: date, entries: QuerySet[CostEntry] | None = None) -> Iterator[list[Any]]:
    """The FOCUS rows of the UTC days start .. end - 1 (not the header: COLUMNS), a day at a time, of
    `entries` (default: the whole ledger; the admin passes the viewer's teams' entries)."""
    since = datetime.combine(start, time.min, tzinfo=UTC)
    until = datetime.combine(end, time.min, tzinfo=UTC)
    entries = (
        (CostEntry.objects.all() if entries is None else entries)
        .filter(occurred_at__gte=since, occurred_at__lt=until)
        .order_by("occurred_at", "id")
        .values_list(*_FIELDS)
    )
    day: date | None = None
    groups: dict[tuple[Any, ...], _Group] = {}
    for values in entries.iterator(chunk_size=5000):
        entry = dict(zip(_FIELDS, values, strict=True))
        moment: datetime = entry["occurred_at"].astimezone(UTC)
        if moment.date() != day:
            if day is not None:
                yield from _day_rows(day, groups)
            day, groups = moment.date(), {}
        for key, billed, listed, quantity in _parts(entry):
            group = groups.get(key)
            if group is None:
                groups[key] = _Group(billed, listed, quantity, 1)
            else:
                group.billed += billed
                group.listed += listed
                group.quantity += quantity
                group.entries += 1
    if day is not None:
        yield from _day_rows(day, groups)


def _parts(entry: dict[str, Any]) -> list[tuple[tuple[Any, ...], Decimal, Decimal, Decimal]]:
    """(group key, billed, list cost, quantity) of each part of one entry; billed sums to its amount."""
    attribution = (
        entry["provider"],
        entry["model"],
        entry["operation"],
        entry["service"],
        entry["team__name"] or "",
        entry["subject"],
        entry["job"],
        json.dumps(entry["tags"] or {}, sort_keys=True, separators=(",", ":")),
        entry["service_tier"],
        entry["region"],
        entry["currency"],
        entry["pricing_status"],
    )
    amount: Decimal = entry["amount"]
    if entry["corrects_id"] is not None:
        return [((*attribution, "Adjustment", CALL, None, None, 0), amount, amount, Decimal(1))]
    used = entry["prices_used"] or {}
    parts = []
    if entry["pricing_status"] == PricingStatus.PRICED:
        for unit, part in used.items():
            if unit in UNIT_QUANTITY_FIELD and isinstance(part, dict):
                listed = round_money(Decimal(part["amount"]))
                key = (
                    *attribution,
                    "Usage",
                    unit,
                    part.get("price_id"),
                    part.get("unit_price"),
                    part.get("above_tokens") or 0,
                )
                parts.append([key, listed, listed, Decimal(part["quantity"])])
    elif entry["pricing_status"] == PricingStatus.UNPRICED:
        parts = [
            [(*attribution, "Usage", unit, None, None, 0), Decimal(0), Decimal(0), Decimal(entry[field])]
            for field, unit in _QUANTITY_UNITS
            if entry[field]
        ]
    if not parts:  # an explicit amount (or a priced entry with no parts): one call
        return [((*attribution, "Usage", CALL, None, None, 0), amount, amount, Decimal(1))]
    rest = amount - sum(part[1] for part in parts)  # uplifts and rounding: on the largest part
    if rest:
        max(parts, key=lambda part: part[1])[1] += rest
    return [tuple(part) for part in parts]  # type: ignore[misc]


@lru_cache(maxsize=256)
def _unit_words(unit: str) -> str:
    """A unit in words, once per unit (provenance.unit_words rebuilds the list of units on every call)."""
    return unit_words(unit, plural=True)


def _day_rows(day: date, groups: dict[tuple[Any, ...], _Group]) -> Iterable[list[Any]]:
    charge_start = datetime.combine(day, time.min, tzinfo=UTC)
    charge_end = charge_start + timedelta(days=1)
    month = day.replace(day=1)
    billing_start = datetime.combine(month, time.min, tzinfo=UTC)
    billing_end = datetime.combine((month + timedelta(days=32)).replace(day=1), time.min, tzinfo=UTC)
    for key in sorted(groups, key=repr):
        group = groups[key]
        (
            provider,
            model,
            operation,
            service,
            team,
            subject,
            job,
            tags,
            service_tier,
            region,
            currency,
            status,
            category,
            unit,
            price_id,
            unit_price,
            above_tokens,
        ) = key
        name = PROVIDER_NAMES.get(provider, provider)
        usage = category == "Usage"
        per_call = unit == CALL
        focus_unit = "Requests" if per_call else PRICING_UNITS.get(unit, TOKENS)
        words = "calls" if per_call else _unit_words(unit)
        gpu = provider == "gpu"
        tag_values = json.loads(tags)
        rule = ", ".join(w for w in (service_tier_words(service_tier), context_tier_words(above_tokens)) if w)
        price = Decimal(unit_price) if unit_price is not None else None
        quantity = group.quantity if usage else None
        row: dict[str, Any] = {
            "BilledCost": group.billed,
            "EffectiveCost": group.billed,
            "ListCost": group.listed,
            "ContractedCost": group.billed,
            "BillingAccountId": provider,
            "BillingAccountName": name,
            "BillingCurrency": currency,
            "BillingPeriodStart": billing_start,
            "BillingPeriodEnd": billing_end,
            "ChargePeriodStart": charge_start,
            "ChargePeriodEnd": charge_end,
            "ChargeCategory": category,
            "ChargeDescription": f"{model}: {words}" if usage else f"{model}: correction",
            "ChargeFrequency": "Usage-Based" if usage else "One-Time",
            "ConsumedQuantity": quantity,
            "ConsumedUnit": focus_unit if usage else None,
            "ContractedUnitPrice": price,
            "InvoiceIssuerName": name,
            "ListUnitPrice": price,
            "PricingCategory": "Standard" if usage else None,
            "PricingCurrency": currency,
            "PricingCurrencyContractedUnitPrice": price,
            "PricingCurrencyEffectiveCost": group.billed,
            "PricingCurrencyListUnitPrice": price,
            "PricingQuantity": quantity,
            "PricingUnit": focus_unit if usage else None,
            "ProviderName": name,
            "PublisherName": name,
            "RegionId": region or None,
            "RegionName": region or None,
            "ResourceId": tag_values.get("gpu") if gpu else None,
            "ResourceName": model if gpu else None,
            "ResourceType": "GPU" if gpu else None,
            "ServiceCategory": SERVICE_CATEGORY,
            "ServiceName": f"{name} {'GPUs' if gpu else 'API'}",
            "ServiceSubcategory": "AI Platforms" if gpu else SERVICE_SUBCATEGORY,
            "SkuId": f"{provider}/{model}/{unit}",
            "SkuMeter": words.capitalize(),
            # The catalog price that priced the row (none for an explicit amount or an unpriced call).
            "SkuPriceDetails": None
            if price_id is None
            else json.dumps({"x_Model": model, "x_Unit": unit}, separators=(",", ":")),
            "SkuPriceId": None if price_id is None else f"{provider}/{model}/{unit}@price-{price_id}",
            "SubAccountId": team or None,
            "SubAccountName": team or None,
            "Tags": tags,
            "x_Provider": provider,
            "x_Model": model,
            "x_Operation": operation,
            "x_Service": service,
            "x_Team": team,
            "x_Subject": subject,
            "x_Job": job,
            "x_ServiceTier": service_tier,
            "x_PricingRule": rule,
            "x_PricingStatus": status,
            "x_Entries": group.entries,
        }
        yield [row.get(column) for column in COLUMNS]


def _decimal_text(value: Decimal) -> str:
    """Exact, with a decimal point always (1200000.0): FOCUS tools read a column of whole numbers as integers."""
    text = f"{value.normalize():f}" if value else "0"
    return text if "." in text else f"{text}.0"


_IS_COST = tuple(name in COST_COLUMNS for name in COLUMNS)


def _cells(row: list[Any], times: dict[datetime, str]) -> list[Any]:
    """A row as CSV text; `times` keeps each datetime's text (a day's rows share four)."""
    out = []
    for cost, value in zip(_IS_COST, row, strict=True):
        if value is None:
            out.append("")
        elif isinstance(value, str | int):
            out.append(value)
        elif isinstance(value, Decimal):
            out.append(f"{value:.9f}" if cost else _decimal_text(value))
        elif isinstance(value, datetime):
            text = times.get(value)
            if text is None:
                text = times[value] = value.strftime("%Y-%m-%dT%H:%M:%SZ")
            out.append(text)
        else:
            out.append(value)
    return out


FORMATS = ("csv", "parquet")


def focus_export_write(
    out: Path | IO[str], start: date, end: date, fmt: str = "csv", entries: QuerySet[CostEntry] | None = None
) -> int:
    """The FOCUS export of the days start .. end - 1 to a file (written whole or not at all: a temporary
    file is renamed into place) or an open text stream (CSV only); returns the number of rows."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not isinstance(out, Path):
        return _lines_write(out, start, end, entries)
    partial = out.with_name(f".{out.name}.partial")
    try:
        if fmt == "parquet":
            count = focus_parquet_write(partial, start, end, entries)
        else:
            with partial.open("w", encoding="utf-8", newline="") as stream:
                count = _lines_write(stream, start, end, entries)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return count


def _lines_write(out: IO[str], start: date, end: date, entries: QuerySet[CostEntry] | None) -> int:
    lines = 0
    for line in focus_csv_lines(start, end, entries):
        out.write(line)
        lines += 1
    return lines - 1  # the header is no row


def focus_export_daily(folder: str | Path, day: date | None = None) -> tuple[Path, int]:
    """The FOCUS CSV of one UTC day (default: yesterday) as focus-YYYY-MM-DD.csv in `folder` (created if
    missing), replacing an earlier file of that day whole."""
    day = day or (datetime.now(UTC).date() - timedelta(days=1))
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    out = path / f"focus-{day.isoformat()}.csv"
    return out, focus_export_write(out, day, day + timedelta(days=1))


def focus_csv_lines(start: date, end: date, entries: QuerySet[CostEntry] | None = None) -> Iterator[str]:
    """The CSV export as lines of text, the header first (streamed by the admin's download)."""
    writer = csv.writer(Echo(), lineterminator="\n")
    yield writer.writerow(COLUMNS)
    times: dict[datetime, str] = {}
    for row in focus_rows(start, end, entries):
        yield writer.writerow(_cells(row, times))


# Parquet: every column a string but the costs and quantities, decimal128 of the ledger's precision.
_DECIMAL_COLUMNS = COST_COLUMNS | {
    "ConsumedQuantity",
    "PricingQuantity",
    "ContractedUnitPrice",
    "ListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
}
PARQUET_BATCH = 10_000


def focus_parquet_write(path: Path, start: date, end: date, entries: QuerySet[CostEntry] | None = None) -> int:
    """The same rows as Parquet (pyarrow), written in batches: costs as decimal128(38, 15), exact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            (
                name,
                pa.decimal128(38, 15)
                if name in _DECIMAL_COLUMNS
                else pa.int64()
                if name == "x_Entries"
                else pa.string(),
            )
            for name in COLUMNS
        ]
    )
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[list[Any]] = []
        for row in focus_rows(start, end, entries):
            batch.append([_parquet_cell(v) for v in row])
            if len(batch) == PARQUET_BATCH:
                writer.write_table(pa.Table.from_pylist([dict(zip(COLUMNS, r, strict=True)) for r in batch], schema))
                count += len(batch)
                batch = []
        writer.write_table(pa.Table.from_pylist([dict(zip(COLUMNS, r, strict=True)) for r in batch], schema))
        count += len(batch)
    return count


def _parquet_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value
