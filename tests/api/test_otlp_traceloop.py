"""Traceloop's OpenLLMetry instrumentations (opentelemetry-instrumentation-openai and -anthropic) around the
real openai and anthropic SDKs calling the local fake provider, exporting with the real OTLP/HTTP exporter
to a live costcontrol: every call arrives once, and costs what costcontrol's own SDK wrappers charge for
it. The wrappers then make the same calls (wrap_openai and wrap_anthropic, sending to the live server
under another key), so each call is two ledger entries: one from its span (service "chatbot") and one
from the wrapper (service "wrapped")."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from api.keys import api_key_issue
from tests.client.fake_providers import DATED, FakeProviders
from tests.conftest import EPOCH
from tests.factories import PriceFactory
from tracking.models import CostEntry, Outcome, PricingStatus

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("wrapt")
pytest.importorskip("opentelemetry.instrumentation.openai")
pytest.importorskip("opentelemetry.instrumentation.anthropic")

CLIENT_PROJECT = Path(__file__).resolve().parents[2] / "costcontrol_client"
if str(CLIENT_PROJECT) not in sys.path:
    sys.path.insert(0, str(CLIENT_PROJECT))

from costcontrol_client import Client, wrap_anthropic, wrap_openai  # noqa: E402
from tests.client.traceloop import sdk_patches, sdk_restore  # noqa: E402

QUANTITIES = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
HELLO = [{"role": "user", "content": "hi"}]
CLAUDE = "claude-test-model"  # a made-up name: the SDK warns on retired real ones
ASK = {"model": CLAUDE, "max_tokens": 100, "messages": HELLO}


@dataclass
class Setup:
    fake: FakeProviders
    openai: Any  # openai.OpenAI on the fake, instrumented until stop_tracing()
    anthropic: Any  # anthropic.Anthropic on the fake, instrumented until stop_tracing()
    costcontrol: Client  # the wrappers' client, sending to the live server under the "wrapped" key
    stop_tracing: Callable[[], None]  # exports the spans left and takes the instrumentations off


@pytest.fixture
def traced(live_server, tmp_path) -> Iterator[Setup]:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    for model, unit, price in (
        ("gpt-4o-2024-08-06", "input_token", "0.0000025"),
        ("gpt-4o-2024-08-06", "cached_input_token", "0.00000125"),
        ("gpt-4o-2024-08-06", "output_token", "0.00001"),  # reasoning: billed as output (no price of its own)
        ("o3-mini-2024-08-06", "input_token", "0.0000011"),
        ("o3-mini-2024-08-06", "cached_input_token", "0.00000055"),
        ("o3-mini-2024-08-06", "output_token", "0.0000044"),
        ("text-embedding-3-small", "embedding_token", "0.00000002"),
    ):
        PriceFactory(provider="openai", model=model, unit=unit, unit_price=price, valid_from=EPOCH)
    for unit, price in (
        ("input_token", "0.000003"),
        ("output_token", "0.000015"),
        ("cached_input_token", "0.0000003"),
        ("cache_write_token", "0.00000375"),
    ):
        PriceFactory(provider="anthropic", model=CLAUDE + DATED, unit=unit, unit_price=price, valid_from=EPOCH)
    otel_key = api_key_issue(name="otel", service="chatbot")
    wrapper_key = api_key_issue(name="wrapper", service="wrapped")
    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}/v1/traces", headers={"x-api-key": otel_key.plaintext}, compression=Compression.Gzip
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentors = [OpenAIInstrumentor(), AnthropicInstrumentor()]
    stopped: list[bool] = []

    def stop_tracing() -> None:
        if stopped:
            return
        stopped.append(True)
        provider.force_flush()
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        sdk_restore()
        provider.shutdown()

    fake = FakeProviders().start()
    cc = Client(live_server.url, wrapper_key.plaintext, flush_interval=60, spool_path=tmp_path / "spool.jsonl")
    sdk_openai = openai.OpenAI(base_url=f"{fake.base}/v1", api_key="sk-test", max_retries=0)
    sdk_anthropic = anthropic.Anthropic(base_url=fake.base, api_key="sk-ant-test", max_retries=0)
    assert sdk_patches() == []
    try:
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=provider)
        assert sdk_patches()
        yield Setup(fake=fake, openai=sdk_openai, anthropic=sdk_anthropic, costcontrol=cc, stop_tracing=stop_tracing)
    finally:
        stop_tracing()  # other tests must see the SDKs as they are
        cc.close(timeout=5)
        sdk_openai.close()
        sdk_anthropic.close()
        fake.stop()
    assert sdk_patches() == []


def recorded() -> tuple[list[CostEntry], list[CostEntry]]:
    """The entries from the spans and those from the wrappers, each in the calls' order."""
    entries = list(CostEntry.objects.order_by("occurred_at", "id"))
    assert {e.service for e in entries} <= {"chatbot", "wrapped"}
    spans = [e for e in entries if e.service == "chatbot"]
    assert all(e.idempotency_key.startswith("chatbot/otel:") for e in spans)
    return spans, [e for e in entries if e.service == "wrapped"]


def row(entry: CostEntry) -> tuple[Any, ...]:
    return (entry.provider, entry.model, entry.operation, entry.outcome)


def tokens(entry: CostEntry) -> dict[str, int]:
    return {name: getattr(entry, name) for name in QUANTITIES if getattr(entry, name)}


def openai_calls(client: Any, fake: FakeProviders) -> None:
    """Chat, a cached chat, a reasoning model, a stream with its usage chunk, embeddings, an error, a 429."""
    fake.openai_usage = {"prompt_tokens": 120, "completion_tokens": 50, "total_tokens": 170}
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    fake.openai_usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 50,
        "total_tokens": 2050,
        "prompt_tokens_details": {"cached_tokens": 1500},
    }
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    fake.openai_usage = {
        "prompt_tokens": 120,
        "completion_tokens": 50,
        "total_tokens": 170,
        "prompt_tokens_details": {"cached_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 15},
    }
    client.chat.completions.create(model="o3-mini", messages=HELLO, reasoning_effort="low")
    stream = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Hello"
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    for model, error in (("broken", openai.InternalServerError), ("rate-limited", openai.RateLimitError)):
        with pytest.raises(error):
            client.chat.completions.create(model=model, messages=HELLO)


def anthropic_calls(client: Any) -> None:
    """A message, a raw stream, the stream helper, an error, a 429."""
    assert client.messages.create(**ASK).content[0].text == "Hello"
    kinds = [event.type for event in client.messages.create(**ASK, stream=True)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    with client.messages.stream(**ASK) as stream:
        assert "".join(stream.text_stream) == "Hello"
    for model, error in (("broken", anthropic.InternalServerError), ("rate-limited", anthropic.RateLimitError)):
        with pytest.raises(error):
            client.messages.create(**{**ASK, "model": model})


@pytest.mark.django_db(transaction=True)
def test_traceloop_openai_spans_are_recorded_once_and_cost_what_the_wrapper_charges(traced):
    openai_calls(traced.openai, traced.fake)
    traced.stop_tracing()
    openai_calls(wrap_openai(traced.openai, traced.costcontrol), traced.fake)
    assert traced.costcontrol.flush(timeout=10)

    spans, wrapped = recorded()
    assert (
        [row(e) for e in spans]
        == [row(e) for e in wrapped]
        == [
            ("openai", "gpt-4o" + DATED, "chat", Outcome.SUCCESS),
            ("openai", "gpt-4o" + DATED, "chat", Outcome.SUCCESS),
            ("openai", "o3-mini" + DATED, "chat", Outcome.SUCCESS),
            ("openai", "gpt-4o" + DATED, "chat", Outcome.SUCCESS),
            ("openai", "text-embedding-3-small", "embedding", Outcome.SUCCESS),
            ("openai", "broken", "chat", Outcome.ERROR),
            ("openai", "rate-limited", "chat", Outcome.RATE_LIMITED),
        ]
    )
    chat, cached, reasoning, streamed, embedding, broken, limited = spans
    # Traceloop reports gen_ai.usage.cache_read.input_tokens inside gen_ai.usage.input_tokens and
    # gen_ai.usage.reasoning_tokens inside gen_ai.usage.output_tokens: the receiver takes them out.
    assert (tokens(chat), chat.amount) == ({"input_tokens": 120, "output_tokens": 50}, Decimal("0.0008"))
    assert tokens(cached) == {"input_tokens": 500, "cached_input_tokens": 1500, "output_tokens": 50}
    assert cached.amount == Decimal("0.003625")  # 500 x 2.5/M + 1500 x 1.25/M + 50 x 10/M
    assert tokens(reasoning) == {
        "input_tokens": 100,
        "cached_input_tokens": 20,
        "output_tokens": 35,
        "reasoning_tokens": 15,
    }
    assert reasoning.amount == Decimal("0.000341")  # 100 x 1.1/M + 20 x 0.55/M + (35 + 15) x 4.4/M
    # A stream's span carries no reasoning count (Traceloop reads completion_tokens_details only from
    # a whole response): the 15 reasoning tokens stay inside output_tokens, billed at the output price
    # they have anyway, so the amount is still the wrapper's.
    assert tokens(streamed) == {"input_tokens": 100, "cached_input_tokens": 20, "output_tokens": 50}
    assert tokens(wrapped[3]) == {**tokens(streamed), "output_tokens": 35, "reasoning_tokens": 15}
    assert streamed.amount == Decimal("0.000775")  # 100 x 2.5/M + 20 x 1.25/M + 50 x 10/M
    assert (embedding.embedding_tokens, embedding.amount) == (8, Decimal("0.00000016"))
    assert [tokens(e) for e in (broken, limited)] == [{}, {}]
    assert {e.pricing_status for e in (broken, limited, *wrapped[5:])} == {PricingStatus.UNPRICED}

    assert [e.amount for e in spans] == [e.amount for e in wrapped]
    others = [0, 1, 2, 4, 5, 6]  # all but the stream: the same quantities as the wrapper's
    assert [tokens(spans[i]) for i in others] == [tokens(wrapped[i]) for i in others]
    assert embedding.embedding_tokens == wrapped[4].embedding_tokens


@pytest.mark.django_db(transaction=True)
def test_traceloop_anthropic_spans_are_recorded_once_with_cache_reads_and_writes_apart(traced):
    anthropic_calls(traced.anthropic)
    traced.stop_tracing()
    anthropic_calls(wrap_anthropic(traced.anthropic, traced.costcontrol))
    assert traced.costcontrol.flush(timeout=10)

    spans, wrapped = recorded()
    assert (
        [row(e) for e in spans]
        == [row(e) for e in wrapped]
        == [
            ("anthropic", CLAUDE + DATED, "chat", Outcome.SUCCESS),
            ("anthropic", CLAUDE + DATED, "chat", Outcome.SUCCESS),
            ("anthropic", CLAUDE + DATED, "chat", Outcome.SUCCESS),
            ("anthropic", "broken", "chat", Outcome.ERROR),
            ("anthropic", "rate-limited", "chat", Outcome.RATE_LIMITED),
        ]
    )
    # The fake's usage: 25 input, 100 cache reads, 40 cache writes, 15 output (message_start says 1,
    # message_delta the total 15).
    billed = {"input_tokens": 25, "cached_input_tokens": 100, "cache_write_tokens": 40, "output_tokens": 15}
    created, streamed, helper, broken, limited = spans
    # Traceloop sends gen_ai.usage.input_tokens 165 (25 + 100 + 40), as the conventions count them,
    # beside gen_ai.usage.cache_read.input_tokens and cache_creation.input_tokens: taken out again.
    assert tokens(created) == tokens(wrapped[0]) == billed
    assert created.amount == wrapped[0].amount == Decimal("0.00048")  # 25x3 + 100x0.3 + 40x3.75 + 15x15, per M
    # Streams: Traceloop adds message_delta's output_tokens (already the message's total) to
    # message_start's 1, so its spans say 16: one output token more than the wrapper bills.
    for span, by_wrapper in ((streamed, wrapped[1]), (helper, wrapped[2])):
        assert tokens(span) == {**billed, "output_tokens": 16}
        assert tokens(by_wrapper) == billed
        assert span.amount - by_wrapper.amount == Decimal("0.000015")  # one output token
    assert [tokens(e) for e in (broken, limited, *wrapped[3:])] == [{}, {}, {}, {}]
    assert {e.pricing_status for e in (broken, limited, *wrapped[3:])} == {PricingStatus.UNPRICED}
