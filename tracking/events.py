"""Usage events as callers send them, validated: what `cost_entry_record` and the API accept.

Validation only (no database, but for a team named by its name): a bad value raises
ValidationError naming the field, before anything is priced or written.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from core.models import Team
from core.money import parse_currency, parse_decimal, parse_money
from core.validation import clean_text, has_surrogate

from .models import DECIMAL_QUANTITY_FIELDS, INTEGER_QUANTITY_FIELDS, CostEntry, Outcome, PricingStatus
from .pricing import STANDARD_TIER_NAMES

QUANTITY_FIELDS = INTEGER_QUANTITY_FIELDS + DECIMAL_QUANTITY_FIELDS
_LIMITS = {
    "provider": 100,
    "model": 200,
    "operation": 50,
    "variant": 100,
    "service_tier": 20,
    "region": 50,
    "speed": 20,
    "service": 100,
    "subject": 200,
    "job": 200,
    "reported_by": 50,
}
# The ledger column decides how many places a decimal quantity may have.
_DECIMAL_QUANTITY_PLACES = {name: CostEntry._meta.get_field(name).decimal_places for name in DECIMAL_QUANTITY_FIELDS}
TAG_KEY_MAX, TAG_VALUE_MAX, TAGS_MAX = 50, 100, 20


@dataclass
class UsageEvent:
    """A validated usage event, ready to be priced and written."""

    provider: str
    model: str
    occurred_at: datetime
    idempotency_key: str
    operation: str = ""
    variant: str = ""
    service_tier: str = ""  # as the provider said, lowercased; "" standard. An unknown one is priced as unpriced.
    # Where the provider processed the call and at what speed, as it names them, lowercased (OpenAI data
    # residency eu/us, Vertex AI location, Anthropic inference_geo; Anthropic speed "fast"): price multipliers.
    region: str = ""
    speed: str = ""
    service: str = ""
    subject: str = ""
    job: str = ""
    team: Team | None = None
    tags: dict[str, str] = field(default_factory=dict)
    quantities: dict[str, Any] = field(default_factory=dict)
    amount: Decimal | None = None
    currency: str = "USD"
    outcome: str = Outcome.SUCCESS
    duration_ms: int | None = None
    is_estimate: bool | None = None
    # What the sender's own tool said the call cost, in the entry's currency: a cross-check, never the amount.
    reported_amount: Decimal | None = None
    reported_by: str = ""
    aggregated: bool = False  # many calls' usage summed by the sender (OpenTelemetry metrics)
    usage_unavailable: bool = False  # the call happened but reported no usage (e.g. a stream without it)
    occurred_at_stated: bool = True  # False: the caller left it out and it is the time of recording


_OUTCOMES = frozenset(Outcome.values)  # Outcome.values builds its list on every access


def _text(raw: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    return clean_text(raw.get(name), field=name, max_length=_LIMITS[name], required=required)


def _quantity(raw: Mapping[str, Any], name: str) -> int | Decimal:
    value = raw.get(name)
    if value is None:
        return 0
    if name in INTEGER_QUANTITY_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValidationError({name: f"must be finite, got {value}"})
            raise ValidationError({name: f"must be a non-negative integer, got {value!r}"})
        if value < 0:
            raise ValidationError({name: f"must be a non-negative integer, got {value}"})
        if value >= 2**63:
            raise ValidationError({name: f"{value} is out of range"})
        return value
    number = parse_decimal(value, field=name)
    if number < 0:
        raise ValidationError({name: f"must not be negative, got {value}"})
    places = _DECIMAL_QUANTITY_PLACES[name]
    # Range first: quantizing a huge value (5E+307) to `places` exceeds the context's precision.
    if number >= Decimal(10) ** 12:
        raise ValidationError({name: f"{value} is out of range"})
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError({name: f"{value} has more than {places} decimal places"})
    return number


def _service_tier(raw: Mapping[str, Any]) -> str:
    tier = _text(raw, "service_tier").lower()
    return "" if tier in STANDARD_TIER_NAMES else tier


def _tags(raw: Mapping[str, Any]) -> dict[str, str]:
    value = raw.get("tags") or {}
    if not isinstance(value, Mapping):
        raise ValidationError({"tags": "must be an object of key -> value strings"})
    if len(value) > TAGS_MAX:
        raise ValidationError({"tags": f"at most {TAGS_MAX} tags per event"})
    tags: dict[str, str] = {}
    for key, tag_value in value.items():
        if not isinstance(key, str) or not key.strip() or "=" in key or len(key) > TAG_KEY_MAX or has_surrogate(key):
            raise ValidationError({"tags": f"tag key {key!r} must be 1-{TAG_KEY_MAX} characters without '='"})
        if not isinstance(tag_value, str) or len(tag_value) > TAG_VALUE_MAX or has_surrogate(tag_value):
            raise ValidationError(
                {"tags": f"tag {key!r} must have a string value of at most {TAG_VALUE_MAX} characters"}
            )
        tags[key.strip()] = tag_value.strip()
    return tags


def _occurred_at(raw: Mapping[str, Any], now: datetime) -> datetime:
    value = raw.get("occurred_at")
    if value is None:
        return now
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError({"occurred_at": f"{value!r} is not an ISO-8601 timestamp"}) from None
    if not isinstance(value, datetime):
        raise ValidationError({"occurred_at": "must be a timestamp"})
    if timezone.is_naive(value):
        raise ValidationError({"occurred_at": "must include a time zone offset (e.g. 2026-11-23T10:00:00+00:00)"})
    try:
        value.astimezone(UTC)  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC: no database holds it
    except OverflowError:
        raise ValidationError({"occurred_at": f"{value.isoformat()} is out of range"}) from None
    skew = timedelta(seconds=settings.COSTCONTROL_MAX_FUTURE_SKEW_SECONDS)
    if value > now + skew:
        raise ValidationError({"occurred_at": f"{value.isoformat()} is more than {skew} in the future"})
    return value


def usage_event_clean(
    raw: Mapping[str, Any], *, now: datetime | None = None, teams: Mapping[str, Team] | None = None
) -> UsageEvent:
    """Validate one raw event (strings, numbers, Decimals). Raises ValidationError naming the field."""
    now = now or timezone.now()
    known = {
        "provider",
        "model",
        "operation",
        "variant",
        "service_tier",
        "region",
        "speed",
        "service",
        "subject",
        "job",
        "team",
        "tags",
        "amount",
        "currency",
        "outcome",
        "duration_ms",
        "is_estimate",
        "reported_amount",
        "reported_by",
        "aggregated",
        "usage_unavailable",
        "idempotency_key",
        "occurred_at",
        *QUANTITY_FIELDS,
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValidationError({unknown[0]: "is not a known field"})
    event = UsageEvent(
        provider=_text(raw, "provider", required=True).lower(),
        model=_text(raw, "model", required=True),
        operation=_text(raw, "operation"),
        variant=_text(raw, "variant"),
        service_tier=_service_tier(raw),
        region=_text(raw, "region").lower(),
        speed=_text(raw, "speed").lower(),
        service=_text(raw, "service"),
        subject=_text(raw, "subject"),
        job=_text(raw, "job"),
        occurred_at=_occurred_at(raw, now),
        occurred_at_stated=raw.get("occurred_at") is not None,
        idempotency_key="",
        tags=_tags(raw),
        quantities={name: _quantity(raw, name) for name in QUANTITY_FIELDS},
    )
    key = raw.get("idempotency_key")
    if key is None or key == "":
        event.idempotency_key = uuid.uuid4().hex
    elif not isinstance(key, str) or len(key) > 200:
        raise ValidationError({"idempotency_key": "must be a string of at most 200 characters"})
    else:
        event.idempotency_key = key
    if raw.get("amount") is not None:
        event.amount = parse_money(raw["amount"], field="amount")
        if event.amount < 0:
            raise ValidationError({"amount": "must not be negative (corrections are made with cost_entry_correct)"})
    if raw.get("currency") not in (None, "") and event.amount is None:
        # Priced events are in the catalog's currency: a currency alone would be dropped without a word.
        raise ValidationError({"currency": "is given without an amount: a currency applies to an explicit amount"})
    event.currency = parse_currency(raw.get("currency") or "USD")
    outcome = raw.get("outcome") or Outcome.SUCCESS
    if outcome not in _OUTCOMES:
        raise ValidationError({"outcome": f"{outcome!r} is not one of {', '.join(Outcome.values)}"})
    event.outcome = outcome
    duration = raw.get("duration_ms")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int) or not 0 <= duration < 2**31:
            raise ValidationError(
                {"duration_ms": f"must be a non-negative integer number of milliseconds, got {duration!r}"}
            )
        event.duration_ms = duration
    if raw.get("is_estimate") is not None:
        if not isinstance(raw["is_estimate"], bool):
            raise ValidationError({"is_estimate": "must be true or false"})
        event.is_estimate = raw["is_estimate"]
    if raw.get("reported_amount") is not None:
        event.reported_amount = parse_money(raw["reported_amount"], field="reported_amount")
        if event.reported_amount < 0:
            raise ValidationError({"reported_amount": "must not be negative"})
        event.reported_by = _text(raw, "reported_by")
    elif raw.get("reported_by") not in (None, ""):
        raise ValidationError({"reported_by": "is given without a reported_amount"})
    if raw.get("aggregated") is not None:
        if not isinstance(raw["aggregated"], bool):
            raise ValidationError({"aggregated": "must be true or false"})
        event.aggregated = raw["aggregated"]
    if raw.get("usage_unavailable") is not None:
        if not isinstance(raw["usage_unavailable"], bool):
            raise ValidationError({"usage_unavailable": "must be true or false"})
        event.usage_unavailable = raw["usage_unavailable"]
        if event.usage_unavailable and (event.amount is not None or any(event.quantities.values())):
            raise ValidationError({"usage_unavailable": "an event without usage carries no quantities or amount"})
    team = raw.get("team")
    if team not in (None, ""):
        if isinstance(team, Team):
            event.team = team
        else:
            found = (teams or {}).get(str(team)) if teams is not None else Team.objects.filter(name=str(team)).first()
            if found is None:
                raise ValidationError({"team": f"unknown team {team!r}"})
            event.team = found
    return event


# The fields of a ledger entry that follow from what its caller sent (the amount and occurred_at apart).
_STATED_FIELDS = (
    "provider",
    "model",
    "operation",
    "variant",
    "service_tier",
    "region",
    "speed",
    "service",
    "subject",
    "job",
    "team_id",
    "tags",
    "outcome",
    "duration_ms",
    "is_estimate",
    "reported_amount",
    "reported_by",
    "aggregated",
    "note",
    *QUANTITY_FIELDS,
)


def usage_event_conflicts(event: UsageEvent, new: CostEntry, stored: CostEntry) -> list[str]:
    """The fields in which a repeat of an idempotency key differs from the entry recorded under it.

    Compared: the stored entry against the repeat's validated event as an entry would record it, so
    spellings that validate alike ("OpenAI" and "openai", 1.50 and 1.5) are the same event. Left out:
    occurred_at when the repeat leaves it to the time of recording, and a priced amount (the catalog
    may have changed since); an explicit amount and its currency are compared."""
    names = [name for name in _STATED_FIELDS if getattr(new, name) != getattr(stored, name)]
    if event.occurred_at_stated and new.occurred_at != stored.occurred_at:
        names.append("occurred_at")
    explicit = PricingStatus.EXPLICIT
    if (new.pricing_status == explicit or stored.pricing_status == explicit) and (
        new.pricing_status != stored.pricing_status or new.amount != stored.amount or new.currency != stored.currency
    ):
        names.append("amount")
    return names
