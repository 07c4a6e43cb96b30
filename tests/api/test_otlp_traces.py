"""POST /v1/traces: OTLP/HTTP spans with GenAI attributes become ledger entries through the one write path."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from api.keys import api_key_issue
from core.models import Team
from tracking.models import CostEntry, Outcome

TRACE = "5b8efff798038103d269b633813fc60c"
NOW_NS = time.time_ns()


def attr(key: str, value: object) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # OTLP JSON: int64 as a string
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def span(span_id: str = "eee19b7ec3c1b174", *, end_ns: int | None = None, status: dict | None = None, **attrs: object):
    end_ns = NOW_NS - 1_000_000_000 if end_ns is None else end_ns
    item = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": str(end_ns - 1_500_000_000),
        "endTimeUnixNano": str(end_ns),
        "attributes": [attr(k.replace("__", "."), v) for k, v in attrs.items()],
    }
    if status:
        item["status"] = status
    return item


def genai(span_id: str = "eee19b7ec3c1b174", **extra: object) -> dict:
    attrs: dict[str, object] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
    }
    attrs.update({k.replace("__", "."): v for k, v in extra.items()})
    status = attrs.pop("status", None)
    end_ns = attrs.pop("end_ns", None)
    return span(span_id, end_ns=end_ns, status=status, **{k.replace(".", "__"): v for k, v in attrs.items()})


def export(*spans: dict, service_name: str = "chatbot") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", service_name)]},
                "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"}, "spans": list(spans)}],
            }
        ]
    }


def as_protobuf(document: dict) -> bytes:
    """The same export as protobuf, through the receiver's own JSON reading (hex ids)."""
    from api.otlp import otlp_json

    return otlp_json(json.dumps(document).encode()).SerializeToString()


@pytest.fixture
def key(db):
    return api_key_issue(name="otel", service="chatbot")


def post(
    client, key, body: bytes | dict, *, content_type: str = "application/json", header: str = "x-api-key", **extra
):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    auth = (
        {"HTTP_X_API_KEY": key.plaintext}
        if header == "x-api-key"
        else {"HTTP_AUTHORIZATION": f"Bearer {key.plaintext}"}
    )
    return client.post("/v1/traces", data=data, content_type=content_type, **auth, **extra)


def partial(response) -> tuple[int, str]:
    answer = json_format.Parse(response.content, ExportTraceServiceResponse())
    return answer.partial_success.rejected_spans, answer.partial_success.error_message


# --- recording ------------------------------------------------------------------------------------


def test_a_genai_span_in_otlp_json_becomes_one_priced_entry_of_the_keys_service(client, key, gpt4o_prices):
    response = post(client, key, export(genai(**{"user.id": "u-7", "session.id": "s-1"})))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert partial(response) == (0, "")
    entry = CostEntry.objects.get()
    assert (entry.provider, entry.model, entry.operation, entry.service) == ("openai", "gpt-4o", "chat", "chatbot")
    assert (entry.input_tokens, entry.output_tokens) == (1000, 200)
    assert entry.amount == Decimal("0.0045")  # 1000 x 2.50/M + 200 x 10/M
    assert entry.subject == "u-7" and entry.tags == {
        "service.name": "chatbot"
    }  # session.id: not a tag by default (unbounded)
    assert entry.duration_ms == 1500 and entry.outcome == Outcome.SUCCESS
    assert entry.occurred_at == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        microseconds=(NOW_NS - 1_000_000_000) // 1000
    )
    assert entry.idempotency_key == f"chatbot/otel:{TRACE}:eee19b7ec3c1b174"


def test_protobuf_and_gzip_are_read_and_answered_in_kind(client, key, gpt4o_prices):
    body = gzip.compress(as_protobuf(export(genai())))
    response = post(
        client, key, body, content_type="application/x-protobuf", header="bearer", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 0
    assert CostEntry.objects.get().amount == Decimal("0.0045")


def test_a_retried_export_counts_once(client, key, gpt4o_prices):
    body = export(genai("0000000000000001"), genai("0000000000000002"))
    assert post(client, key, body).status_code == 200
    assert post(client, key, body).status_code == 200
    assert post(client, key, as_protobuf(body), content_type="application/x-protobuf").status_code == 200
    assert CostEntry.objects.count() == 2


def test_cached_and_reasoning_tokens_are_taken_out_of_input_and_output(client, key, gpt4o_prices):
    body = export(
        genai(
            **{
                "gen_ai.usage.cache_read.input_tokens": 400,
                "gen_ai.usage.cache_creation.input_tokens": 100,
                "gen_ai.usage.reasoning.output_tokens": 50,
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "openai.response.service_tier": "default",
            }
        )
    )
    assert partial(post(client, key, body))[0] == 0
    entry = CostEntry.objects.get()
    assert entry.model == "gpt-4o-2024-08-06"  # the response's model wins over the request's
    assert (entry.input_tokens, entry.cached_input_tokens, entry.cache_write_tokens) == (500, 400, 100)
    assert (entry.output_tokens, entry.reasoning_tokens) == (150, 50)
    assert entry.service_tier == ""  # "default" is the standard tier


def test_openllmetrys_spelling_of_cache_tokens_and_anthropics_separate_counts_are_read(client, key):
    """Anthropic counts cache reads and writes apart from input_tokens: an instrumentation that passes
    its counts through (input smaller than the cache tokens) is read as it reports them."""
    from tests.conftest import EPOCH
    from tests.factories import PriceFactory

    for unit in ("input_token", "output_token", "cached_input_token", "cache_write_token"):
        PriceFactory(
            provider="anthropic", model="claude-sonnet-4-5", unit=unit, unit_price="0.000001", valid_from=EPOCH
        )
    body = export(
        span(
            "00000000000000d1",
            gen_ai__system="Anthropic",
            gen_ai__request__model="claude-sonnet-4-5",
            gen_ai__usage__input_tokens=25,
            gen_ai__usage__output_tokens=15,
            gen_ai__usage__cache_read_input_tokens=100,
            gen_ai__usage__cache_creation_input_tokens=40,
        )
    )
    assert partial(post(client, key, body)) == (0, "")
    entry = CostEntry.objects.get()
    assert entry.provider == "anthropic"
    assert (entry.input_tokens, entry.cached_input_tokens, entry.cache_write_tokens, entry.output_tokens) == (
        25,
        100,
        40,
        15,
    )


def test_the_deprecated_system_and_prompt_tokens_are_read_and_providers_mapped(client, key):
    from tests.conftest import EPOCH
    from tests.factories import PriceFactory

    PriceFactory(
        provider="bedrock",
        model="amazon.nova-pro-v1:0",
        operation="chat",
        unit="input_token",
        unit_price="0.0000008",
        valid_from=EPOCH,
    )
    body = export(
        span(
            "00000000000000aa",
            gen_ai__system="aws.bedrock",
            gen_ai__request__model="amazon.nova-pro-v1:0",
            gen_ai__usage__prompt_tokens=1000,
        )
    )
    assert partial(post(client, key, body)) == (0, "")
    entry = CostEntry.objects.get()
    assert (entry.provider, entry.input_tokens, entry.amount) == ("bedrock", 1000, Decimal("0.0008"))


def test_error_and_rate_limited_spans_are_recorded_with_their_outcome(client, key, gpt4o_prices):
    body = export(
        genai("00000000000000e1", status={"code": 2, "message": "boom"}, **{"error.type": "InternalServerError"}),
        genai("00000000000000e2", status={"code": 2}, **{"error.type": "RateLimitError"}),
    )
    assert partial(post(client, key, body))[0] == 0
    outcomes = dict(CostEntry.objects.values_list("idempotency_key", "outcome"))
    assert outcomes == {
        f"chatbot/otel:{TRACE}:00000000000000e1": Outcome.ERROR,
        f"chatbot/otel:{TRACE}:00000000000000e2": Outcome.RATE_LIMITED,
    }


def test_a_cost_on_the_span_is_kept_beside_ours_and_a_difference_flagged_never_used_as_ours(client, key, gpt4o_prices):
    body = export(
        genai("00000000000000a1", **{"gen_ai.usage.cost.amount": 0.0045, "gen_ai.usage.cost.currency": "USD"}),
        genai("00000000000000a2", **{"gen_ai.usage.cost": 0.0099}),  # OpenLIT's spelling, USD
        genai("00000000000000a3", **{"operation.cost": "0.004500000001"}),  # float noise below a millionth
        genai("00000000000000a4", **{"gen_ai.usage.cost.amount": 9.5, "gen_ai.usage.cost.currency": "EUR"}),
        genai("00000000000000a5"),
    )
    assert partial(post(client, key, body)) == (0, "")
    entries = {e.idempotency_key[-2:]: e for e in CostEntry.objects.all()}
    assert {e.amount for e in entries.values()} == {Decimal("0.0045")}  # ours, from the catalog, every time
    reported = {k: (e.reported_amount, e.reported_by, e.reported_differs) for k, e in entries.items()}
    assert reported == {
        "a1": (Decimal("0.0045"), "gen_ai.usage.cost.amount", False),
        "a2": (Decimal("0.0099"), "gen_ai.usage.cost", True),
        "a3": (Decimal("0.004500000"), "operation.cost", False),
        "a4": (None, "", None),  # another currency than the catalog's: not comparable, not kept
        "a5": (None, "", None),
    }
    assert all("cost" not in key for e in entries.values() for key in e.tags)


def test_a_cost_attribute_that_is_no_cost_rejects_its_span_by_name(client, key, gpt4o_prices):
    body = export(
        genai("00000000000000b1", **{"gen_ai.usage.cost.amount": -0.5}),
        genai("00000000000000b2", **{"gen_ai.usage.cost": "a lot"}),
        genai("00000000000000b3", **{"gen_ai.usage.cost.amount": "NaN"}),
    )
    rejected, message = partial(post(client, key, body))
    assert rejected == 3 and not CostEntry.objects.exists()
    assert "00000000000000b1" in message and "gen_ai.usage.cost.amount must be a cost between 0" in message
    assert "00000000000000b2" in message and "gen_ai.usage.cost must be a number" in message


def test_a_teams_key_records_its_teams_usage(client, gpt4o_prices):
    team = Team.objects.create(name="ml")
    issued = api_key_issue(name="ml otel", service="ml-bot", team=team)
    assert post(client, issued, export(genai())).status_code == 200
    assert CostEntry.objects.get().team == team


def test_embeddings_are_embedding_tokens(client, key):
    from tests.conftest import EPOCH
    from tests.factories import PriceFactory

    PriceFactory(
        provider="openai",
        model="text-embedding-3-small",
        operation="embedding",
        unit="embedding_token",
        unit_price="0.00000002",
        valid_from=EPOCH,
    )
    body = export(
        genai(
            **{
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.output_tokens": 0,
            }
        )
    )
    assert partial(post(client, key, body)) == (0, "")
    entry = CostEntry.objects.get()
    assert (entry.operation, entry.embedding_tokens, entry.input_tokens) == ("embedding", 1000, 0)


# --- what is skipped, refused, or pushed back ----------------------------------------------------------


def test_spans_without_genai_attributes_and_agent_spans_are_skipped_not_rejected(client, key, gpt4o_prices):
    http_span = span("00000000000000b1", **{"http__request__method": "GET"})
    agent = genai("00000000000000b2", **{"gen_ai.operation.name": "invoke_agent"})
    response = post(client, key, export(http_span, agent, genai("00000000000000b3")))
    assert partial(response) == (0, "") and CostEntry.objects.count() == 1


def test_a_bad_span_is_rejected_by_name_and_the_others_recorded(client, key, gpt4o_prices):
    body = export(
        genai("00000000000000c1", **{"gen_ai.usage.input_tokens": -5}),
        genai("00000000000000c2", end_ns=86_400 * 10**9),  # 1970-01-02
        genai("00000000000000c3", end_ns=NOW_NS + 3600 * 10**9),  # an hour ahead
        genai("00000000000000c4", **{"gen_ai.provider.name": "opneai"}),
        genai("00000000000000c5"),
    )
    rejected, message = partial(post(client, key, body))
    assert rejected == 4
    assert "00000000000000c1" in message and "gen_ai.usage.input_tokens must not be negative" in message
    assert "00000000000000c2" in message and "end_time_unix_nano" in message
    assert "00000000000000c3" in message and "occurred_at" in message and "future" in message
    assert "00000000000000c4" in message and "unknown provider 'opneai'" in message
    assert CostEntry.objects.get().idempotency_key.endswith("00000000000000c5")


def test_no_or_a_wrong_key_gets_401(client, key, gpt4o_prices):
    assert client.post("/v1/traces", json.dumps(export(genai())), content_type="application/json").status_code == 401
    wrong = client.post(
        "/v1/traces", json.dumps(export(genai())), content_type="application/json", HTTP_X_API_KEY="cc_nope_nope"
    )
    assert wrong.status_code == 401 and "x-api-key" in json.loads(wrong.content)["message"]
    assert CostEntry.objects.count() == 0


def test_malformed_bodies_get_400_and_write_nothing(client, key, gpt4o_prices):
    bad_proto = post(client, key, b"\xff\xff\xff", content_type="application/x-protobuf")
    assert bad_proto.status_code == 400
    assert "ExportTraceServiceRequest" in status_pb2.Status.FromString(bad_proto.content).message
    bad_json = post(client, key, b"{not json")
    assert bad_json.status_code == 400 and "not valid JSON" in json.loads(bad_json.content)["message"]
    bad_id = export(genai())
    bad_id["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "zz"
    assert post(client, key, bad_id).status_code == 400
    bad_gzip = post(client, key, b"not gzip", HTTP_CONTENT_ENCODING="gzip")
    assert bad_gzip.status_code == 400
    assert post(client, key, b"x", content_type="text/plain").status_code == 415
    assert CostEntry.objects.count() == 0


def test_a_body_over_the_limit_gets_413_even_gzipped(client, key, gpt4o_prices, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    big = export(*[genai(f"{i:016x}") for i in range(1, 20)])
    assert post(client, key, big).status_code == 413
    small_on_the_wire = gzip.compress(json.dumps(big).encode())
    assert len(small_on_the_wire) < 2000
    assert post(client, key, small_on_the_wire, HTTP_CONTENT_ENCODING="gzip").status_code == 413
    assert CostEntry.objects.count() == 0


def test_over_the_keys_rate_limit_exports_get_429_with_retry_after(client, gpt4o_prices):
    issued = api_key_issue(name="slow", service="slow", rate_limit_per_minute=1)
    with time_machine.travel(datetime.now(UTC).replace(second=10), tick=False):
        first = post(client, issued, export(genai("0000000000000001")))
        second = post(client, issued, export(genai("0000000000000002")))
    assert first.status_code == 200 and second.status_code == 429 and 1 <= int(second["Retry-After"]) <= 61
    assert CostEntry.objects.count() == 1


# --- the real OpenTelemetry SDK and OTLP/HTTP exporter ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_real_sdk_exporter_sends_a_genai_span_that_is_recorded_once(live_server, gpt4o_prices):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    issued = api_key_issue(name="sdk", service="sdk-app")
    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}/v1/traces", headers={"x-api-key": issued.plaintext}, compression=Compression.Gzip
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app"}))
    finished = []

    class Keep(SimpleSpanProcessor):
        def on_end(self, span):
            finished.append(span)
            super().on_end(span)

    provider.add_span_processor(Keep(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as current:
        current.set_attribute("gen_ai.operation.name", "chat")
        current.set_attribute("gen_ai.provider.name", "openai")
        current.set_attribute("gen_ai.request.model", "gpt-4o")
        current.set_attribute("gen_ai.usage.input_tokens", 1000)
        current.set_attribute("gen_ai.usage.output_tokens", 200)
        current.set_attribute("user.id", "u-1")
    provider.force_flush()
    assert exporter.export(finished) == SpanExportResult.SUCCESS  # an exporter's retry of the same span
    provider.shutdown()
    entry = CostEntry.objects.get()
    assert (entry.service, entry.subject, entry.amount) == ("sdk-app", "u-1", Decimal("0.0045"))


def test_a_database_that_is_down_answers_503_with_retry_after_so_the_exporter_retries(client, key, gpt4o_prices):
    from unittest.mock import patch

    from django.db import OperationalError

    with patch("api.otlp.cost_entry_record_many", autospec=True, side_effect=OperationalError("gone")):
        down = post(client, key, as_protobuf(export(genai())), content_type="application/x-protobuf")
    assert down.status_code == 503 and down["Retry-After"] == "5"
    assert "retry later" in status_pb2.Status.FromString(down.content).message
    assert post(client, key, export(genai())).status_code == 200 and CostEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_real_exporter_retries_after_a_503_and_the_span_counts_once(live_server, gpt4o_prices, monkeypatch):
    """The first export is written, then its answer is lost to a 503 (the database went away after the
    commit); the exporter retries the same spans, which are duplicates."""
    from django.db import OperationalError
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    import api.otlp

    real, calls = api.otlp.cost_entry_record_many, []

    def written_then_lost(events):
        results = real(events)
        calls.append([r.status for r in results])
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return results

    monkeypatch.setattr(api.otlp, "cost_entry_record_many", written_then_lost)
    monkeypatch.setattr(api.otlp, "RETRY_AFTER_UNAVAILABLE", 1)  # the exporter waits what Retry-After says
    issued = api_key_issue(name="sdk", service="sdk-app")
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", headers={"x-api-key": issued.plaintext})
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("chat gpt-4o") as current:
        current.set_attributes(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 2,
            }
        )
    provider.shutdown()
    assert calls == [["accepted"], ["duplicate"]]
    assert CostEntry.objects.count() == 1
