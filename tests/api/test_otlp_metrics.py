"""POST /v1/metrics: the GenAI token metrics become aggregated ledger entries, a cumulative series counted
once across retries, restarts and resets, a delta series once per interval."""

from __future__ import annotations

import gzip
import json
import threading
import time
from decimal import Decimal

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from api.keys import api_key_issue
from api.models import OtlpMetricStream
from api.otlp import otlp_json
from tests.admin_clients import superuser_client
from tests.api.test_otlp_traces import attr
from tests.conftest import EPOCH
from tests.factories import PriceFactory
from tracking.models import CostEntry, Outcome, SpendRollup

pytestmark = pytest.mark.django_db

SECOND = 10**9
START = time.time_ns() - 3600 * SECOND  # the exporting process started an hour ago
INPUT = "gen_ai.client.inference.usage.input_tokens"
OUTPUT = "gen_ai.client.inference.usage.output_tokens"
CACHE_READ = "gen_ai.client.inference.usage.cache_read.input_tokens"
REASONING = "gen_ai.client.inference.usage.reasoning.output_tokens"
CALL = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
CUMULATIVE, DELTA = 2, 1


def point(value: int | float, *, at: int, start: int = START, **attrs: object) -> dict:
    item = {
        "startTimeUnixNano": str(start),
        "timeUnixNano": str(at),
        "attributes": [attr(k, v) for k, v in {**CALL, **attrs}.items()],
    }
    item["asDouble" if isinstance(value, float) else "asInt"] = value if isinstance(value, float) else str(value)
    return item


def counter(name: str, *points: dict, temporality: int = CUMULATIVE, monotonic: bool = True) -> dict:
    return {
        "name": name,
        "unit": "{token}",
        "sum": {"dataPoints": list(points), "aggregationTemporality": temporality, "isMonotonic": monotonic},
    }


def histogram(*points: tuple[str, int, int], temporality: int = CUMULATIVE) -> dict:
    """gen_ai.client.token.usage points: (token type, sum, time)."""
    data = [
        {
            "startTimeUnixNano": str(START),
            "timeUnixNano": str(at),
            "count": "3",
            "sum": total,
            "attributes": [attr(k, v) for k, v in {**CALL, "gen_ai.token.type": kind}.items()],
        }
        for kind, total, at in points
    ]
    return {
        "name": "gen_ai.client.token.usage",
        "histogram": {"dataPoints": data, "aggregationTemporality": temporality},
    }


def export(*metrics: dict, service_name: str = "chatbot") -> dict:
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": [attr("service.name", service_name)]},
                "scopeMetrics": [{"scope": {"name": "my.genai"}, "metrics": list(metrics)}],
            }
        ]
    }


@pytest.fixture
def key(db):
    return api_key_issue(name="otel", service="chatbot")


def post(client, key, body: dict | bytes, **extra):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    content_type = extra.pop("content_type", "application/json")
    return client.post("/v1/metrics", data=data, content_type=content_type, HTTP_X_API_KEY=key.plaintext, **extra)


def partial(response) -> tuple[int, str]:
    assert response.status_code == 200, response.content
    answer = json_format.Parse(response.content, ExportMetricsServiceResponse())
    return answer.partial_success.rejected_data_points, answer.partial_success.error_message


def tokens() -> list[tuple[int, int, int, int]]:
    return list(
        CostEntry.objects.order_by("occurred_at", "id").values_list(
            "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"
        )
    )


def test_a_cumulative_counter_records_what_each_collection_added_marked_aggregated(client, key, gpt4o_prices):
    t1, t2 = START + 60 * SECOND, START + 120 * SECOND
    assert partial(
        post(client, key, export(counter(INPUT, point(1000, at=t1)), counter(OUTPUT, point(200, at=t1))))
    ) == (0, "")
    assert partial(
        post(client, key, export(counter(INPUT, point(1500, at=t2)), counter(OUTPUT, point(260, at=t2))))
    ) == (0, "")

    assert tokens() == [(1000, 200, 0, 0), (500, 60, 0, 0)]
    first, second = CostEntry.objects.order_by("occurred_at")
    assert first.amount == Decimal("0.0045") and second.amount == Decimal("0.00185")  # 500 x 2.5/M + 60 x 10/M
    assert all(e.aggregated and e.service == "chatbot" and e.outcome == Outcome.SUCCESS for e in (first, second))
    assert (first.provider, first.model, first.operation) == ("openai", "gpt-4o", "chat")
    assert first.tags == {"service.name": "chatbot"} and first.idempotency_key.startswith("chatbot/otelm:")
    assert SpendRollup.objects.get(scope="global").amount == Decimal("0.00635")
    page = superuser_client().get("/admin/tracking/costentry/?aggregated__exact=1").content.decode()
    assert page.count('<span class="cc-sub">many calls (aggregated)</span>') == 2


def test_a_retried_or_late_cumulative_export_adds_nothing(client, key, gpt4o_prices):
    t1, t2 = START + 60 * SECOND, START + 120 * SECOND
    first = export(counter(INPUT, point(1000, at=t1)))
    second = export(counter(INPUT, point(1400, at=t2)))
    for body in (first, first, second, second, first):  # retries, and the first arriving again late
        assert partial(post(client, key, body)) == (0, "")
    assert tokens() == [(1000, 0, 0, 0), (400, 0, 0, 0)]
    stream = OtlpMetricStream.objects.get()
    assert (stream.service, stream.start_time_unix_nano, stream.time_unix_nano, stream.value) == (
        "chatbot",
        START,
        t2,
        1400,
    )


def test_a_restart_and_a_reset_count_the_new_total_as_new_usage_never_negative(client, key, gpt4o_prices):
    restart = START + 600 * SECOND
    bodies = [
        export(counter(INPUT, point(1000, at=START + 60 * SECOND))),
        export(counter(INPUT, point(300, at=restart + 30 * SECOND, start=restart))),  # the process restarted
        export(counter(INPUT, point(350, at=restart + 60 * SECOND, start=restart))),
        export(counter(INPUT, point(40, at=restart + 90 * SECOND, start=restart))),  # reset without a new start
        export(counter(INPUT, point(1100, at=START + 90 * SECOND))),  # the old run's late point: already past
    ]
    for body in bodies:
        assert partial(post(client, key, body)) == (0, "")
    assert [t[0] for t in tokens()] == [1000, 300, 50, 40]


def test_delta_points_are_each_their_interval_once(client, key, gpt4o_prices):
    t1, t2 = START + 60 * SECOND, START + 120 * SECOND
    body = export(
        counter(INPUT, point(700, start=START, at=t1), point(300, start=t1, at=t2), temporality=DELTA),
        counter(OUTPUT, point(70, start=START, at=t1), point(30, start=t1, at=t2), temporality=DELTA),
    )
    for _ in range(2):  # the exporter retried
        assert partial(post(client, key, body)) == (0, "")
    assert tokens() == [(700, 70, 0, 0), (300, 30, 0, 0)]
    assert not OtlpMetricStream.objects.exists()  # a delta series needs no state


def test_cache_and_reasoning_counters_are_taken_out_of_input_and_output(client, key, gpt4o_prices):
    PriceFactory(provider="openai", model="gpt-4o", unit="reasoning_token", unit_price="0.00001", valid_from=EPOCH)
    at = START + 60 * SECOND
    body = export(
        counter(INPUT, point(1000, at=at)),
        counter(CACHE_READ, point(400, at=at)),
        counter(OUTPUT, point(300, at=at)),
        counter(REASONING, point(100, at=at)),
    )
    assert partial(post(client, key, body)) == (0, "")
    assert tokens() == [(600, 200, 400, 100)]
    # 600 x 2.5/M + 400 x 1.25/M + 200 x 10/M + 100 x 10/M
    assert CostEntry.objects.get().amount == Decimal("0.005")


def test_the_older_token_usage_histogram_is_read_by_token_type(client, key, gpt4o_prices):
    t1, t2 = START + 60 * SECOND, START + 120 * SECOND
    assert partial(post(client, key, export(histogram(("input", 900, t1), ("output", 90, t1))))) == (0, "")
    assert partial(post(client, key, export(histogram(("input", 1000, t2), ("output", 100, t2))))) == (0, "")
    assert tokens() == [(900, 90, 0, 0), (100, 10, 0, 0)]


def test_points_of_other_calls_and_errors_are_entries_of_their_own(client, key, gpt4o_prices):
    at = START + 60 * SECOND
    body = export(
        counter(
            INPUT,
            point(100, at=at, **{"user.id": "alice"}),
            point(200, at=at, **{"user.id": "bob"}),
            point(50, at=at, **{"error.type": "RateLimitError"}),
        ),
        {"name": "http.client.request.duration", "histogram": {"dataPoints": [], "aggregationTemporality": 2}},
        counter("process.cpu.time", point(5, at=at)),  # not a token metric: skipped unread
    )
    assert partial(post(client, key, body)) == (0, "")
    entries = {(e.subject, e.outcome): e.input_tokens for e in CostEntry.objects.all()}
    assert entries == {("alice", Outcome.SUCCESS): 100, ("bob", Outcome.SUCCESS): 200, ("", Outcome.RATE_LIMITED): 50}


def test_protobuf_and_gzip_are_read_and_answered_in_kind(client, key, gpt4o_prices):
    message = otlp_json(
        json.dumps(export(counter(INPUT, point(1000, at=START + SECOND)))).encode(), ExportMetricsServiceRequest
    )
    response = post(
        client,
        key,
        gzip.compress(message.SerializeToString()),
        content_type="application/x-protobuf",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/x-protobuf"
    assert ExportMetricsServiceResponse.FromString(response.content).partial_success.rejected_data_points == 0
    assert tokens() == [(1000, 0, 0, 0)]


def test_bad_points_are_refused_by_name_and_the_others_recorded(client, key, gpt4o_prices):
    at = START + 60 * SECOND
    body = export(
        counter(INPUT, point(-5, at=at, **{"user.id": "neg"})),
        counter(OUTPUT, point(2.5, at=at)),
        counter(INPUT, point(10, at=at, **{"user.id": "up-down"}), monotonic=False),
        histogram(("total", 500, at)),
        counter(INPUT, point(10, at=86_400 * SECOND, start=1, **{"user.id": "1970"})),
        counter(INPUT, point(10, at=at, **{"gen_ai.provider.name": "opneai"})),
        counter(INPUT, point(30, at=at, **{"user.id": "fine"})),
    )
    rejected, message = partial(post(client, key, body))
    assert rejected == 6, message
    assert "must not be negative" in message and "whole number" in message
    assert "must be a monotonic sum" in message and "gen_ai.token.type 'total'" in message
    assert "time_unix_nano" in message and message.endswith("; and 1 more")  # the provider's, refused on recording
    assert list(CostEntry.objects.values_list("subject", "input_tokens")) == [("fine", 30)]


def test_malformed_bodies_and_no_key_write_nothing(client, key, gpt4o_prices):
    assert post(client, key, b"\xff\x00garbage", content_type="application/x-protobuf").status_code == 400
    assert post(client, key, b"[1, 2]").status_code == 400
    assert client.post("/v1/metrics", data=b"{}", content_type="application/json").status_code == 401
    assert not CostEntry.objects.exists() and not OtlpMetricStream.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_the_real_sdk_meter_exports_token_counters_that_are_recorded_once(live_server, gpt4o_prices, temporality):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    issued = api_key_issue(name="otel metrics", service="chatbot")
    chosen = AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(
        endpoint=f"{live_server.url}/v1/metrics",
        headers={"x-api-key": issued.plaintext},
        preferred_temporality={Counter: chosen},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)  # exports on flush only
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "chatbot"}))
    meter = provider.get_meter("my.genai")
    inputs = meter.create_counter(INPUT, unit="{token}")
    outputs = meter.create_counter(OUTPUT, unit="{token}")
    attributes = {**CALL, "gen_ai.token.modality": "text"}
    try:
        for used_in, used_out in ((1000, 200), (500, 60)):  # two calls, then a collection
            inputs.add(used_in, attributes)
            outputs.add(used_out, attributes)
        assert provider.force_flush()
        inputs.add(400, attributes)  # a third call, in the next collection
        outputs.add(40, attributes)
        assert provider.force_flush()
        assert provider.force_flush()  # nothing new: a cumulative series repeats its total, a delta one is empty
    finally:
        provider.shutdown()
    assert tokens() == [(1500, 260, 0, 0), (400, 40, 0, 0)]
    assert sum(CostEntry.objects.values_list("amount", flat=True)) == Decimal("0.00775")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_exports_of_the_same_cumulative_points_count_them_once(gpt4o_prices):
    from django.db import connection, connections
    from django.test import Client

    assert connection.vendor == "postgresql"
    issued = api_key_issue(name="otel", service="chatbot")
    at = START + 60 * SECOND
    users = [f"user-{i}" for i in range(50)]  # 100 streams, locked in one order by each export
    body = export(
        counter(INPUT, *(point(1000, at=at, **{"user.id": u}) for u in users)),
        counter(OUTPUT, *(point(100, at=at, **{"user.id": u}) for u in reversed(users))),
    )
    barrier = threading.Barrier(4)
    answers: list[int] = []

    def send() -> None:
        try:
            barrier.wait()
            answers.append(post(Client(), issued, body).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 4
    assert CostEntry.objects.count() == 50 and set(tokens()) == {(1000, 100, 0, 0)}
    assert OtlpMetricStream.objects.count() == 100
