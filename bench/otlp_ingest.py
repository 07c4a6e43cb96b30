#!/usr/bin/env python
"""Benchmark of OTLP trace ingest: spans/s through POST /v1/traces, and raw COPY beside it.

    bin/with-postgres .venv/bin/python bench/otlp_ingest.py           # part of `make bench`
    ... bench/otlp_ingest.py --batches 40 --batch-size 512 --clients 4 --workers 2 --rounds 3

What an OpenTelemetry SDK's OTLP/HTTP exporter sends: each request an ExportTraceServiceRequest of
`--batch-size` (512, the BatchSpanProcessor's default export size) GenAI model-call spans,
protobuf-serialised and gzip-compressed before the clock starts, POSTed with
`Content-Type: application/x-protobuf`, `Content-Encoding: gzip` and `x-api-key`. The spans are
api_ingest.py's events (the same 6 models, 200 subjects and 2 % errors), each a span of the
GenAI semantic conventions: gen_ai.provider.name, gen_ai.operation.name, request and response
model, gen_ai.usage.input_tokens (cache reads included, on 30 % of the chat spans) and
output_tokens, user.id (the subject), gen_ai.agent.name (a tag), under a resource whose
service.name is one of api_ingest.py's 4 services; unique trace and span ids, end times within
the last day. Every answer must be a 200 without partial_success rejected spans, and the ledger
must hold one row per span sent: otherwise the run fails (exit 1) instead of printing figures.

Database, server, API key (no rate limit), rounds and the COPY reference are api_ingest.py's
(imported from it): the reference COPYs the rows the spans become (what
api.otlp.span_event makes of them) straight into tracking_costentry. Spans/s = spans accepted /
wall time of the round; each figure is the median of --rounds rounds; the ratio is ingest / COPY.
Target: at least 25 % of the COPY rate. See bench/README.md.
"""

from __future__ import annotations

import gzip
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status  # noqa: E402

from bench._common import TARGET_OTLP_COPY_RATIO  # noqa: E402
from bench.api_ingest import SERVICES, build_batches, ingest_benchmark, ingest_parser  # noqa: E402

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400 * 1_000_000
SERVERS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
SCOPE = ("opentelemetry.instrumentation.openai_v2", "2.1b0")


def _attribute(key: str, value: str | int | list[str]) -> KeyValue:
    if isinstance(value, list):
        any_value = AnyValue()
        any_value.array_value.values.extend(AnyValue(string_value=v) for v in value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    else:
        any_value = AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def span_from_event(event: dict[str, Any], span: Span, rng: random.Random, *, trace_id: bytes) -> dict[str, Any]:
    """Fill `span` with api_ingest.py's `event` as a GenAI model call ending within the last day; return
    the ledger row it becomes (the event as the receiver makes it: quantities, time, key, tags)."""
    embedding = event["operation"] == "embedding"
    cached = 0 if embedding or rng.random() >= 0.3 else rng.randint(256, 4096)
    end_us = int((datetime.now(UTC) - UNIX_EPOCH) / timedelta(microseconds=1)) - rng.randrange(DAY_US)
    span.trace_id = trace_id
    span.span_id = rng.randbytes(8)
    span.name = f"{'embeddings' if embedding else 'chat'} {event['model']}"
    span.kind = Span.SPAN_KIND_CLIENT
    span.end_time_unix_nano = end_us * 1000
    span.start_time_unix_nano = span.end_time_unix_nano - event["duration_ms"] * 1_000_000
    attributes = {
        "gen_ai.operation.name": "embeddings" if embedding else "chat",
        "gen_ai.provider.name": event["provider"],
        "gen_ai.request.model": event["model"],
        "gen_ai.response.model": event["model"],
        "gen_ai.response.id": f"resp_{rng.randbytes(12).hex()}",
        "gen_ai.usage.input_tokens": event["input_tokens"] + cached,
        "server.address": SERVERS[event["provider"]],
        "server.port": 443,
        "user.id": event["subject"],
        "gen_ai.agent.name": event["tags"]["feature"],
    }
    if not embedding:
        attributes["gen_ai.usage.output_tokens"] = event["output_tokens"]
        attributes["gen_ai.response.finish_reasons"] = ["stop"]
    if cached:
        attributes["gen_ai.usage.cache_read.input_tokens"] = cached
    if event["outcome"] == "error":
        attributes["error.type"] = "InternalServerError"
        span.status.code = Status.STATUS_CODE_ERROR
    span.attributes.extend(_attribute(k, v) for k, v in attributes.items())
    quantities = (
        {"embedding_tokens": event["input_tokens"]}
        if embedding
        else {"input_tokens": event["input_tokens"], "output_tokens": event["output_tokens"]}
    )
    if cached:
        quantities["cached_input_tokens"] = cached
    return {
        "provider": event["provider"],
        "model": event["model"],
        "operation": event["operation"],
        **quantities,
        "subject": event["subject"],
        "occurred_at": (UNIX_EPOCH + timedelta(microseconds=end_us)).isoformat(),
        "outcome": event["outcome"],
        "duration_ms": event["duration_ms"],
        "idempotency_key": f"otel:{trace_id.hex()}:{span.span_id.hex()}",
    }


def build_exports(count: int, size: int, run: str, seed: int) -> tuple[list[bytes], list[list[dict[str, Any]]]]:
    """`count` gzipped ExportTraceServiceRequests of `size` spans, one resource per service, and the
    rows each becomes."""
    rng = random.Random(f"otlp-{seed}")
    bodies, rows_by_export = [], []
    for events in build_batches(count, size, run, seed):
        export = ExportTraceServiceRequest()
        scopes: dict[str, ScopeSpans] = {}
        rows = []
        trace_id = uuid.uuid4().bytes
        for event in events:
            service = rng.choice(SERVICES)
            if service not in scopes:
                resource_spans = export.resource_spans.add()
                resource_spans.resource.attributes.append(_attribute("service.name", service))
                scopes[service] = resource_spans.scope_spans.add()
                scopes[service].scope.name, scopes[service].scope.version = SCOPE
            if rng.random() < 0.5:  # a trace holds one to a few model calls
                trace_id = uuid.uuid4().bytes
            row = span_from_event(event, scopes[service].spans.add(), rng, trace_id=trace_id)
            row["tags"] = {"gen_ai.agent.name": event["tags"]["feature"], "service.name": service}
            rows.append(row)
        bodies.append(gzip.compress(export.SerializeToString()))
        rows_by_export.append(rows)
    return bodies, rows_by_export


def accepted_spans(answer: bytes, sent: int) -> int:
    """All `sent` spans of a request, or an error naming what partial_success refused."""
    response = ExportTraceServiceResponse.FromString(answer)
    rejected = response.partial_success.rejected_spans
    if rejected:
        raise RuntimeError(f"{rejected} of {sent} spans rejected: {response.partial_success.error_message}")
    return sent


def main() -> int:
    args = ingest_parser(__doc__, batches=40, batch_size=512).parse_args()
    return ingest_benchmark(
        args,
        name="otlp_ingest",
        title="OTLP trace ingest (POST /v1/traces, protobuf+gzip)",
        unit="spans",
        path="/v1/traces",
        headers=lambda key: {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "x-api-key": key,
        },
        accepted=lambda answer: accepted_spans(answer, args.batch_size),
        build=lambda count, run, seed: build_exports(count, args.batch_size, run, seed),
        target=TARGET_OTLP_COPY_RATIO,
        strict=True,
    )


if __name__ == "__main__":
    sys.exit(main())
