"""wrap_anthropic against the real anthropic SDK talking to a fake Anthropic on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from costcontrol_client import wrap_anthropic

from .fake_providers import DATED, FakeProviders

anthropic = pytest.importorskip("anthropic")

MODEL = "claude-test-model"  # a made-up name: the SDK warns on retired real ones
ASK = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
# message_start: 25 input, 100 cache reads, 40 cache writes; message_delta: 15 output in all
BILLED = {"input_tokens": 25, "output_tokens": 15, "cached_input_tokens": 100, "cache_write_tokens": 40}


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
    client = anthropic.Anthropic(api_key="sk-ant-test", base_url=providers.base, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def wrapped(sdk, cc):
    return wrap_anthropic(sdk, cc, service="support", subject="ticket-9")


def recorded(cc, fake_api):
    assert cc.flush(timeout=5)
    return list(fake_api.events.values())


def only(cc, fake_api):
    events = recorded(cc, fake_api)
    assert len(events) == 1, events
    return events[0]


def billed(event):
    return {name: event.get(name) for name in BILLED}


def test_a_message_records_input_output_and_cache_tokens(wrapped, cc, fake_api):
    message = wrapped.messages.create(**ASK)

    assert message.content[0].text == "Hello"
    event = only(cc, fake_api)
    assert event["provider"] == "anthropic"
    assert event["model"] == MODEL + DATED
    assert event["operation"] == "chat"
    assert event["outcome"] == "success"
    assert billed(event) == BILLED
    assert (event["service"], event["subject"]) == ("support", "ticket-9")


def test_a_stream_passes_events_through_and_records_message_start_plus_message_delta(wrapped, sdk, cc, fake_api):
    plain = [event.type for event in sdk.messages.create(**ASK, stream=True)]

    stream = wrapped.messages.create(**ASK, stream=True)
    kinds = []
    for event in stream:
        kinds.append(event.type)
        if event.type == "message_start":
            assert recorded(cc, fake_api) == []  # not before the end

    assert kinds == plain
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    event = only(cc, fake_api)
    assert billed(event) == BILLED
    assert event["model"] == MODEL + DATED


def test_a_stream_that_carried_no_usage_is_recorded_as_usage_unavailable(wrapped, cc, fake_api):
    for _ in wrapped.messages.create(**{**ASK, "model": "no-usage"}, stream=True):
        pass

    event = only(cc, fake_api)
    assert event["usage_unavailable"] is True
    assert not any(name in event for name in BILLED)


def test_the_stream_helper_records_from_the_accumulated_message(wrapped, cc, fake_api):
    with wrapped.messages.stream(**ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Hello"
    assert final.usage.output_tokens == 15
    event = only(cc, fake_api)
    assert billed(event) == BILLED


def test_a_rate_limited_message_is_recorded_as_rate_limited_and_re_raised(wrapped, cc, fake_api):
    with pytest.raises(anthropic.RateLimitError):
        wrapped.messages.create(**{**ASK, "model": "rate-limited"})

    event = only(cc, fake_api)
    assert event["outcome"] == "rate_limited"
    assert event["model"] == "rate-limited"


def test_a_server_error_is_recorded_as_an_error_and_re_raised(wrapped, cc, fake_api):
    with pytest.raises(anthropic.InternalServerError):
        wrapped.messages.create(**{**ASK, "model": "broken"})
    with pytest.raises(anthropic.InternalServerError), wrapped.messages.stream(**{**ASK, "model": "broken"}):
        pass

    events = recorded(cc, fake_api)
    assert [event["outcome"] for event in events] == ["error", "error"]


def test_the_wrapper_behaves_like_the_sdk_client(wrapped, sdk):
    assert isinstance(wrapped, anthropic.Anthropic)
    assert wrapped.api_key == sdk.api_key
    assert wrapped.models is sdk.models


def test_the_async_client_records_messages_and_streams(providers, cc, fake_api):
    async def main():
        async with anthropic.AsyncAnthropic(api_key="sk", base_url=providers.base, max_retries=0) as sdk:
            wrapped = wrap_anthropic(sdk, cc, job="async")
            message = await wrapped.messages.create(**ASK)
            kinds = [event.type async for event in await wrapped.messages.create(**{**ASK, "model": "b"}, stream=True)]
            async with wrapped.messages.stream(**{**ASK, "model": "c"}) as stream:
                text = await stream.get_final_text()
            return message, kinds, text

    message, kinds, text = asyncio.run(main())

    assert message.content[0].text == "Hello"
    assert kinds[-1] == "message_stop"
    assert text == "Hello"
    events = {event["model"]: event for event in recorded(cc, fake_api)}
    assert set(events) == {MODEL + DATED, "b" + DATED, "c" + DATED}
    assert all(billed(event) == BILLED for event in events.values())
    assert {event["job"] for event in events.values()} == {"async"}


# --- what the provider said: cache lifetimes, tier, web searches, batches -----------------------

# 40 cache writes: 30 for 5 minutes, 10 for 1 hour; served at priority, in the US, in fast mode; 2 web searches.
RICH_USAGE = {
    "input_tokens": 25,
    "output_tokens": 15,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 40,
    "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 10},
    "service_tier": "priority",
    "inference_geo": "us",
    "speed": "fast",
    "server_tool_use": {"web_search_requests": 2},
}
RICH_BILLED = {
    "input_tokens": 25,
    "output_tokens": 15,
    "cached_input_tokens": 100,
    "cache_write_tokens": 30,
    "cache_write_1h_tokens": 10,
    "service_tier": "priority",
    "region": "us",
    "speed": "fast",
    "web_searches": 2,
}


def rich(event):
    return {name: event.get(name) for name in RICH_BILLED}


@pytest.fixture
def rich_usage(providers):
    providers.anthropic_usage = RICH_USAGE


def test_a_message_records_1_hour_cache_writes_apart_from_5_minute_ones_its_tier_and_web_searches(
    rich_usage, wrapped, cc, fake_api
):
    wrapped.messages.create(**ASK)

    assert rich(only(cc, fake_api)) == RICH_BILLED


def test_without_the_lifetime_split_cache_writes_are_5_minute_ones(wrapped, cc, fake_api):
    wrapped.messages.create(**ASK)

    event = only(cc, fake_api)
    assert (event["cache_write_tokens"], event.get("cache_write_1h_tokens")) == (40, None)


def test_a_stream_records_the_lifetimes_and_tier_of_message_start_and_the_searches_of_message_delta(
    rich_usage, wrapped, cc, fake_api
):
    kinds = [event.type for event in wrapped.messages.create(**ASK, stream=True)]

    assert kinds[-1] == "message_stop"
    assert rich(only(cc, fake_api)) == RICH_BILLED


def test_the_stream_helper_records_the_lifetimes_tier_and_searches_too(rich_usage, wrapped, cc, fake_api):
    with wrapped.messages.stream(**ASK) as stream:
        stream.get_final_message()

    assert rich(only(cc, fake_api)) == RICH_BILLED


def test_the_async_client_records_the_lifetimes_tier_and_searches(rich_usage, providers, cc, fake_api):
    async def main():
        async with anthropic.AsyncAnthropic(api_key="sk", base_url=providers.base, max_retries=0) as sdk:
            wrapped = wrap_anthropic(sdk, cc)
            await wrapped.messages.create(**ASK)
            [event async for event in await wrapped.messages.create(**{**ASK, "model": "b"}, stream=True)]

    asyncio.run(main())

    assert [rich(event) for event in recorded(cc, fake_api)] == [RICH_BILLED, RICH_BILLED]


def batch_line(custom_id, kind, model="claude-batch"):
    result = {"type": kind}
    if kind == "succeeded":
        result["message"] = anthropic_message_for_batch(model)
    if kind == "errored":
        result["error"] = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    return {"custom_id": custom_id, "result": result}


def anthropic_message_for_batch(model):
    from .fake_providers import anthropic_message

    usage = {**RICH_USAGE, "service_tier": "batch"}
    usage.pop("server_tool_use")
    return anthropic_message(model, usage)


@pytest.fixture
def batch(providers):
    providers.batch_results = [
        batch_line("a", "succeeded"),
        batch_line("b", "succeeded"),
        batch_line("c", "errored"),
        batch_line("d", "expired"),
    ]


def test_batch_results_are_recorded_as_read_at_the_batch_tier_once_however_often_read(batch, wrapped, cc, fake_api):
    results = list(wrapped.messages.batches.results("msgbatch_1"))
    again = list(wrapped.messages.batches.results("msgbatch_1"))

    assert [r.custom_id for r in results] == ["a", "b", "c", "d"] == [r.custom_id for r in again]
    assert cc.flush(5)
    assert fake_api.received == 6  # each read records the three that ran; the server keeps them once, by key
    events = dict(fake_api.events)
    assert set(events) == {
        "anthropic-batch/msgbatch_1/a",
        "anthropic-batch/msgbatch_1/b",
        "anthropic-batch/msgbatch_1/c",
    }
    succeeded = events["anthropic-batch/msgbatch_1/a"]
    assert succeeded["service_tier"] == "batch"
    assert succeeded["model"] == "claude-batch" + DATED
    assert (succeeded["input_tokens"], succeeded["cache_write_tokens"], succeeded["cache_write_1h_tokens"]) == (
        25,
        30,
        10,
    )
    assert events["anthropic-batch/msgbatch_1/c"]["outcome"] == "error"
    assert "input_tokens" not in events["anthropic-batch/msgbatch_1/c"]  # an errored request is not billed


def test_async_batch_results_are_recorded_at_the_batch_tier(batch, providers, cc, fake_api):
    async def main():
        async with anthropic.AsyncAnthropic(api_key="sk", base_url=providers.base, max_retries=0) as sdk:
            wrapped = wrap_anthropic(sdk, cc)
            return [r.custom_id async for r in await wrapped.messages.batches.results("msgbatch_2")]

    assert asyncio.run(main()) == ["a", "b", "c", "d"]
    assert cc.flush(5)
    assert {key: event["service_tier"] for key, event in fake_api.events.items()} == {
        f"anthropic-batch/msgbatch_2/{custom_id}": "batch" for custom_id in "abc"
    }
