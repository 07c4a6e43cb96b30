"""POST /api/v1/events: one usage event or a batch, recorded by tracking's one write path."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest
from ninja import Status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
)
from pydantic import ValidationError as PydanticValidationError

from core.money import plain_money as _money
from tracking.models import Outcome
from tracking.services import IdempotencyConflict, cost_entry_record, cost_entry_record_many

from .api import (
    COMMON,
    MAX_BATCH,
    ApiError,
    MoneyIn,
    QuantityIn,
    Text,
    _json_body,
    api,
    field_errors,
    invalid,
    json_int,
    namespaced,
    pydantic_errors,
)
from .models import ApiKey

# --- events ------------------------------------------------------------------------------------

Quantity = json_int(ge=0, le=2**62)


class UsageIn(BaseModel):
    """What a call used, as the provider reported it, in the ledger's disjoint quantities: every token
    is counted in exactly one field (input_tokens exclude cache reads and writes and audio/image/video
    tokens; output_tokens exclude reasoning and audio/image tokens). The README maps OpenAI's,
    Anthropic's and Gemini's usage objects onto them."""

    model_config = ConfigDict(extra="forbid")

    # pattern: more than spaces (tracking strips them, then requires a value).
    provider: Text = Field(min_length=1, max_length=100, pattern=r"\S")
    model: Text = Field(min_length=1, max_length=200, pattern=r"\S")
    operation: Text = Field(default="", max_length=50, description="chat, embedding, image_generation, ...")
    variant: Text = Field(default="", max_length=100, description="image quality/size, e.g. hd/1024-x-1792")
    service_tier: Text = Field(
        default="",
        max_length=20,
        description="the tier that served the call, as the response says: priority, flex, batch, ... "
        '("", "default" and "standard": the standard tier); a tier the catalog has no price for is stored unpriced',
    )
    region: Text = Field(
        default="",
        max_length=50,
        description="where the provider processed the call, as it names it: OpenAI data residency (eu, us), "
        "Vertex AI location (us-central1, global), Anthropic usage.inference_geo (us, global); "
        "prices multiplied there (e.g. x 1.1 for processing in the EU) apply",
    )
    speed: Text = Field(
        default="", max_length=20, description='the speed that served the call: Anthropic usage.speed ("fast")'
    )
    input_tokens: Quantity = Field(default=0, description="text tokens neither read from nor written to a cache")
    output_tokens: Quantity = Field(default=0, description="text output tokens, without reasoning tokens")
    cached_input_tokens: Quantity = Field(default=0, description="text tokens read from the prompt cache")
    cache_write_tokens: Quantity = Field(default=0, description="tokens written to the cache (5-minute lifetime)")
    cache_write_1h_tokens: Quantity = Field(default=0, description="tokens written to the cache (1-hour lifetime)")
    reasoning_tokens: Quantity = 0
    embedding_tokens: Quantity = 0
    images: Quantity = Field(default=0, description="images generated (priced per image, by variant)")
    requests: Quantity = 0
    input_audio_tokens: Quantity = Field(default=0, description="audio tokens in the prompt, not read from the cache")
    output_audio_tokens: Quantity = 0
    cached_audio_tokens: Quantity = 0
    cache_write_audio_tokens: Quantity = 0
    input_image_tokens: Quantity = Field(default=0, description="image tokens in the prompt, not read from the cache")
    output_image_tokens: Quantity = 0
    cached_image_tokens: Quantity = 0
    input_video_tokens: Quantity = 0
    output_video_tokens: Quantity = 0
    input_characters: Quantity = 0
    output_characters: Quantity = 0
    input_images: Quantity = Field(default=0, description="images in the prompt, where priced per image")
    pixels: Quantity = 0
    pages: Quantity = 0
    web_searches: Quantity = Field(default=0, description="web search queries (search context size as variant)")
    maps_queries: Quantity = 0
    sessions: Quantity = Field(default=0, description="code interpreter sessions")
    messages: Quantity = Field(default=0, description="text messages (priced per message)")
    citation_tokens: Quantity = Field(
        default=0, description="citation tokens (Perplexity), billed on top of the prompt"
    )
    guardrail_units: Quantity = Field(default=0, description="guardrail policy units; the policy counter as variant")
    seconds: QuantityIn | None = Field(default=None, description="decimal string")
    gpu_hours: QuantityIn | None = Field(default=None, description="decimal string")
    input_audio_seconds: QuantityIn | None = Field(default=None, description="decimal string")
    input_video_seconds: QuantityIn | None = Field(default=None, description="decimal string")
    credits: QuantityIn | None = Field(default=None, description="decimal string: OCR credits")


class EventIn(UsageIn):
    """One usage event. Quantities are priced from the catalog in force at occurred_at unless an
    explicit amount is given."""

    amount: MoneyIn | None = Field(default=None, description="explicit cost")
    currency: Text | None = Field(default=None, min_length=3, max_length=3, description="ISO 4217, with amount")
    occurred_at: datetime | None = Field(default=None, description="ISO 8601 with offset; default now")
    service: Text | None = Field(default=None, max_length=100, description="default: the API key's service")
    subject: Text = Field(default="", max_length=200, description="end user id")
    job: Text = Field(default="", max_length=200, description="batch job id")
    tags: dict[Text, Text] = Field(default_factory=dict)
    outcome: Literal["success", "error", "rate_limited"] = Outcome.SUCCESS
    duration_ms: json_int(ge=0, lt=2**31) | None = None
    is_estimate: StrictBool | None = None
    reported_amount: MoneyIn | None = Field(
        default=None,
        description="what the sender's own tool computed for the call (e.g. LiteLLM's response_cost), in the "
        "entry's currency: kept beside the amount as a cross-check and flagged where it differs, never used as it",
    )
    reported_by: Text = Field(default="", max_length=50, description="what computed reported_amount (e.g. litellm)")
    usage_unavailable: StrictBool = False
    idempotency_key: Text | None = Field(default=None, min_length=1, max_length=200)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # {"events": [...], "x": 1} is read as one (invalid) event

    events: list[EventIn] = Field(description=f"at most {MAX_BATCH}; each needs an idempotency_key")


_event_adapter = TypeAdapter(EventIn)
_EVENTS_BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/EventIn"},
                    {"$ref": "#/components/schemas/BatchIn"},
                ]
            }
        }
    },
}


def _raw_event(key: ApiKey, event: EventIn) -> dict[str, Any]:
    """The validated event as tracking's usage_event_clean takes it (it checks the business rules)."""
    if event.service is not None and event.service != key.service:
        raise DjangoValidationError(
            {"service": f"this API key records for service {key.service!r} only, not {event.service!r}"}
        )
    raw = event.model_dump(exclude_none=True)
    raw["service"] = key.service
    if key.team is not None:
        raw["team"] = key.team  # a team's key records its team's usage (core.scopes)
    if event.idempotency_key:
        raw["idempotency_key"] = namespaced(key, event.idempotency_key)
    return raw


@api.post(
    "/events",
    openapi_extra={"requestBody": _EVENTS_BODY_SCHEMA},
    summary="Record one usage event or a batch of up to 1000",
    response={200: dict, 201: dict, 403: dict, 409: dict, 422: dict, **COMMON},
)
def events_record(request: HttpRequest) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    body = _json_body(request)
    if isinstance(body, dict) and "events" in body and set(body) == {"events"}:
        return _batch(key, body["events"])
    if not isinstance(body, dict):
        raise invalid({"__all__": ['the body must be an event object or {"events": [...]}']}, status=400)
    try:
        event = _event_adapter.validate_python(body)
        result = cost_entry_record(**_raw_event(key, event))
    except PydanticValidationError as exc:
        raise invalid(pydantic_errors(exc)) from None
    except IdempotencyConflict as exc:
        conflict = _conflict(event.idempotency_key, field_errors(exc))
        raise ApiError(409, "idempotency_conflict", conflict["idempotency_key"][0], errors=conflict) from None
    except DjangoValidationError as exc:
        errors = field_errors(exc)
        if "service" in errors and "records for service" in errors["service"][0]:
            raise ApiError(403, "forbidden", errors["service"][0], errors=errors) from None
        raise invalid(errors) from None
    entry = result.entry
    payload = {
        "status": "accepted" if result.created else "duplicate",
        "id": entry.pk,
        "amount": _money(entry.amount),
        "currency": entry.currency,
        "pricing_status": entry.pricing_status,
    }
    return Status(201 if result.created else 200, payload)


def _batch(key: ApiKey, items: Any) -> Any:
    if not isinstance(items, list):
        raise invalid({"events": ["must be a list of event objects"]}, status=400)
    if len(items) > MAX_BATCH:
        raise ApiError(
            413,
            "batch_too_large",
            f"a batch holds at most {MAX_BATCH} events; this one has {len(items)}: split it",
        )
    results: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise DjangoValidationError({"__all__": "must be an event object"})
            event = _event_adapter.validate_python(item)
            if not event.idempotency_key:
                raise DjangoValidationError({"idempotency_key": "is required for every event of a batch"})
            valid.append((index, _raw_event(key, event)))
        except PydanticValidationError as exc:
            results[index] = _rejected(index, pydantic_errors(exc))
        except DjangoValidationError as exc:
            results[index] = _rejected(index, field_errors(exc))
    recorded = cost_entry_record_many([raw for _, raw in valid]) if valid else []
    for (index, _), item in zip(valid, recorded, strict=True):
        if item.status == "rejected":
            errors = {k: [str(m) for m in v] for k, v in (item.errors or {}).items()}
            if item.code:
                errors = _conflict(items[index]["idempotency_key"], errors)
            results[index] = {**_rejected(index, errors), "code": item.code or None}
        else:
            entry = item.entry
            assert entry is not None
            results[index] = {
                "index": index,
                "status": item.status,
                "id": entry.pk,
                "amount": _money(entry.amount),
                "currency": entry.currency,
                "pricing_status": entry.pricing_status,
                "errors": None,
                "code": None,
            }
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for result in results:
        assert result is not None
        counts[result["status"]] += 1
    return Status(
        200,
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        },
    )


def _conflict(idempotency_key: str | None, errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """tracking's conflict, naming the key as the caller sent it (not as namespaced by service)."""
    return {"idempotency_key": [f"idempotency key {idempotency_key!r} {errors['idempotency_key'][0]}"]}


def _rejected(index: int, errors: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "index": index,
        "status": "rejected",
        "id": None,
        "amount": None,
        "currency": None,
        "pricing_status": None,
        "errors": errors,
        "code": None,
    }
