"""The official opentelemetry-instrumentation-openai-v2, around the real openai SDK calling the local fake
provider, exporting with the real OTLP/HTTP exporter to a live costcontrol: every call arrives once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from api.keys import api_key_issue
from tests.client.fake_providers import FakeProviders
from tests.conftest import EPOCH
from tests.factories import PriceFactory
from tracking.models import CostEntry, Outcome, PricingStatus

openai = pytest.importorskip("openai")


@pytest.mark.django_db(transaction=True)
def test_openai_v2_spans_of_chat_streaming_embeddings_and_errors_are_recorded_once(live_server):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    for model, unit, price in (
        ("gpt-4o-2024-08-06", "input_token", "0.0000025"),
        ("gpt-4o-2024-08-06", "output_token", "0.00001"),
        ("text-embedding-3-small", "embedding_token", "0.00000002"),
    ):
        PriceFactory(provider="openai", model=model, unit=unit, unit_price=price, valid_from=EPOCH)
    issued = api_key_issue(name="otel", service="chatbot")
    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}/v1/traces", headers={"x-api-key": issued.plaintext}, compression=Compression.Gzip
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    fake = FakeProviders().start()
    try:
        client = openai.OpenAI(base_url=f"{fake.base}/v1", api_key="sk-test", max_retries=0)
        hello = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="gpt-4o", messages=hello)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=hello, stream=True, stream_options={"include_usage": True}
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Hello"
        client.embeddings.create(model="text-embedding-3-small", input="hi")
        for model, error in (("broken", openai.InternalServerError), ("rate-limited", openai.RateLimitError)):
            with pytest.raises(error):
                client.chat.completions.create(model=model, messages=hello)
        provider.force_flush()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        fake.stop()
    entries = list(CostEntry.objects.order_by("id"))
    assert [(e.model, e.operation, e.outcome) for e in entries] == [
        ("gpt-4o-2024-08-06", "chat", Outcome.SUCCESS),
        ("gpt-4o-2024-08-06", "chat", Outcome.SUCCESS),
        ("text-embedding-3-small", "embedding", Outcome.SUCCESS),
        ("broken", "chat", Outcome.ERROR),
        ("rate-limited", "chat", Outcome.RATE_LIMITED),
    ]
    chat, streamed, embedding = entries[:3]
    # The fake's usage: 120 prompt / 50 completion tokens (openai-v2 does not report the cached and
    # reasoning details inside them, so they are billed as plain input and output).
    assert (chat.input_tokens, chat.output_tokens, chat.amount) == (120, 50, Decimal("0.0008"))
    assert (streamed.input_tokens, streamed.output_tokens, streamed.amount) == (120, 50, Decimal("0.0008"))
    assert (embedding.embedding_tokens, embedding.amount) == (8, Decimal("0.00000016"))
    assert all(e.service == "chatbot" and e.idempotency_key.startswith("chatbot/otel:") for e in entries)
    assert {e.pricing_status for e in entries[3:]} == {PricingStatus.UNPRICED}
