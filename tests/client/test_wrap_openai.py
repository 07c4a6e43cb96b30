"""wrap_openai against the real openai SDK talking to a fake OpenAI on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest

from costcontrol_client import wrap_openai

from .fake_providers import DATED, FakeProviders

openai = pytest.importorskip("openai")

CONTEXT = {"service": "search", "subject": "user-42", "job": "nightly", "tags": {"team": "growth"}}


@pytest.fixture
def providers():
    fake = FakeProviders().start()
    yield fake
    fake.stop()


@pytest.fixture
def cc(fake_api, make_client):
    return make_client(fake_api.url, flush_interval=60)


@pytest.fixture
def sdk(providers):
    client = openai.OpenAI(api_key="sk-test", base_url=providers.base + "/v1", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def wrapped(sdk, cc):
    return wrap_openai(sdk, cc, **CONTEXT)


def recorded(cc, fake_api):
    assert cc.flush(timeout=5)
    return list(fake_api.events.values())


def only(cc, fake_api):
    events = recorded(cc, fake_api)
    assert len(events) == 1, events
    return events[0]


def test_a_chat_completion_records_its_usage_as_the_ledger_bills_it(wrapped, cc, fake_api):
    completion = wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert completion.choices[0].message.content == "Hello"
    event = only(cc, fake_api)
    assert event["provider"] == "openai"
    assert event["model"] == "gpt-4o" + DATED  # from the response
    assert event["operation"] == "chat"
    assert event["outcome"] == "success"
    # prompt 120 of which 20 cached; completion 50 of which 15 reasoning: no token priced twice
    assert event["input_tokens"] == 100
    assert event["cached_input_tokens"] == 20
    assert event["output_tokens"] == 35
    assert event["reasoning_tokens"] == 15
    assert isinstance(event["duration_ms"], int) and event["duration_ms"] >= 0
    assert {k: event[k] for k in CONTEXT} == CONTEXT
    assert "usage_unavailable" not in event


def test_a_stream_passes_chunks_through_and_records_the_final_usage_chunk_when_it_ends(wrapped, sdk, cc, fake_api):
    kwargs = {"model": "gpt-4o", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    plain = [chunk.model_dump() for chunk in sdk.chat.completions.create(**kwargs)]

    stream = wrapped.chat.completions.create(**kwargs)
    first = next(stream)
    assert recorded(cc, fake_api) == []  # nothing before the stream ends
    chunks = [first, *stream]

    assert [chunk.model_dump() for chunk in chunks] == plain
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Hello"
    event = only(cc, fake_api)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (100, 20)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (35, 15)
    assert event["model"] == "gpt-4o" + DATED


def test_a_stream_without_a_usage_chunk_is_recorded_as_usage_unavailable_not_zero(wrapped, cc, fake_api):
    with wrapped.chat.completions.create(model="gpt-4o", messages=[], stream=True) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert text == "Hello"
    event = only(cc, fake_api)
    assert event["usage_unavailable"] is True
    assert not any(name in event for name in ("input_tokens", "output_tokens"))
    assert event["outcome"] == "success"


def test_a_stream_left_half_read_is_recorded_once_when_closed(wrapped, cc, fake_api):
    kwargs = {"model": "gpt-4o", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    with wrapped.chat.completions.create(**kwargs) as stream:
        for _ in stream:
            break
    stream.close()

    event = only(cc, fake_api)
    assert event["usage_unavailable"] is True  # the usage chunk never came


def test_the_responses_api_records_input_output_cached_and_reasoning_tokens(wrapped, cc, fake_api):
    response = wrapped.responses.create(model="gpt-4o", input="hi")

    assert response.output_text == "Hello"
    event = only(cc, fake_api)
    assert event["operation"] == "chat"
    assert (event["input_tokens"], event["cached_input_tokens"]) == (200, 100)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (50, 30)


def test_embeddings_record_embedding_tokens(wrapped, cc, fake_api):
    result = wrapped.embeddings.create(model="text-embedding-3-small", input="hello")

    assert len(result.data) == 1
    event = only(cc, fake_api)
    assert event["operation"] == "embedding"
    assert event["embedding_tokens"] == 8
    assert event["model"] == "text-embedding-3-small"


def test_images_record_the_count_and_the_size_and_quality_as_the_variant(wrapped, cc, fake_api):
    result = wrapped.images.generate(model="dall-e-3", prompt="a cat", n=2, size="1024x1024", quality="hd")

    assert len(result.data) == 2
    event = only(cc, fake_api)
    assert event["operation"] == "image_generation"
    assert event["images"] == 2
    assert event["variant"] == "hd/1024-x-1024"
    assert event["model"] == "dall-e-3"  # images answers carry no model: the request's


def test_a_transcription_records_the_audio_seconds_as_a_decimal(wrapped, cc, fake_api):
    result = wrapped.audio.transcriptions.create(model="whisper-1", file=("a.wav", io.BytesIO(b"RIFF....")))

    assert result.text == "hello"
    event = only(cc, fake_api)
    assert event["operation"] == "audio_transcription"
    assert event["seconds"] == "3.500000"


def test_a_rate_limited_call_is_recorded_as_rate_limited_and_the_error_reaches_the_caller(wrapped, cc, fake_api):
    with pytest.raises(openai.RateLimitError):
        wrapped.chat.completions.create(model="rate-limited", messages=[])

    event = only(cc, fake_api)
    assert event["outcome"] == "rate_limited"
    assert event["model"] == "rate-limited"  # no response: the request's model
    assert "usage_unavailable" not in event and "input_tokens" not in event  # a refused call is not billed


def test_a_failed_call_is_recorded_as_an_error_and_re_raised(wrapped, cc, fake_api):
    with pytest.raises(openai.InternalServerError):
        wrapped.chat.completions.create(model="broken", messages=[])

    assert only(cc, fake_api)["outcome"] == "error"


def test_the_wrapper_behaves_like_the_sdk_client(wrapped, sdk, cc, fake_api):
    assert isinstance(wrapped, openai.OpenAI)
    assert wrapped.base_url == sdk.base_url
    assert wrapped.models is sdk.models  # not instrumented: the SDK's own
    assert wrapped.chat.completions.create.__name__ == "create"

    other = wrapped.with_options(timeout=5)
    other.chat.completions.create(model="gpt-4o", messages=[])

    assert isinstance(other, openai.OpenAI)
    assert only(cc, fake_api)["subject"] == "user-42"


def test_a_costcontrol_failure_never_breaks_the_model_call(sdk, caplog):
    class Broken:
        def record(self, **event):
            raise RuntimeError("costcontrol exploded")

    wrapped = wrap_openai(sdk, Broken())

    with caplog.at_level(logging.ERROR, logger="costcontrol_client"):
        completion = wrapped.chat.completions.create(model="gpt-4o", messages=[])

    assert completion.choices[0].message.content == "Hello"
    assert "could not record" in caplog.text


def test_the_async_client_records_calls_and_streams(providers, cc, fake_api):
    async def main():
        async with openai.AsyncOpenAI(api_key="sk", base_url=providers.base + "/v1", max_retries=0) as sdk:
            wrapped = wrap_openai(sdk, cc, subject="async")
            completion = await wrapped.chat.completions.create(model="gpt-4o", messages=[])
            stream = await wrapped.chat.completions.create(
                model="gpt-4o-mini", messages=[], stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            with pytest.raises(openai.RateLimitError):
                await wrapped.chat.completions.create(model="rate-limited", messages=[])
            return completion, chunks

    completion, chunks = asyncio.run(main())

    assert completion.choices[0].message.content == "Hello"
    assert chunks[-1].usage.prompt_tokens == 120
    events = {event["model"]: event for event in recorded(cc, fake_api)}
    assert events["gpt-4o" + DATED]["input_tokens"] == 100
    assert events["gpt-4o-mini" + DATED]["output_tokens"] == 35
    assert events["rate-limited"]["outcome"] == "rate_limited"
    assert {event["subject"] for event in events.values()} == {"async"}


# --- under Traceloop's OpenAIInstrumentor: its stream proxies (ChatStream, ResponseStream) define both
# __next__ and __anext__; a sync stream must come back as a sync stream all the same.


def test_a_sync_stream_under_traceloop_iterates_and_records_its_usage(traceloop_openai, wrapped, cc, fake_api):
    stream = wrapped.chat.completions.create(
        model="gpt-4o", messages=[], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk for chunk in stream]

    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Hello"
    event = only(cc, fake_api)
    assert (event["model"], event["outcome"]) == ("gpt-4o" + DATED, "success")
    assert (event["input_tokens"], event["cached_input_tokens"]) == (100, 20)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (35, 15)
    assert [span.name for span in traceloop_openai.get_finished_spans()] == ["openai.chat"]  # Traceloop saw it too


def test_a_sync_responses_stream_under_traceloop_iterates_and_records_its_usage(
    traceloop_openai, wrapped, cc, fake_api
):
    with wrapped.responses.create(model="o4-mini", input="hi", stream=True) as stream:
        events = [event for event in stream]

    assert events[-1].type == "response.completed"
    event = only(cc, fake_api)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (200, 100)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (50, 30)


def test_an_async_stream_under_traceloop_still_iterates_and_records_its_usage(
    traceloop_openai, providers, cc, fake_api
):
    async def main():
        async with openai.AsyncOpenAI(api_key="sk", base_url=providers.base + "/v1", max_retries=0) as sdk:
            stream = await wrap_openai(sdk, cc).chat.completions.create(
                model="gpt-4o", messages=[], stream=True, stream_options={"include_usage": True}
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(main())

    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Hello"
    event = only(cc, fake_api)
    assert (event["input_tokens"], event["output_tokens"], event["reasoning_tokens"]) == (100, 35, 15)
    assert [span.name for span in traceloop_openai.get_finished_spans()] == ["openai.chat"]


# --- what the provider said: tiers, audio, images ------------------------------------------------

# 1000 prompt tokens: 200 read from the cache, 300 audio; 500 completion: 100 reasoning, 150 audio.
AUDIO_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 300},
    "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 150},
}
AUDIO_BILLED = {
    "input_tokens": 500,
    "cached_input_tokens": 200,
    "input_audio_tokens": 300,
    "output_tokens": 250,
    "reasoning_tokens": 100,
    "output_audio_tokens": 150,
    "service_tier": "priority",
}


def billed(event, names=AUDIO_BILLED):
    return {name: event.get(name) for name in names}


def test_a_chat_completion_records_the_tier_that_served_it_and_its_audio_tokens_apart(wrapped, providers, cc, fake_api):
    providers.openai_usage, providers.service_tier = AUDIO_USAGE, "priority"

    wrapped.chat.completions.create(model="gpt-4o-audio-preview", messages=[], service_tier="auto")

    assert billed(only(cc, fake_api)) == AUDIO_BILLED


def test_a_stream_records_the_tier_from_its_chunks_and_the_audio_tokens_from_the_usage_chunk(
    wrapped, providers, cc, fake_api
):
    providers.openai_usage, providers.service_tier = AUDIO_USAGE, "priority"
    kwargs = {
        "model": "gpt-4o-audio-preview",
        "messages": [],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    chunks = list(wrapped.chat.completions.create(**kwargs))

    assert chunks[-1].usage.prompt_tokens == 1000
    assert billed(only(cc, fake_api)) == AUDIO_BILLED


def test_the_standard_tier_is_recorded_as_openai_names_it(wrapped, providers, cc, fake_api):
    providers.service_tier = "default"

    wrapped.chat.completions.create(model="gpt-4o", messages=[])

    assert only(cc, fake_api)["service_tier"] == "default"  # the server reads "default" as the standard tier


def test_the_responses_api_records_the_flex_tier_sync_and_streamed(wrapped, providers, cc, fake_api):
    providers.service_tier = "flex"

    wrapped.responses.create(model="o4-mini", input="hi")
    events = list(wrapped.responses.create(model="o4-mini-stream", input="hi", stream=True))

    assert events[-1].type == "response.completed"
    by_model = {event["model"]: event for event in recorded(cc, fake_api)}
    expected = {"input_tokens": 200, "cached_input_tokens": 100, "output_tokens": 50, "reasoning_tokens": 30}
    for model in ("o4-mini", "o4-mini-stream"):
        assert billed(by_model[model + DATED], [*expected, "service_tier"]) == {**expected, "service_tier": "flex"}


GPT_IMAGE_USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
    "output_tokens": 4160,
    "total_tokens": 4210,
}


def test_gpt_image_1_records_its_token_usage_not_a_per_image_count(wrapped, providers, cc, fake_api):
    providers.image_usage = GPT_IMAGE_USAGE
    providers.image_fields = {"size": "1024x1024", "quality": "high"}

    wrapped.images.generate(model="gpt-image-1", prompt="a cat")

    event = only(cc, fake_api)
    assert billed(event, ["input_tokens", "input_image_tokens", "output_image_tokens", "images"]) == {
        "input_tokens": 10,
        "input_image_tokens": 40,
        "output_image_tokens": 4160,
        "images": None,  # the tokens are the bill: counting images too would price it twice
    }
    assert event["variant"] == "high/1024-x-1024"  # what the response says it made


def catalog_keys():
    path = Path(__file__).resolve().parents[2] / "tracking" / "data" / "default_catalog.json"
    return set(json.loads(path.read_text()))


@pytest.mark.parametrize(
    ("request_", "model", "variant"),
    [
        ({"model": "dall-e-3"}, "dall-e-3", "standard/1024-x-1024"),
        ({"model": "dall-e-3", "quality": "hd"}, "dall-e-3", "hd/1024-x-1024"),
        ({"model": "dall-e-3", "size": "1792x1024"}, "dall-e-3", "standard/1792-x-1024"),
        ({"model": "dall-e-2", "size": "512x512"}, "dall-e-2", "512-x-512"),
        ({}, "dall-e-2", "1024-x-1024"),  # the API's default model
    ],
)
def test_dall_e_records_the_quality_and_size_the_api_applies_when_the_request_leaves_them_out(
    wrapped, cc, fake_api, request_, model, variant
):
    wrapped.images.generate(prompt="a cat", **request_)

    event = only(cc, fake_api)
    assert (event["model"], event["variant"], event["images"]) == (model, variant, 1)
    assert f"{variant}/{model}" in catalog_keys()  # a price the catalog has


def test_the_async_client_reads_tiers_audio_and_image_usage_too(providers, cc, fake_api):
    providers.openai_usage, providers.service_tier = AUDIO_USAGE, "priority"
    providers.image_usage = GPT_IMAGE_USAGE

    async def main():
        async with openai.AsyncOpenAI(api_key="sk", base_url=providers.base + "/v1", max_retries=0) as sdk:
            wrapped = wrap_openai(sdk, cc)
            await wrapped.chat.completions.create(model="gpt-4o-audio-preview", messages=[])
            stream = await wrapped.chat.completions.create(
                model="audio-stream", messages=[], stream=True, stream_options={"include_usage": True}
            )
            [chunk async for chunk in stream]
            responses = await wrapped.responses.create(model="o4-mini", input="hi", stream=True)
            [event async for event in responses]
            await wrapped.images.generate(model="gpt-image-1", prompt="a cat")

    asyncio.run(main())

    by_model = {event["model"]: event for event in recorded(cc, fake_api)}
    assert billed(by_model["gpt-4o-audio-preview" + DATED]) == AUDIO_BILLED
    assert billed(by_model["audio-stream" + DATED]) == AUDIO_BILLED
    assert by_model["o4-mini" + DATED]["service_tier"] == "priority"
    assert by_model["o4-mini" + DATED]["reasoning_tokens"] == 30
    assert by_model["gpt-image-1"]["output_image_tokens"] == 4160


def test_receipts_hand_back_what_a_wrapped_call_was_priced_at(wrapped, cc, fake_api):
    fake_api.price = lambda event: ("0.0061", "priced")

    with cc.receipts() as got:
        wrapped.chat.completions.create(model="gpt-4o", messages=[])

    [receipt] = got
    assert receipt.wait(5)
    assert (receipt.amount, receipt.pricing_status) == (Decimal("0.0061"), "priced")


def test_a_client_of_openais_eu_data_residency_host_records_its_calls_in_the_eu(cc, fake_api):
    import httpx

    from .fake_providers import openai_chat

    def answer(request):
        return httpx.Response(200, json=openai_chat("gpt-4o", {"prompt_tokens": 7, "completion_tokens": 3}, None))

    sdk = openai.OpenAI(
        api_key="sk-test",
        base_url="https://eu.api.openai.com/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    wrap_openai(sdk, cc).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert only(cc, fake_api)["region"] == "eu"


def test_a_client_of_the_global_host_names_no_region(wrapped, cc, fake_api):
    wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert "region" not in only(cc, fake_api)
