"""The JSON API at /api/v1/ (django-ninja).

django-ninja rather than DRF: ingest is the hot path, and pydantic-core validates a 1,000-event
batch in a few milliseconds, far faster than DRF serializers; the same schemas give the
OpenAPI 3 document (/api/v1/openapi.json) and the interactive docs (/api/v1/docs).

Every error is JSON: {"code": "...", "message": "...", "errors": {"field": ["..."]}}.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic import ValidationError as PydanticValidationError

from budgets.models import Budget, Period, Reservation, default_thresholds
from budgets.selectors import (
    BudgetStatus,
    TemplateSummary,
    budget_check,
    budget_statuses,
    template_summary,
    with_forecasts,
)
from budgets.services import BudgetExceeded, budget_reserve, reservation_release, reservation_settle
from budgets.templates import budget_override_clear, budget_override_set, template_has_values
from core.money import MONEY_MAX, parse_money
from core.money import plain_money as _money
from core.scopes import SCOPE_KINDS, template_prefix, template_value
from core.validation import has_surrogate
from tracking.models import Outcome
from tracking.services import IdempotencyConflict, cost_entry_record, cost_entry_record_many

from .models import ApiKey
from .selectors import GROUP_BY, spend_grouped

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
RETRY_AFTER_UNAVAILABLE = 5
# Answers every operation may give (documented so schema checks know them).
COMMON = {400: dict, 401: dict, 413: dict, 415: dict, 422: dict, 429: dict, 503: dict}


# --- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.headers, self.extra = errors, headers or {}, extra or {}


def _error_response(error: ApiError) -> JsonResponse:
    body: dict[str, Any] = {"code": error.code, "message": error.message, **error.extra}
    if error.errors:
        body["errors"] = error.errors
    response = JsonResponse(body, status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def _field_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
    return {"__all__": [str(m) for m in exc.messages]}


def _invalid(errors: dict[str, list[str]], status: int = 422) -> ApiError:
    field, messages = next(iter(errors.items()))
    message = f"{field}: {messages[0]}" if field != "__all__" else messages[0]
    return ApiError(status, "invalid", message, errors=errors)


def _pydantic_errors(exc: PydanticValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if part not in ("body", "payload", "query")]
        field = ".".join(loc) or "__all__"
        errors.setdefault(field, []).append(error["msg"])
    return errors


# --- authentication and rate limiting -------------------------------------------------------------


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer cc_<prefix>_<secret>`; then the key's per-minute request limit."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        from .keys import api_key_verify

        key = api_key_verify(token)
        if key is not None:
            _rate_limit(key)
        return key


def _rate_limit(key: ApiKey) -> None:
    """A fixed one-minute window per key in Django's cache (atomic add/incr on Redis or Memcached;
    per process with the local-memory cache)."""
    limit = key.rate_limit_per_minute or settings.API_RATE_LIMIT_PER_MINUTE
    if not limit:
        return
    now = time.time()
    window = int(now // 60)
    cache_key = f"api-rate:{key.prefix}:{window}"
    if cache.add(cache_key, 1, timeout=120):
        return
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=120)
        return
    if count > limit:
        retry_after = max(1, int((window + 1) * 60 - now) + 1)
        raise ApiError(
            429,
            "rate_limited",
            f"this API key may make {limit} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _json_body(request: HttpRequest) -> Any:
    """The request body as JSON, every number that is not an integer an exact Decimal, never a float (money
    is Decimal from the request body on); NaN and Infinity are not JSON numbers and are refused. A body
    that is not JSON by its Content-Type is a 415, one nested too deep to read a 400."""
    body = request.body
    content_type = request.content_type or ""
    if body and not (content_type == "application/json" or content_type.endswith("+json")):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be JSON (Content-Type: application/json), not {content_type or 'untyped'}",
        )
    try:
        return json.loads(body or b"null", parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply to be an event") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


class DecimalJsonParser(Parser):
    """Request bodies read by _json_body, for every operation."""

    def parse_body(self, request: HttpRequest) -> Any:
        return _json_body(request)


# --- the types of numbers in request bodies ---------------------------------------------------------------

# A decimal number as a string, exactly the strings the server accepts (no sign but '+', ASCII digits, no
# spaces, no '_' separators that Python's Decimal would take): "12.50", "0.0000025", "2.5E-6" (str(Decimal)).
DECIMAL_STRING = r"^\+?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_DECIMAL_STRING_RE = re.compile(DECIMAL_STRING)


# A decimal string's exponent beyond this names no amount or quantity; Decimal cannot even hold some.
_EXPONENT_LIMIT = 10**6


def _decimal_input(value: Any) -> Any:
    if isinstance(value, str):
        if (match := _DECIMAL_STRING_RE.fullmatch(value)) is None:
            raise ValueError(f"{value!r} is not a non-negative decimal number (e.g. 12.50 or 2.5E-6)")
        text = (match.group(2) or "e0")[1:]
        digits = text.lstrip("+-").lstrip("0")  # a very long exponent: its sign says which way it fails
        exponent = int(text) if len(digits) <= 7 else (-1 if text.startswith("-") else 1) * (_EXPONENT_LIMIT + 1)
        if exponent > _EXPONENT_LIMIT:
            raise ValueError(f"{value!r} is out of range: it must be less than or equal to the field's maximum")
        if exponent < -_EXPONENT_LIMIT:
            raise ValueError(f"{value!r} has more decimal places than any amount or quantity holds")
    if isinstance(value, float | bool):  # in-process callers only: the parsers never make floats
        raise ValueError(f"must be a decimal string or an exact JSON number, not {type(value).__name__}")
    return value


def _decimal_type(maximum: int, *, exclusive: bool = False) -> Any:
    """A non-negative Decimal: a JSON number (read exactly) or a decimal string; the schema says which.

    `maximum` is an integer so that the schema states it exactly (a JSON float would round it)."""
    bound = {"lt": maximum} if exclusive else {"le": maximum}
    number: dict[str, Any] = {"type": "number", "minimum": 0}
    number["exclusiveMaximum" if exclusive else "maximum"] = maximum
    return Annotated[
        Decimal,
        BeforeValidator(_decimal_input),
        Field(ge=0, allow_inf_nan=False, **bound),
        WithJsonSchema({"anyOf": [number, {"type": "string", "pattern": DECIMAL_STRING}]}),
    ]


# Amounts: whole units below the column's MONEY_MAX (9,223,372,036.854775807), which JSON could not state exactly.
MoneyIn = _decimal_type(int(MONEY_MAX))
QuantityIn = _decimal_type(10**12, exclusive=True)  # tracking's range for seconds and GPU-hours


def _integral(value: Any) -> Any:
    """JSON's 3.0 is the integer 3 (JSON Schema agrees); the body parsers read it as Decimal("3.0")."""
    if isinstance(value, Decimal) and value.is_finite() and abs(value) < 2**63 and value == value.to_integral_value():
        return int(value)
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL (\\u0000) character")
    if has_surrogate(value):
        raise ValueError("must not contain a lone surrogate (\\ud800-\\udfff): it is not a character")
    return value


# Every string of a request: PostgreSQL's text columns cannot hold NUL, and no database stores a lone
# surrogate (it cannot be encoded), so neither gets one.
Text = Annotated[str, AfterValidator(_no_nul)]


def _json_int(**constraints: Any) -> Any:
    """A JSON integer (never a string or boolean). The constraints go before the validator: after it,
    pydantic could not state them in the schema."""
    return Annotated[StrictInt, Field(**constraints), BeforeValidator(_integral)]


# The scope grammar of core.scopes.scope_errors: global, KIND:VALUE (no surrounding spaces), tag:KEY=VALUE.
_VALUE_KINDS = "|".join(kind for kind in SCOPE_KINDS if kind not in ("global", "tag"))
# Whitespace spelled out: what Python's str.strip() strips (scope_errors). \s differs between
# engines (ECMAScript's, which schema-driven clients and schemathesis use, leaves out U+0085 and
# U+001C-U+001F; pydantic's Rust regex and Python's include them), so a scope could match the
# published pattern and still be refused.
_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_WS = rf"[^{_WS}]"
SCOPE_PATTERN = rf"^(global|({_VALUE_KINDS}):{_NOT_WS}([\s\S]*{_NOT_WS})?|tag:[^={_WS}][^=]*=[\s\S]*{_NOT_WS})$"


class CostcontrolAPI(NinjaAPI):
    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        """Adds EventIn and BatchIn: /events reads its body itself (a batch is validated event by
        event, so one bad event does not reject the others) and only references them."""
        schema = super().get_openapi_schema(*args, **kwargs)
        batch = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(batch.pop("$defs", {}))
        components["BatchIn"] = batch
        return schema


api = CostcontrolAPI(
    title="costcontrol",
    version="1",
    description="Record AI API and GPU usage exactly once, check budgets, read spend.",
    auth=ApiKeyAuth(),
    urls_namespace="api-v1",
    docs_url="/docs",
    parser=DecimalJsonParser(),
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return _error_response(exc)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error_response(
        ApiError(
            401,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer cc_... (keys are created in the admin)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    )


@api.exception_handler(NinjaValidationError)
def _schema_invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload", "query", "path")]
        errors.setdefault(".".join(loc) or "__all__", []).append(str(error.get("msg", "is invalid")))
    return _error_response(_invalid(errors))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApiError):  # django-ninja wraps what the body parser raises in a 400
        return _error_response(exc.__cause__)
    code = "malformed_json" if exc.status_code == 400 else "error"
    return _error_response(ApiError(exc.status_code, code, str(exc)))


@api.exception_handler(RequestDataTooBig)
def _body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _error_response(
        ApiError(
            413,
            "body_too_large",
            f"a request body holds at most {limit} bytes: split the batch",
            extra={"limit_bytes": limit},
        )
    )


@api.exception_handler(DataError)
def _database_refused_a_value(request: HttpRequest, exc: DataError) -> HttpResponse:
    """A value the schema let through but a column cannot hold (the transaction was rolled back:
    nothing was recorded)."""
    message = str(exc).splitlines()[0] if str(exc) else "a value does not fit its column"
    return _error_response(_invalid({"__all__": [f"a value does not fit the ledger: {message}"]}))


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
@api.exception_handler(DatabaseError)
def _database_down(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.warning("API request failed on the database (%s: %s): answering 503", exc.__class__.__name__, exc)
    return _error_response(
        ApiError(
            503,
            "unavailable",
            "the database is not available; retry later (nothing was recorded)",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    )


# --- events ------------------------------------------------------------------------------------

Quantity = _json_int(ge=0, le=2**62)


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
    duration_ms: _json_int(ge=0, lt=2**31) | None = None
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


def _namespaced(key: ApiKey, idempotency_key: str) -> str:
    """Idempotency keys are per service: the same key from two services is two events."""
    full = f"{key.service}/{idempotency_key}"
    if len(full) > 200:
        full = f"{key.service}/sha256:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
    return full


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
        raw["idempotency_key"] = _namespaced(key, event.idempotency_key)
    return raw


def _only_query_params(request: HttpRequest, *names: str) -> None:
    """Refuse a query parameter the operation does not have (as bodies refuse unknown fields): a typo
    such as ?limt=5 would otherwise be ignored without a word."""
    for name, values in request.GET.lists():
        if any("\x00" in value for value in values):
            raise _invalid({name: ["must not contain a NUL (\\u0000) character"]})
    unknown = sorted(set(request.GET) - set(names))
    if unknown:
        known = ", ".join(names) or "none"
        raise _invalid({unknown[0]: [f"is not a query parameter of this operation (known: {known})"]})


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
        raise _invalid({"__all__": ['the body must be an event object or {"events": [...]}']}, status=400)
    try:
        event = _event_adapter.validate_python(body)
        result = cost_entry_record(**_raw_event(key, event))
    except PydanticValidationError as exc:
        raise _invalid(_pydantic_errors(exc)) from None
    except IdempotencyConflict as exc:
        conflict = _conflict(event.idempotency_key, _field_errors(exc))
        raise ApiError(409, "idempotency_conflict", conflict["idempotency_key"][0], errors=conflict) from None
    except DjangoValidationError as exc:
        errors = _field_errors(exc)
        if "service" in errors and "records for service" in errors["service"][0]:
            raise ApiError(403, "forbidden", errors["service"][0], errors=errors) from None
        raise _invalid(errors) from None
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
        raise _invalid({"events": ["must be a list of event objects"]}, status=400)
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
            results[index] = _rejected(index, _pydantic_errors(exc))
        except DjangoValidationError as exc:
            results[index] = _rejected(index, _field_errors(exc))
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


# --- budgets -----------------------------------------------------------------------------------


class CheckIn(Schema):
    model_config = ConfigDict(extra="forbid")
    scope: Text = Field(min_length=1, max_length=320, pattern=SCOPE_PATTERN, examples=["model:gpt-4o"])
    amount: MoneyIn = Field(default=Decimal(0), description="what the work would cost")


class ReserveIn(Schema):
    model_config = ConfigDict(extra="forbid")
    scopes: list[
        Annotated[str, Field(min_length=1, max_length=320, pattern=SCOPE_PATTERN), AfterValidator(_no_nul)]
    ] = Field(min_length=1, max_length=20)
    amount: MoneyIn
    ttl_seconds: _json_int(gt=0, le=7 * 24 * 3600) | None = None


class SettleIn(Schema):
    """Exactly one of the two: the amount, or the call's usage, which the server prices now."""

    model_config = ConfigDict(extra="forbid")
    actual: MoneyIn | None = Field(default=None, description="the real cost")
    usage: UsageIn | None = Field(default=None, description="the call's usage, priced as recording it would be")


def _scope_allowed(key: ApiKey, scope: str) -> None:
    if not key.allows_scope(scope):
        within = f" (a key of team {key.team.name}: its scopes are team:{key.team.name}/...)" if key.team else ""
        raise ApiError(
            403, "forbidden", f"this API key may not use scope {scope!r}{within}", errors={"scope": ["forbidden"]}
        )


def _status_json(status: BudgetStatus) -> dict[str, Any]:
    budget, period = status.budget, status.period
    return {
        "id": budget.pk,
        "name": budget.name,
        "scope": budget.scope,
        "period": budget.period,
        "currency": budget.currency,
        "limit": _money(status.limit),
        "spent": _money(status.spent),
        "reserved": _money(status.reserved),
        "remaining": _money(status.remaining),
        "available": _money(status.available),
        "utilisation": None if status.utilisation is None else _money(status.utilisation),
        "level": status.level_label,
        "hard_limit": budget.hard_limit,
        "count_billed": budget.count_billed,
        "allowed": status.allowed,
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat() if period.end else None,
    }


def _forecast_json(status: BudgetStatus) -> dict[str, Any] | None:
    forecast = status.forecast
    if forecast is None:
        return None
    return {
        "amount": _money(forecast.amount),
        "low": _money(forecast.low),
        "high": _money(forecast.high),
        "interval": _money(forecast.interval),
        "method": forecast.method,
        "exceed_at": forecast.exceed_at.isoformat() if forecast.exceed_at else None,
        "label": status.forecast_label,
    }


def _django_invalid(exc: DjangoValidationError) -> ApiError:
    return _invalid(_field_errors(exc))


@api.post(
    "/budgets/check", response={200: dict, 403: dict, 422: dict, **COMMON}, summary="Where the budgets of a scope stand"
)
def budgets_check(request: HttpRequest, payload: CheckIn) -> Any:
    _scope_allowed(request.auth, payload.scope)  # type: ignore[attr-defined]
    try:
        statuses = budget_check(scope=payload.scope, amount=payload.amount)
    except DjangoValidationError as exc:
        raise _django_invalid(exc) from None
    # A budget the key may not read (the organisation's global one, for a team's key) still decides
    # `allowed`, but its figures are not shown.
    shown = [_status_json(s) for s in statuses if request.auth.allows_scope(s.budget.scope)]  # type: ignore[attr-defined]
    return Status(200, {"allowed": all(s.allowed for s in statuses), "budgets": shown})


def _reservation_json(reservation: Reservation) -> dict[str, Any]:
    return {
        "id": reservation.pk,
        "budget_id": reservation.budget_id,
        "budget": reservation.budget.name,
        "amount": _money(reservation.amount),
        "expires_at": reservation.expires_at.isoformat(),
        "status": reservation.status_at(),
        "actual": _money(reservation.actual),
    }


@api.post(
    "/budgets/reserve",
    response={201: dict, 403: dict, 409: dict, 422: dict, **COMMON},
    summary="Hold an estimate on the hard-limit budgets of some scopes, or be denied",
)
def budgets_reserve(request: HttpRequest, payload: ReserveIn) -> Any:
    for scope in payload.scopes:
        _scope_allowed(request.auth, scope)  # type: ignore[attr-defined]
    ttl = timedelta(seconds=payload.ttl_seconds) if payload.ttl_seconds else None
    try:
        held = budget_reserve(scopes=payload.scopes, amount=payload.amount, ttl=ttl, service=request.auth.service)  # type: ignore[attr-defined]
    except BudgetExceeded as exc:
        if not request.auth.allows_scope(exc.budget.scope):  # type: ignore[attr-defined]
            raise ApiError(
                409,
                "budget_exceeded",
                f"a budget of scope {exc.budget.scope} that this API key may not read has no room for it",
                extra={
                    "budget": {"id": None, "name": None, "scope": exc.budget.scope},
                    "available": None,
                    "requested": _money(exc.requested),
                },
            ) from None
        raise ApiError(
            409,
            "budget_exceeded",
            str(exc),
            extra={
                "budget": {"id": exc.budget.pk, "name": exc.budget.name, "scope": exc.budget.scope},
                "available": _money(exc.available),
                "requested": _money(exc.requested),
            },
        ) from None
    except DjangoValidationError as exc:
        raise _django_invalid(exc) from None
    return Status(201, {"reservations": [_reservation_json(r) for r in held]})


def _reservation_for(key: ApiKey, reservation_id: int) -> Reservation:
    reservation = Reservation.objects.select_related("budget").filter(pk=reservation_id).first()
    if reservation is None:
        raise ApiError(404, "not_found", f"no reservation #{reservation_id}")
    if reservation.service and reservation.service == key.service:
        return reservation  # its own hold, on whichever budgets the reserve applied (global ones too)
    _scope_allowed(key, reservation.budget.scope)
    if reservation.service:
        # Releasing would free headroom on another service's hard limit; settling would close its hold.
        raise ApiError(
            403,
            "forbidden",
            f"reservation #{reservation_id} belongs to service {reservation.service!r}; "
            f"this API key is for {key.service!r}",
            errors={"reservation": ["forbidden"]},
        )
    return reservation


@api.post(
    "/reservations/{reservation_id}/settle",
    response={200: dict, 403: dict, 404: dict, 409: dict, 422: dict, **COMMON},
    summary="Settle a reservation with the real cost, or with the call's usage for the server to price",
)
def reservations_settle(request: HttpRequest, reservation_id: int, payload: SettleIn) -> Any:
    reservation = _reservation_for(request.auth, reservation_id)  # type: ignore[arg-type]
    try:
        reservation = reservation_settle(
            reservation=reservation,
            actual=payload.actual,
            usage=None if payload.usage is None else payload.usage.model_dump(exclude_none=True),
        )
    except DjangoValidationError as exc:
        errors = _field_errors(exc)
        if "reservation" not in errors:  # the request's amount or usage: nothing was changed
            raise _invalid(errors) from None
        raise ApiError(409, "conflict", next(iter(errors.values()))[0], errors=errors) from None
    return Status(200, _reservation_json(reservation))


@api.post(
    "/reservations/{reservation_id}/release",
    response={200: dict, 403: dict, 404: dict, 409: dict, **COMMON},
    summary="Release a reservation (the work did not happen)",
)
def reservations_release(request: HttpRequest, reservation_id: int) -> Any:
    reservation = _reservation_for(request.auth, reservation_id)  # type: ignore[arg-type]
    try:
        reservation = reservation_release(reservation=reservation)
    except DjangoValidationError as exc:
        errors = _field_errors(exc)
        raise ApiError(409, "conflict", next(iter(errors.values()))[0], errors=errors) from None
    return Status(200, _reservation_json(reservation))


def _budget_json(status: BudgetStatus) -> dict[str, Any]:
    """A plain budget or a template's value as GET /budgets lists it: its status and forecast."""
    return {**_status_json(status), "forecast": _forecast_json(status), "template": False}


def _template_json(summary: TemplateSummary) -> dict[str, Any]:
    """A template as GET /budgets lists it: its settings and where its values stand, no status of its own."""
    return summary.as_json()


def _value_json(template: Budget, status: BudgetStatus) -> dict[str, Any]:
    return {
        **_budget_json(status),
        "value": template_value(template.scope, status.budget.scope),
        "override": status.budget.override,
    }


@api.get(
    "/budgets",
    response={200: dict, **COMMON},
    summary="Every active budget and template the key may see: a budget with its status, a template with its "
    "values' summary",
)
def budgets_list(request: HttpRequest) -> Any:
    _only_query_params(request)
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    at = datetime.now(UTC)
    budgets = [b for b in Budget.objects.listed().filter(is_active=True).order_by("name") if key.allows_scope(b.scope)]
    statuses = {
        s.budget.pk: s for s in budget_statuses([b for b in budgets if not b.is_template], at=at, forecasts=True)
    }
    return Status(
        200,
        {
            "budgets": [
                _template_json(template_summary(b, at=at, top=0)) if b.is_template else _budget_json(statuses[b.pk])
                for b in budgets
            ]
        },
    )


def _template_for(key: ApiKey, budget_id: int) -> Budget:
    """A template the key may see; 404 for any other budget (one it may not see is not told apart)."""
    template = Budget.objects.listed().filter(pk=budget_id).select_related("team").first()
    if template is None or not key.allows_scope(template.scope):
        raise ApiError(404, "not_found", f"no budget #{budget_id}")
    if not template.is_template:
        raise ApiError(404, "not_found", f"budget #{budget_id} is not a template (its scope does not end in *)")
    return template


def _may_manage(key: ApiKey, budget: Budget | None = None) -> None:
    """Creating and changing budgets needs a key with "manage budgets"; a team's key changes its team's only."""
    if not key.can_manage_budgets:
        raise ApiError(
            403,
            "forbidden",
            'this API key may not manage budgets (an administrator ticks "manage budgets" on the key)',
            errors={"__all__": ["forbidden"]},
        )
    if budget is not None and key.team_id is not None and budget.team_id != key.team_id:
        raise ApiError(
            403,
            "forbidden",
            f"budget #{budget.pk} is not one of team {key.team.name}'s budgets",  # type: ignore[union-attr]
            errors={"__all__": ["forbidden"]},
        )


@api.get(
    "/budgets/{budget_id}/values",
    response={200: dict, 404: dict, **COMMON},
    summary="A template's values of highest utilisation (their value containing q), each with its status",
)
def budgets_values(
    request: HttpRequest,
    budget_id: int,
    q: str = Query("", max_length=200, description="only values containing this text (any case)"),
    limit: int = Query(20, ge=1, le=500),
) -> Any:
    _only_query_params(request, "q", "limit")
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    template = _template_for(key, budget_id)
    summary = template_summary(template, at=datetime.now(UTC), search=q, top=limit)
    return Status(
        200,
        {
            "template": _template_json(summary),
            "values": [_value_json(template, s) for s in with_forecasts(summary.top)],
        },
    )


def _threshold_input(value: Any) -> Any:
    if isinstance(value, bool | str | float):
        raise ValueError("must be a JSON number (a percent of the limit, e.g. 80)")
    return value


# A percent of the limit; its range and order are the model's to check (budgets.models.threshold_errors).
ThresholdIn = Annotated[
    Decimal, BeforeValidator(_threshold_input), Field(allow_inf_nan=False), WithJsonSchema({"type": "number"})
]


def _model_default(field: str) -> Any:
    return Budget._meta.get_field(field).get_default()


class BudgetIn(Schema):
    """A budget, or a template when its scope ends in * (subject:*, tag:customer=*, team:ml/job:*):
    each value then gets a budget of its own, with these settings, on first use."""

    model_config = ConfigDict(extra="forbid")
    name: Text = Field(min_length=1, max_length=200, pattern=r"\S", examples=["Per user"])
    scope: Text = Field(
        min_length=1,
        max_length=320,
        examples=["subject:*"],
        description="global, provider:X, service:X, model:X, subject:X, job:X, tag:KEY=VALUE, team:NAME(/...); "
        "ending in * a template: subject:*, job:*, tag:customer=*, team:NAME/subject:*, team:*",
    )
    amount: MoneyIn = Field(description="what may be spent per period (by each value, for a template)")
    currency: Text = Field(default=_model_default("currency"), min_length=3, max_length=3)
    period: Text = Field(default=_model_default("period"), json_schema_extra={"enum": list(Period.values)})
    thresholds: list[ThresholdIn] = Field(
        default_factory=lambda: [Decimal(t) for t in default_thresholds()],
        max_length=20,
        description="percents of the limit, lowest first",
    )
    rollover: StrictBool = _model_default("rollover")
    rollover_cap: MoneyIn | None = None
    hard_limit: StrictBool = _model_default("hard_limit")
    forecast_alerts: StrictBool = _model_default("forecast_alerts")
    count_billed: StrictBool = Field(
        default=False,
        description="count the providers' imported bills instead of the metered spend for closed UTC days "
        "(global or provider:NAME budgets without a team only)",
    )
    confirm_scope: StrictBool = Field(
        default=False,
        description="a template whose kind never had spend (a typo in a tag key?) is refused unless this is true",
    )


def _threshold(value: Decimal) -> int | float:
    """A percent as the JSON column keeps it (the admin's form writes the same)."""
    if abs(value) < 10**6 and value == value.to_integral_value():
        return int(value)
    return float(value)  # a fraction; a huge one becomes inf and threshold_errors refuses it


@api.post(
    "/budgets",
    response={201: dict, 403: dict, 422: dict, **COMMON},
    summary="Create a budget, or a template (scope ending in *); needs a key that may manage budgets",
)
def budgets_create(request: HttpRequest, payload: BudgetIn) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    _may_manage(key)
    _scope_allowed(key, payload.scope)
    fields = payload.model_dump()
    confirmed = fields.pop("confirm_scope")
    fields["thresholds"] = [_threshold(t) for t in payload.thresholds]
    errors: dict[str, list[str]] = {}
    for field in ("amount", "rollover_cap"):  # the places and range a money column holds
        if fields[field] is not None:
            try:
                fields[field] = parse_money(fields[field], field=field)
            except DjangoValidationError as exc:
                errors.update(_field_errors(exc))
    budget = Budget(**fields, team=key.team)  # a team's key creates its team's budgets
    try:
        budget.full_clean(exclude=list(errors))
    except DjangoValidationError as exc:
        for field, messages in _field_errors(exc).items():
            errors.setdefault(field, []).extend(messages)
    if budget.is_template and "scope" not in errors and not confirmed and not template_has_values(budget.scope):
        errors["scope"] = [
            f"no spend has ever been recorded for a value of {budget.scope}: check the spelling (the tag key?), "
            "or send confirm_scope: true to create it all the same"
        ]
    if errors:
        raise _invalid(errors)
    budget.save()
    if budget.is_template:
        return Status(201, _template_json(template_summary(budget, top=0)))
    return Status(201, _budget_json(budget_statuses([budget], forecasts=True)[0]))


def _value_param(value: str) -> str:
    """A template's value from the path, as a text column can hold it."""
    try:
        return _no_nul(value)
    except ValueError as exc:
        raise _invalid({"value": [str(exc)]}) from None


class OverrideIn(Schema):
    model_config = ConfigDict(extra="forbid")
    amount: MoneyIn = Field(description="the value's own amount per period, instead of the template's")


@api.put(
    "/budgets/{budget_id}/values/{value}",
    response={200: dict, 403: dict, 404: dict, 422: dict, **COMMON},
    summary="Give one value of a template an amount of its own (its budget is created if it has none)",
)
def budgets_value_override(request: HttpRequest, budget_id: int, value: str, payload: OverrideIn) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    _may_manage(key)
    template = _template_for(key, budget_id)
    _may_manage(key, template)
    try:
        budget = budget_override_set(template=template, value=_value_param(value), amount=payload.amount)
    except DjangoValidationError as exc:
        raise _django_invalid(exc) from None
    return Status(200, _value_json(template, budget_statuses([budget], forecasts=True)[0]))


@api.delete(
    "/budgets/{budget_id}/values/{value}",
    response={200: dict, 403: dict, 404: dict, 422: dict, **COMMON},
    summary="A value follows its template's amount again",
)
def budgets_value_follow(request: HttpRequest, budget_id: int, value: str) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    _may_manage(key)
    template = _template_for(key, budget_id)
    _may_manage(key, template)
    scope = template_prefix(template.scope) + _value_param(value)
    budget = Budget.objects.filter(template=template, scope=scope).first()
    if budget is None:
        raise ApiError(404, "not_found", f"template #{template.pk} has no budget for value {value!r}")
    budget = budget_override_clear(budget=budget)
    return Status(200, _value_json(template, budget_statuses([budget], forecasts=True)[0]))


@api.get(
    "/key",
    response={200: dict, **COMMON},
    summary="The calling API key: its service, team, scopes, whether it may manage budgets, and its limits",
)
def key_show(request: HttpRequest) -> Any:
    """Any key reads itself (never its secret): a client learns the service its events must name."""
    _only_query_params(request)
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return Status(
        200,
        {
            "name": key.name,
            "prefix": key.prefix,
            "service": key.service,
            "team": key.team.name if key.team else None,
            "scopes": list(key.scopes),
            "can_manage_budgets": key.can_manage_budgets,
            "rate_limit_per_minute": key.rate_limit_per_minute or settings.API_RATE_LIMIT_PER_MINUTE or None,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
    )


# --- spend -------------------------------------------------------------------------------------


class SpendQuery(Schema):
    scope: Text = Field(default="global", min_length=1, max_length=320, pattern=SCOPE_PATTERN)
    start: datetime = Field(alias="from", description="ISO 8601 with offset")
    end: datetime = Field(alias="to", description="ISO 8601 with offset")
    group_by: Literal["provider", "model", "service", "subject", "day", "hour"] | None = None
    currency: Text = Field(default="USD", min_length=3, max_length=3)


@api.get(
    "/spend", response={200: dict, 403: dict, 422: dict, **COMMON}, summary="Spend of a scope in a window, from rollups"
)
def spend(request: HttpRequest, query: Query[SpendQuery]) -> Any:
    _only_query_params(request, "scope", "from", "to", "group_by", "currency")
    _scope_allowed(request.auth, query.scope)  # type: ignore[attr-defined]
    try:
        answer = spend_grouped(
            scope=query.scope, start=query.start, end=query.end, group_by=query.group_by, currency=query.currency
        )
    except DjangoValidationError as exc:
        raise _django_invalid(exc) from None
    return Status(
        200,
        {
            "scope": query.scope,
            "from": query.start.isoformat(),
            "to": query.end.isoformat(),
            "currency": query.currency,
            "total": _money(answer.total),
            "group_by": query.group_by,
            "groups": [{"key": g.key, "amount": _money(g.amount), "events": g.events} for g in answer.groups],
        },
    )


# --- batches -----------------------------------------------------------------------------------


class BatchStartIn(Schema):
    model_config = ConfigDict(extra="forbid")
    # tracking.batches refuses spaces inside a name or job (a pattern cannot say it portably: the regex
    # engines of pydantic, Python and JSON Schema validators disagree on what a space is).
    name: Text = Field(min_length=1, max_length=200, description="the pipeline, e.g. nightly-leads")
    job: Text | None = Field(default=None, max_length=200, description="default: <name>-<UTC start time>")
    note: Text = Field(default="", max_length=500)


class BatchFinishIn(Schema):
    model_config = ConfigDict(extra="forbid")
    leads: _json_int(ge=0, lt=2**63) = Field(description="how many leads the batch produced")


def _batch_owned(key: ApiKey, batch: Any) -> None:
    """A pipeline belongs to the service whose key started its last batch; one started in process or
    from the command line, to keys that may read every scope."""
    if batch.service == key.service:
        return
    if not batch.service:
        _scope_allowed(key, "global")
        return
    raise ApiError(
        403,
        "forbidden",
        f"batch {batch.name!r} belongs to service {batch.service!r}; this API key is for {key.service!r}",
        errors={"name": ["forbidden"]},
    )


def _batch_json(batch: Any, key: ApiKey) -> dict[str, Any]:
    # Month-to-date cost per lead is every service's spend: shown to keys that may read scope global.
    month = key.allows_scope("global")
    return {
        "id": batch.pk,
        "name": batch.name,
        "job": batch.job,
        "service": batch.service,
        "started_at": batch.started_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "leads": batch.leads,
        "cost": _money(batch.cost),
        "cost_per_lead": _money(batch.cost_per_lead),
        "month_cost_per_lead": _money(batch.month_cost_per_lead) if month else None,
        "currency": "USD",
    }


@api.post(
    "/batches",
    response={201: dict, 403: dict, 409: dict, 422: dict, **COMMON},
    summary="Open a batch; record its usage with its job",
)
def batches_start(request: HttpRequest, payload: BatchStartIn) -> Any:
    from tracking.batches import batch_latest, batch_start

    key: ApiKey = request.auth  # type: ignore[attr-defined]
    if (latest := batch_latest(name=payload.name.strip())) is not None:
        _batch_owned(key, latest)
    try:
        batch = batch_start(name=payload.name, job=payload.job, note=payload.note, service=key.service)
    except DjangoValidationError as exc:
        errors = _field_errors(exc)
        # A batch of that name still running, or the job id taken: the request is fine, the state conflicts.
        if any("already" in message for messages in errors.values() for message in messages):
            raise ApiError(409, "conflict", next(iter(errors.values()))[0], errors=errors) from None
        raise _invalid(errors) from None
    return Status(201, _batch_json(batch, key))


@api.post(
    "/batches/{name}/finish",
    response={200: dict, 403: dict, 404: dict, 422: dict, **COMMON},
    summary="Close the running batch of a pipeline with its lead count; answers its cost per lead",
)
def batches_finish(request: HttpRequest, name: str, payload: BatchFinishIn) -> Any:
    from tracking.batches import batch_cost_compute, batch_finish, batch_running

    key: ApiKey = request.auth  # type: ignore[attr-defined]
    try:
        running = batch_running(name=name)
    except DjangoValidationError as exc:
        raise ApiError(404, "not_found", _field_errors(exc)["name"][0]) from None
    _batch_owned(key, running)
    try:
        batch = batch_cost_compute(batch=batch_finish(batch=running, leads=payload.leads))
    except DjangoValidationError as exc:
        raise _django_invalid(exc) from None
    return Status(200, _batch_json(batch, key))


@api.get("/batches", response={200: dict, **COMMON}, summary="The last batches with cost and cost per lead")
def batches_list(request: HttpRequest, limit: int = Query(20, ge=1, le=500)) -> Any:
    from tracking.models import Batch

    _only_query_params(request, "limit")
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    batches = Batch.objects.order_by("-started_at")
    if key.scopes or key.team_id is not None:  # a restricted or a team's key sees its service's batches
        batches = batches.filter(service=key.service)
    return Status(200, {"batches": [_batch_json(b, key) for b in batches[:limit]]})


__all__ = ["GROUP_BY", "api"]
