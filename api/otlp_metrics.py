"""The OTLP/HTTP metrics receiver: `POST /v1/metrics`, for deployments that export GenAI metrics only.

Read: the token counters of the GenAI conventions, `gen_ai.client.inference.usage.input_tokens`,
`.output_tokens`, `.cache_read.input_tokens`, `.cache_write.input_tokens` and
`.reasoning.output_tokens` (monotonic sums, by `gen_ai.token.modality`), and the older histogram
`gen_ai.client.token.usage` (its sum, by `gen_ai.token.type` input/output). Every other metric is
skipped by its name, unread. Each data point is usage of one kind by one provider, model and operation
over an interval; the points of one collection (an SDK exports them in one request) with the same
attributes become one ledger entry, marked `aggregated` (many calls, no per-call detail), priced per
model like any event, the cache and reasoning counts taken out of the input and output they are part of.

Temporality: a delta point is the usage of its interval, recorded once under the idempotency key
`otelm:<digest of the call and the point's time>`. A cumulative point is a running total since the exporting process
started: what it adds since the stream's previous point is the usage (api.models.OtlpMetricStream
keeps, per service and stream, the start time, the time and the total last read, locked while a
point is read). A point no newer than the last one read (an exporter's retry, a late point) adds
nothing; a new start time or a lower total is a restart, and the new total is all new usage. The
stream's row and the entries are written in one transaction: a retry after a lost answer counts once.

Answers as `/v1/traces` does (api.otlp.export_view): ExportMetricsServiceResponse with
partial_success.rejected_data_points naming the first refused points.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, DataPointFlags, Metric

from tracking.services import cost_entry_record_many

from .api import namespaced
from .models import ApiKey, OtlpMetricStream
from .otlp import (
    SpanRejected,
    _attributes,
    attribution,
    disjoint,
    export_view,
    messages_joined,
    model_call,
    otlp_time,
    outcome,
)

USAGE_HISTOGRAM = "gen_ai.client.token.usage"  # by gen_ai.token.type
USAGE_COUNTERS = {  # monotonic sums, by gen_ai.token.modality -> the kind of tokens they count
    "gen_ai.client.inference.usage.input_tokens": "input",
    "gen_ai.client.inference.usage.output_tokens": "output",
    "gen_ai.client.inference.usage.cache_read.input_tokens": "cache_read",
    "gen_ai.client.inference.usage.cache_write.input_tokens": "cache_write",
    "gen_ai.client.inference.usage.reasoning.output_tokens": "reasoning",
}
TOKEN_TYPES = {"input": "input", "output": "output"}  # gen_ai.token.type of the histogram
# The point attributes that say which tokens it counts; the others name the call (provider, model, ...).
KIND_ATTRIBUTES = ("gen_ai.token.type", "gen_ai.token.modality")
# (kind, modality) -> the ledger's quantity; text and unknown modalities are text tokens.
QUANTITIES = {
    ("input", "text"): "input_tokens",
    ("input", "image"): "input_image_tokens",
    ("input", "audio"): "input_audio_tokens",
    ("input", "video"): "input_video_tokens",
    ("output", "text"): "output_tokens",
    ("output", "image"): "output_image_tokens",
    ("output", "audio"): "output_audio_tokens",
    ("output", "video"): "output_video_tokens",
    ("cache_read", "text"): "cached_input_tokens",
    ("cache_read", "image"): "cached_image_tokens",
    ("cache_read", "audio"): "cached_audio_tokens",
    ("cache_write", "text"): "cache_write_tokens",
    ("cache_write", "audio"): "cache_write_audio_tokens",
    ("reasoning", "text"): "reasoning_tokens",
}
# Counted inside another quantity by the conventions: taken out of it (api.otlp.disjoint).
INSIDE = {
    "input_tokens": ("cached_input_tokens", "cache_write_tokens"),
    "input_image_tokens": ("cached_image_tokens",),
    "input_audio_tokens": ("cached_audio_tokens", "cache_write_audio_tokens"),
    "output_tokens": ("reasoning_tokens",),
}
CUMULATIVE, DELTA = (
    AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
    AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
)
NEVER_READ = -1  # OtlpMetricStream.start_time_unix_nano of a stream created by this request


@csrf_exempt
def metrics(request: HttpRequest) -> HttpResponse:
    return export_view(request, ExportMetricsServiceRequest, _metrics_answer)


def _metrics_answer(key: ApiKey, export: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
    answer = ExportMetricsServiceResponse()
    rejected, messages = points_record(key=key, export=export)
    if rejected:
        answer.partial_success.rejected_data_points = rejected
        answer.partial_success.error_message = messages_joined(messages)
    return answer


@dataclass
class Point:
    """One data point of a token metric: `value` tokens of `quantity` over (start, time]."""

    name: str  # for messages
    group: str  # the call it counts (resource, scope, attributes but the token kind) and its time
    stream: str  # the group's key without the time, plus the metric and token kind: what accumulates
    quantity: str
    cumulative: bool
    start: int
    time: int
    value: int
    event: dict[str, Any] = field(default_factory=dict)  # provider, model, operation, outcome, attribution


def points_record(*, key: ApiKey, export: ExportMetricsServiceRequest) -> tuple[int, list[str]]:
    """Record the usage the token metrics of an export add, as aggregated events of the key's service.
    Returns how many data points were refused and why, each reason naming its point."""
    points: list[Point] = []
    messages: list[str] = []
    for point_or_error in _points(export):
        if isinstance(point_or_error, str):
            messages.append(point_or_error)
        else:
            points.append(point_or_error)
    rejected = len(messages)
    if not points:
        return rejected, messages
    with transaction.atomic():
        added = _usage_added(key.service, points)
        groups: dict[str, list[Point]] = defaultdict(list)
        for point, tokens in added:
            point.value = tokens
            groups[point.group].append(point)
        events = [_event(key, group) for group in groups.values()]
        events = [(group, event) for group, event in zip(groups.values(), events, strict=True) if event is not None]
        if events:
            results = cost_entry_record_many([event for _, event in events])
            for (group, _), result in zip(events, results, strict=True):
                if result.status == "rejected":
                    rejected += len(group)
                    errors = "; ".join(f"{f}: {', '.join(map(str, m))}" for f, m in (result.errors or {}).items())
                    messages.append(f"{group[0].name}: {errors}")
    return rejected, messages


def _points(export: ExportMetricsServiceRequest) -> Iterator[Point | str]:
    """The token metrics' data points, or a message naming a point that cannot be read."""
    subject_names, tag_names = settings.OTLP_SUBJECT_ATTRIBUTES, settings.OTLP_TAG_ATTRIBUTES
    for resource_metrics in export.resource_metrics:
        resource: dict[str, Any] | None = None
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != USAGE_HISTOGRAM and metric.name not in USAGE_COUNTERS:
                    continue  # not a token metric: skipped unread
                if resource is None:
                    resource = _attributes(resource_metrics.resource.attributes)
                where = _digest(sorted(resource.items()), scope_metrics.scope.name)
                try:
                    temporality, data_points = _data(metric)
                except SpanRejected as exc:
                    yield f"{metric.name}: {exc}"
                    continue
                for point in data_points:
                    if point.flags & DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK:
                        continue
                    try:
                        yield _point(metric, point, temporality, resource, where, subject_names, tag_names)
                    except SpanRejected as exc:
                        yield f"{metric.name} point at {point.time_unix_nano}: {exc}"


def _data(metric: Metric) -> tuple[int, Sequence[Any]]:
    kind = metric.WhichOneof("data")
    if metric.name == USAGE_HISTOGRAM and kind == "histogram":
        temporality, points = metric.histogram.aggregation_temporality, metric.histogram.data_points
    elif metric.name in USAGE_COUNTERS and kind == "sum" and metric.sum.is_monotonic:
        temporality, points = metric.sum.aggregation_temporality, metric.sum.data_points
    else:
        expected = "a histogram" if metric.name == USAGE_HISTOGRAM else "a monotonic sum (a counter)"
        raise SpanRejected(f"must be {expected}, not {'a non-monotonic sum' if kind == 'sum' else kind}")
    if temporality not in (CUMULATIVE, DELTA):
        raise SpanRejected("aggregation_temporality must be delta or cumulative")
    return temporality, points


def _point(
    metric: Metric,
    point: Any,
    temporality: int,
    resource: Mapping[str, Any],
    where: str,
    subject_names: Sequence[str],
    tag_names: Sequence[str],
) -> Point:
    attrs = _attributes(point.attributes)
    call = model_call(attrs)
    if call is None:
        raise SpanRejected(f"gen_ai.operation.name {attrs.get('gen_ai.operation.name')!r} is no model call")
    if metric.name == USAGE_HISTOGRAM:
        kind = TOKEN_TYPES.get(str(attrs.get("gen_ai.token.type", "")).lower())
        if kind is None:
            raise SpanRejected(f"gen_ai.token.type {attrs.get('gen_ai.token.type')!r} is not input or output")
        if not point.HasField("sum"):
            raise SpanRejected("the histogram point has no sum")
        value: Any = point.sum
    else:
        kind = USAGE_COUNTERS[metric.name]
        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
    modality = str(attrs.get("gen_ai.token.modality") or "text").lower()
    quantity = QUANTITIES.get((kind, "text" if modality == "unknown" else modality))
    if quantity is None:
        raise SpanRejected(f"{modality} tokens of kind {kind} have no price unit")
    if isinstance(value, float):
        if not value.is_integer():
            raise SpanRejected(f"the token count must be a whole number, got {value!r}")
        value = int(value)
    if value < 0:
        raise SpanRejected(f"the token count must not be negative, got {value}")
    otlp_time(point.time_unix_nano, "time_unix_nano")  # a time the ledger can hold
    call_attrs = sorted((k, repr(v)) for k, v in attrs.items() if k not in KIND_ATTRIBUTES)
    call_key = _digest(where, call_attrs, temporality)
    event = {
        **call,
        **attribution(attrs, resource, subject_names=subject_names, tag_names=tag_names),
        "outcome": outcome(attrs),
    }
    start = point.start_time_unix_nano
    return Point(
        name=f"{metric.name} point at {point.time_unix_nano} ({call['provider']}/{call['model']})",
        group=_digest(call_key, point.time_unix_nano),
        stream=_digest(call_key, metric.name, kind, modality),
        quantity=quantity,
        cumulative=temporality == CUMULATIVE,
        start=start,
        time=point.time_unix_nano,
        value=value,
        event=event,
    )


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _usage_added(service: str, points: list[Point]) -> list[tuple[Point, int]]:
    """Each point with the tokens it adds: a delta point its value; a cumulative one what its stream's total
    grew by since the point read before it (locking the stream's row until the transaction ends)."""
    added = [(point, point.value) for point in points if not point.cumulative]
    cumulative = sorted((p for p in points if p.cumulative), key=lambda p: (p.stream, p.time))
    if not cumulative:
        return added
    names = sorted({p.stream for p in cumulative})  # locked in this order: concurrent exports never deadlock
    OtlpMetricStream.objects.bulk_create(
        [
            OtlpMetricStream(service=service, stream=s, start_time_unix_nano=NEVER_READ, time_unix_nano=0, value=0)
            for s in names
        ],
        ignore_conflicts=True,
    )
    rows = {
        row.stream: row
        for row in OtlpMetricStream.objects.select_for_update()
        .filter(service=service, stream__in=names)
        .order_by("stream")
    }
    changed = set()
    for point in cumulative:
        row = rows[point.stream]
        if row.start_time_unix_nano == NEVER_READ or point.start != row.start_time_unix_nano or point.value < row.value:
            if row.start_time_unix_nano != NEVER_READ and point.time <= row.time_unix_nano:
                continue  # a late point of an earlier run
            tokens = point.value  # the stream's first point, or the first since a restart: all of it is new
        elif point.time <= row.time_unix_nano:
            continue  # read before (an exporter's retry) or out of order: nothing new
        else:
            tokens = point.value - row.value
        row.start_time_unix_nano, row.time_unix_nano, row.value = point.start, point.time, point.value
        changed.add(row.stream)
        added.append((point, tokens))
    OtlpMetricStream.objects.bulk_update(
        [rows[s] for s in sorted(changed)], ["start_time_unix_nano", "time_unix_nano", "value"]
    )
    return added


def _event(key: ApiKey, group: list[Point]) -> dict[str, Any] | None:
    """The aggregated event of one call's points of one collection; None when they add no tokens."""
    quantities: dict[str, int] = defaultdict(int)
    for point in group:
        quantities[point.quantity] += point.value
    for whole, parts in INSIDE.items():
        if whole in quantities:
            quantities[whole] = disjoint(quantities[whole], *(quantities.get(part, 0) for part in parts))
    if not any(quantities.values()):
        return None
    first = group[0]
    if first.event["operation"] == "embedding":  # an embedding's input tokens are embedding tokens
        quantities = {"embedding_tokens": quantities.get("input_tokens", 0)}
    event = {
        **first.event,
        **{name: count for name, count in quantities.items() if count},
        "occurred_at": otlp_time(first.time, "time_unix_nano"),
        "aggregated": True,
        "service": key.service,
        "idempotency_key": namespaced(key, f"otelm:{first.group[:40]}"),
    }
    if key.team is not None:
        event["team"] = key.team
    return event
