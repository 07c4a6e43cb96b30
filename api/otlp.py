"""The OTLP/HTTP traces receiver: `POST /v1/traces`, mounted at the site root, so that an app
instrumented with OpenTelemetry sets OTEL_EXPORTER_OTLP_ENDPOINT=https://costcontrol.example and
OTEL_EXPORTER_OTLP_HEADERS=x-api-key=cc_... and exports to costcontrol unchanged.

A plain Django view, not a django-ninja operation: bodies are protobuf (or OTLP JSON), parsed with
the `opentelemetry-proto` package. Authentication, the per-key rate limit, the body size limit and
the idempotency namespace are the JSON API's (api.api); spans with GenAI attributes (the OpenTelemetry
GenAI semantic conventions) become the same event dicts `POST /api/v1/events` builds and are recorded
by the one write path, tracking.services.cost_entry_record_many. Other spans (a collector sends
everything) are skipped without being read further. Agent and tool spans (invoke_agent,
execute_tool, ...) are skipped too: their usage, where an instrumentation adds it, is the sum of
the model calls inside them, which are recorded on their own.

Answers: 200 with ExportTraceServiceResponse in the request's content type (partial_success counts
the spans refused and names the first reasons); 400 (body not OTLP), 401, 405, 413, 415 and, where
an exporter should retry, 429 and 503 with Retry-After, each with a google.rpc.Status body.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, DataError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from core.money import MONEY_MAX, round_money
from tracking.events import TAG_VALUE_MAX
from tracking.models import Outcome
from tracking.services import cost_entry_record_many

from .api import RETRY_AFTER_UNAVAILABLE, ApiError, namespaced, rate_limit
from .keys import api_key_verify
from .models import ApiKey

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MESSAGES_SHOWN = 5  # partial_success.error_message names this many refused spans, then counts the rest

# gen_ai.provider.name (and the deprecated gen_ai.system) -> the catalog's provider names (LiteLLM's).
# Any other value is used as it is, lowercased: the catalog decides whether it is known.
PROVIDERS = {
    "aws.bedrock": "bedrock",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure_ai",
    "az.ai.inference": "azure_ai",
    "gcp.gemini": "gemini",
    "gcp.gen_ai": "gemini",
    "gcp.vertex_ai": "vertex_ai",
    "vertex_ai": "vertex_ai",
    "mistral_ai": "mistral",
    "x_ai": "xai",
    "ibm.watsonx.ai": "watsonx",
}
# gen_ai.operation.name (or Traceloop's llm.request.type) -> the ledger's operation. Model calls only.
OPERATIONS = {
    "chat": "chat",
    "text_completion": "chat",
    "completion": "chat",
    "generate_content": "chat",
    "embeddings": "embedding",
    "embedding": "embedding",
}
SERVICE_TIER_ATTRIBUTES = ("openai.response.service_tier", "gen_ai.openai.response.service_tier")
# A cost the instrumentation computed, in USD unless gen_ai.usage.cost.currency says otherwise: the proposed
# convention first, then the vendors' spellings (OpenLIT, Pydantic AI / Logfire, LiteLLM's OpenTelemetry
# callback). Kept on the entry beside ours as a cross-check (a difference is flagged), never used as the amount.
REPORTED_COST_ATTRIBUTES = ("gen_ai.usage.cost.amount", "gen_ai.usage.cost", "operation.cost", "gen_ai.cost.total_cost")
REPORTED_COST_CURRENCY = "gen_ai.usage.cost.currency"
# No model call happened before this: an end time earlier than it is a clock or exporter bug.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RATE_LIMIT_ERROR = re.compile(r"429|rate.?limit|too.?many.?requests|resource.?exhausted|throttl", re.IGNORECASE)


class SpanRejected(ValueError):
    """This span cannot be an event (the message names the attribute); the others are still recorded."""


# --- the view ---------------------------------------------------------------------------------------


@csrf_exempt
def traces(request: HttpRequest) -> HttpResponse:
    return export_view(request, ExportTraceServiceRequest, _traces_answer)


def _traces_answer(key: ApiKey, export: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
    answer = ExportTraceServiceResponse()
    rejected, messages = spans_record(key=key, export=export)
    if rejected:
        answer.partial_success.rejected_spans = rejected
        answer.partial_success.error_message = messages_joined(messages)
    return answer


def messages_joined(messages: Sequence[str]) -> str:
    """partial_success.error_message: the first MESSAGES_SHOWN reasons, then how many more."""
    shown = messages[:MESSAGES_SHOWN]
    more = f"; and {len(messages) - len(shown)} more" if len(messages) > len(shown) else ""
    return "; ".join(shown) + more


def export_view(request: HttpRequest, request_type: type[Message], record: Callable[[ApiKey, Any], Message]):
    """One OTLP/HTTP export: the key, the body as `request_type`, then `record(key, export)`'s answer in the
    request's content type; errors as google.rpc.Status with the status an exporter acts on."""
    as_json = (request.content_type or "") == JSON
    try:
        if request.method != "POST":
            raise ApiError(405, "method_not_allowed", "OTLP/HTTP exports are POSTed", headers={"Allow": "POST"})
        key = _authenticate(request)
        answer = record(key, _export_request(request, request_type))
    except ApiError as exc:
        return _status_response(exc, as_json)
    except DataError as exc:  # a value no column holds: the batch was rolled back, nothing was recorded
        return _status_response(ApiError(400, "invalid", f"a value does not fit the ledger: {exc}"), as_json)
    except DatabaseError as exc:
        logger.warning("OTLP export failed on the database (%s: %s): answering 503", exc.__class__.__name__, exc)
        error = ApiError(
            503,
            "unavailable",
            "the database is not available; retry later (nothing was recorded)",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
        return _status_response(error, as_json)
    return _message_response(answer, as_json, status=200)


def _authenticate(request: HttpRequest) -> ApiKey:
    """`Authorization: Bearer cc_...` or `x-api-key: cc_...` (what OTEL_EXPORTER_OTLP_HEADERS sets),
    then the key's per-minute limit (429 with Retry-After), as for the JSON API."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    token = token or request.headers.get("x-api-key", "").strip()
    key = api_key_verify(token) if token else None
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "a valid API key is required: x-api-key: cc_... or Authorization: Bearer cc_... "
            "(OTEL_EXPORTER_OTLP_HEADERS=x-api-key=cc_...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    rate_limit(key)
    return key


def _too_large() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApiError(413, "body_too_large", f"an export holds at most {limit} bytes (after gzip): send smaller batches")


def _export_request(request: HttpRequest, request_type: type[Message]) -> Any:
    content_type = request.content_type or ""
    if content_type not in (PROTOBUF, JSON):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"an OTLP/HTTP export is {PROTOBUF} or {JSON}, not {content_type or 'untyped'}",
        )
    try:
        body = request.body  # Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE
    except RequestDataTooBig:
        raise _too_large() from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        body = _gunzip(body)
    elif encoding not in ("", "identity"):
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding!r}: only gzip is accepted")
    name = request_type.DESCRIPTOR.name
    if content_type == PROTOBUF:
        try:
            return request_type.FromString(body)
        except DecodeError as exc:
            raise ApiError(400, "malformed_protobuf", f"the body is not an {name}: {exc}") from None
    return otlp_json(body, request_type)


def _gunzip(body: bytes) -> bytes:
    """Decompressed, at most the body size limit (a small gzip bomb must not fill memory)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "malformed_gzip", f"Content-Encoding is gzip but the body is not gzip: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large()
    if not inflater.eof:
        raise ApiError(400, "malformed_gzip", "the gzip body is truncated")
    return data


def otlp_json(body: bytes, request_type: type[Message] = ExportTraceServiceRequest) -> Any:
    """OTLP JSON: protobuf's JSON mapping, except that trace and span ids (of spans, links and metric
    exemplars) are hex, not base64."""
    name = request_type.DESCRIPTOR.name
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "malformed_json", f"the body must be an {name} object")
    try:
        _ids_to_base64(document)
        return json_format.ParseDict(document, request_type(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not an OTLP {name}: {exc}") from None


_ID_NAMES = frozenset(("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"))


def _ids_to_base64(item: Any) -> None:
    """Every hex trace or span id in the document, in place (spans, links, exemplars)."""
    if isinstance(item, list):
        for value in item:
            _ids_to_base64(value)
        return
    if not isinstance(item, dict):
        return
    for name, value in item.items():
        if name in _ID_NAMES and isinstance(value, str):
            if value:
                try:
                    item[name] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise ValueError(f"{name} {value!r} is not hex") from None
        elif isinstance(value, dict | list) and name != "attributes":
            _ids_to_base64(value)


def _message_response(message: Message, as_json: bool, *, status: int) -> HttpResponse:
    if as_json:
        body = json_format.MessageToJson(message, indent=None).encode()
        return HttpResponse(body, status=status, content_type=JSON)
    return HttpResponse(message.SerializeToString(), status=status, content_type=PROTOBUF)


def _status_response(error: ApiError, as_json: bool) -> HttpResponse:
    response = _message_response(
        status_pb2.Status(code=_GRPC_CODES.get(error.status, 2), message=error.message), as_json, status=error.status
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


# google.rpc.Code for the HTTP statuses answered (the Status body's code).
_GRPC_CODES = {400: 3, 401: 16, 405: 12, 413: 3, 415: 3, 429: 8, 503: 14}


# --- spans to events -------------------------------------------------------------------------------


def spans_record(*, key: ApiKey, export: ExportTraceServiceRequest) -> tuple[int, list[str]]:
    """Record the GenAI spans of an export as usage events of the key's service (and team).

    Returns how many spans were refused and why, each reason naming its span. Spans without GenAI
    attributes, and agent and tool spans, are neither recorded nor refused."""
    subject_names = settings.OTLP_SUBJECT_ATTRIBUTES
    tag_names = settings.OTLP_TAG_ATTRIBUTES
    events: list[dict[str, Any]] = []
    names: list[str] = []
    messages: list[str] = []
    for resource_spans in export.resource_spans:
        resource: dict[str, Any] | None = None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if not _is_genai(span):
                    continue
                if resource is None:
                    resource = _attributes(resource_spans.resource.attributes)
                name = _span_name(span)
                try:
                    event = span_event(span, resource=resource, subject_names=subject_names, tag_names=tag_names)
                except SpanRejected as exc:
                    messages.append(f"{name}: {exc}")
                    continue
                if event is None:
                    continue
                event["service"] = key.service
                if key.team is not None:
                    event["team"] = key.team
                event["idempotency_key"] = namespaced(key, event["idempotency_key"])
                events.append(event)
                names.append(name)
    rejected = len(messages)
    if events:
        for name, result in zip(names, cost_entry_record_many(events), strict=True):
            if result.status == "rejected":
                rejected += 1
                errors = result.errors or {}
                messages.append(
                    f"{name}: " + "; ".join(f"{field}: {', '.join(map(str, msgs))}" for field, msgs in errors.items())
                )
    return rejected, messages


def _is_genai(span: Span) -> bool:
    """Cheap: one pass over the keys, no values read."""
    return any(kv.key in ("gen_ai.provider.name", "gen_ai.system") for kv in span.attributes)


def _span_name(span: Span) -> str:
    return f"span {span.span_id.hex() or '?'} of trace {span.trace_id.hex() or '?'} ({span.name[:80]!r})"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Sequence[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def span_event(
    span: Span,
    *,
    resource: Mapping[str, Any],
    subject_names: Sequence[str] = (),
    tag_names: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The usage event a GenAI span records, as `POST /api/v1/events` would send it (tracking
    validates and prices it); None for a span that is no model call (an agent or a tool).

    Raises SpanRejected naming the attribute for a span that cannot be one."""
    attrs = _attributes(span.attributes)
    call = model_call(attrs)
    if call is None:
        return None
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise SpanRejected("trace_id must be 16 bytes and span_id 8 bytes")
    event: dict[str, Any] = {
        **call,
        "occurred_at": otlp_time(span.end_time_unix_nano, "end_time_unix_nano"),
        "idempotency_key": f"otel:{span.trace_id.hex()}:{span.span_id.hex()}",
        **_quantities(attrs, call["operation"]),
    }
    if span.start_time_unix_nano and span.end_time_unix_nano >= span.start_time_unix_nano:
        event["duration_ms"] = min((span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000, 2**31 - 1)
    tier = next((t for name in SERVICE_TIER_ATTRIBUTES if (t := _text(attrs, name))), "")
    if tier:
        event["service_tier"] = tier
    event["outcome"] = outcome(attrs, failed=span.status.code == Status.STATUS_CODE_ERROR, message=span.status.message)
    event.update(_reported_cost(attrs))
    event.update(attribution(attrs, resource, subject_names=subject_names, tag_names=tag_names))
    return event


def model_call(attrs: Mapping[str, Any]) -> dict[str, str] | None:
    """Provider, model and operation of a GenAI span's or metric point's attributes; None for an operation
    that is no model call (an agent, a tool). Raises SpanRejected naming what is missing."""
    operation_name = _text(attrs, "gen_ai.operation.name") or _text(attrs, "llm.request.type") or "chat"
    operation = OPERATIONS.get(operation_name.lower())
    if operation is None:
        return None
    provider = _text(attrs, "gen_ai.provider.name") or _text(attrs, "gen_ai.system")
    if not provider:
        raise SpanRejected("gen_ai.provider.name is empty")
    provider = provider.lower()
    model = _text(attrs, "gen_ai.response.model") or _text(attrs, "gen_ai.request.model")
    if not model:
        raise SpanRejected("no model: neither gen_ai.response.model nor gen_ai.request.model is set")
    return {"provider": PROVIDERS.get(provider, provider), "model": model, "operation": operation}


def attribution(
    attrs: Mapping[str, Any], resource: Mapping[str, Any], *, subject_names: Sequence[str], tag_names: Sequence[str]
) -> dict[str, Any]:
    """Subject and tags from the configured attribute names (the span's or point's, then the resource's)."""
    fields: dict[str, Any] = {}
    subject = next((str(v) for name in subject_names if (v := _lookup(attrs, resource, name)) not in (None, "")), "")
    if subject:
        fields["subject"] = subject
    tags = {
        name: str(value)[:TAG_VALUE_MAX]
        for name in tag_names
        if (value := _lookup(attrs, resource, name)) not in (None, "") and not isinstance(value, list | dict)
    }
    resource_service = str(resource.get("service.name") or "")
    if resource_service and not resource_service.startswith("unknown_service"):
        # The key decides the service (as for /api/v1/events); the app's own name is kept beside it.
        tags["service.name"] = resource_service[:TAG_VALUE_MAX]
    if tags:
        fields["tags"] = tags
    return fields


def _lookup(attrs: Mapping[str, Any], resource: Mapping[str, Any], name: str) -> Any:
    return attrs[name] if name in attrs else resource.get(name)


def _text(attrs: Mapping[str, Any], name: str) -> str:
    value = attrs.get(name)
    return value.strip() if isinstance(value, str) else ""


def _count(attrs: Mapping[str, Any], name: str) -> int | None:
    """A token count: an integer (OTLP JSON's int64 arrive as strings, some SDKs send doubles)."""
    value = attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise SpanRejected(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise SpanRejected(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise SpanRejected(f"{name} must not be negative, got {value}")
    return value


# Each count under its semconv name first, then the older or OpenLLMetry (Traceloop) spelling.
USAGE_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
USAGE_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
USAGE_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
USAGE_CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
USAGE_REASONING = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")


def _first_count(attrs: Mapping[str, Any], names: Sequence[str]) -> int | None:
    return next((count for name in names if (count := _count(attrs, name)) is not None), None)


def disjoint(whole: int, *parts: int) -> int:
    """`whole` without `parts` that the conventions count inside it (cache tokens in the input, reasoning in
    the output); whole as it is when smaller than the parts: the sender counted them apart."""
    return whole - sum(parts) if whole >= sum(parts) else whole


def _quantities(attrs: Mapping[str, Any], operation: str) -> dict[str, Any]:
    """The ledger's disjoint quantities. The conventions count cache reads and writes inside
    gen_ai.usage.input_tokens and reasoning inside output_tokens: they are taken out. An
    instrumentation that reports them apart (input_tokens smaller than the cache tokens, as
    Anthropic's API does) is read as it reports them."""
    input_tokens = _first_count(attrs, USAGE_INPUT)
    output_tokens = _first_count(attrs, USAGE_OUTPUT)
    cache_read = _first_count(attrs, USAGE_CACHE_READ) or 0
    cache_write = _first_count(attrs, USAGE_CACHE_WRITE) or 0
    reasoning = _first_count(attrs, USAGE_REASONING) or 0
    if input_tokens is None and output_tokens is None and not (cache_read or cache_write or reasoning):
        return {}
    if operation == "embedding":
        return {"embedding_tokens": input_tokens or 0}
    quantities = {
        "input_tokens": disjoint(input_tokens or 0, cache_read, cache_write),
        "output_tokens": disjoint(output_tokens or 0, reasoning),
        "cached_input_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }
    return {name: value for name, value in quantities.items() if value}


def _reported_cost(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The span's own cost as reported_amount / reported_by; nothing for a cost in another currency than the
    catalog's (USD), which cannot be compared with ours. A value that is no cost refuses the span."""
    name = next((name for name in REPORTED_COST_ATTRIBUTES if attrs.get(name) not in (None, "")), None)
    if name is None or _text(attrs, REPORTED_COST_CURRENCY).upper() not in ("", "USD"):
        return {}
    value = attrs[name]
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidOperation
        cost = Decimal(repr(value) if isinstance(value, float) else value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise SpanRejected(f"{name} must be a number, got {value!r}") from None
    if not cost.is_finite() or cost < 0 or cost > MONEY_MAX:
        raise SpanRejected(f"{name} must be a cost between 0 and {MONEY_MAX}, got {value!r}")
    return {"reported_amount": round_money(cost), "reported_by": name}


def otlp_time(nanos: int, name: str) -> datetime:
    if not nanos:
        raise SpanRejected(f"{name} is not set")
    try:
        moment = UNIX_EPOCH + timedelta(microseconds=nanos // 1000)  # exact: no float on the way
    except (OverflowError, OSError, ValueError):
        raise SpanRejected(f"{name} {nanos} is not a time") from None
    if moment < EARLIEST:
        raise SpanRejected(f"{name} {nanos} is {moment.isoformat()}, before any model call")
    return moment  # too far in the future: tracking refuses it (COSTCONTROL_MAX_FUTURE_SKEW_SECONDS)


def outcome(attrs: Mapping[str, Any], *, failed: bool = False, message: str = "") -> str:
    """success; error when the span failed or error.type is set; rate_limited when a clue says 429."""
    error_type = attrs.get("error.type")
    if not failed and error_type in (None, ""):
        return Outcome.SUCCESS
    clues = (error_type, attrs.get("http.response.status_code"), message)
    if any(_RATE_LIMIT_ERROR.search(str(clue)) for clue in clues if clue not in (None, "")):
        return Outcome.RATE_LIMITED
    return Outcome.ERROR
