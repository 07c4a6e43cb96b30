"""The JSON API at /api/v1/ (django-ninja).

django-ninja rather than DRF: ingest is the hot path, and pydantic-core validates a 1,000-event
batch in a few milliseconds, far faster than DRF serializers; the same schemas give the
OpenAPI 3 document (/api/v1/openapi.json) and the interactive docs (/api/v1/docs).

Every error is JSON: {"code": "...", "message": "...", "errors": {"field": ["..."]}}.

This module holds what every operation shares: the NinjaAPI, its error answers, the key's authentication
and rate limit, the types of numbers and text in bodies. The operations are in api.events (usage),
api.budgets (check, reserve, settle, budgets and templates) and api.spend (the key, spend, batches).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from decimal import Decimal
from typing import Annotated, Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictInt,
    WithJsonSchema,
)
from pydantic import ValidationError as PydanticValidationError

from core.money import MONEY_MAX
from core.scopes import SCOPE_KINDS
from core.validation import has_surrogate

from .models import ApiKey

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


def field_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
    return {"__all__": [str(m) for m in exc.messages]}


def invalid(errors: dict[str, list[str]], status: int = 422) -> ApiError:
    field, messages = next(iter(errors.items()))
    message = f"{field}: {messages[0]}" if field != "__all__" else messages[0]
    return ApiError(status, "invalid", message, errors=errors)


def pydantic_errors(exc: PydanticValidationError) -> dict[str, list[str]]:
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
            rate_limit(key)
        return key


def rate_limit(key: ApiKey) -> None:
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


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL (\\u0000) character")
    if has_surrogate(value):
        raise ValueError("must not contain a lone surrogate (\\ud800-\\udfff): it is not a character")
    return value


# Every string of a request: PostgreSQL's text columns cannot hold NUL, and no database stores a lone
# surrogate (it cannot be encoded), so neither gets one.
Text = Annotated[str, AfterValidator(no_nul)]


def json_int(**constraints: Any) -> Any:
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
        from .events import BatchIn

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
    return _error_response(invalid(errors))


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
    return _error_response(invalid({"__all__": [f"a value does not fit the ledger: {message}"]}))


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


def namespaced(key: ApiKey, idempotency_key: str) -> str:
    """Idempotency keys are per service: the same key from two services is two events."""
    full = f"{key.service}/{idempotency_key}"
    if len(full) > 200:
        full = f"{key.service}/sha256:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
    return full


def only_query_params(request: HttpRequest, *names: str) -> None:
    """Refuse a query parameter the operation does not have (as bodies refuse unknown fields): a typo
    such as ?limt=5 would otherwise be ignored without a word."""
    for name, values in request.GET.lists():
        if any("\x00" in value for value in values):
            raise invalid({name: ["must not contain a NUL (\\u0000) character"]})
    unknown = sorted(set(request.GET) - set(names))
    if unknown:
        known = ", ".join(names) or "none"
        raise invalid({unknown[0]: [f"is not a query parameter of this operation (known: {known})"]})


def scope_allowed(key: ApiKey, scope: str) -> None:
    if not key.allows_scope(scope):
        within = f" (a key of team {key.team.name}: its scopes are team:{key.team.name}/...)" if key.team else ""
        raise ApiError(
            403, "forbidden", f"this API key may not use scope {scope!r}{within}", errors={"scope": ["forbidden"]}
        )


def django_invalid(exc: DjangoValidationError) -> ApiError:
    return invalid(field_errors(exc))


# The operations, registered on `api` by their modules (in the order the OpenAPI document lists them).
from . import budgets, events, spend  # noqa: E402, F401
