"""CostcontrolLogger with the real LiteLLM SDK: mock_response, and the fake OpenAI/Anthropic on 127.0.0.1.

No network: LITELLM_LOCAL_MODEL_COST_MAP keeps LiteLLM from fetching its price map, and every
provider call is either mocked by LiteLLM or goes to tests/client/fake_providers.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: else it fetches the map

litellm = pytest.importorskip("litellm")
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

from costcontrol_client.litellm import CostcontrolLogger  # noqa: E402

from .fake_providers import DATED, FakeProviders  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi"}]
CHECK = ("POST", "/api/v1/budgets/check")
KEY = ("GET", "/api/v1/key")


class Capture(CustomLogger):
    """What LiteLLM hands its callbacks, to replay a report."""

    def __init__(self) -> None:
        super().__init__()
        self.successes: list[dict] = []

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.successes.append(
            {"kwargs": kwargs, "response_obj": response_obj, "start_time": start_time, "end_time": end_time}
        )


@pytest.fixture(autouse=True)
def litellm_callbacks():
    """LiteLLM keeps callbacks in module globals: each test starts and ends with none."""
    names = ("callbacks", "success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback")
    saved = {name: list(getattr(litellm, name)) for name in names}
    for name in names:
        setattr(litellm, name, [])
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)


@pytest.fixture
def cc(fake_api, make_client):
    return make_client(fake_api.url, flush_interval=60)


@pytest.fixture
def cc_logger(cc):
    handler = CostcontrolLogger(client=cc, service="search", job="nightly", tags={"team": "growth"})
    litellm.callbacks = [handler]
    return handler


@pytest.fixture
def providers():
    fake = FakeProviders().start()
    yield fake
    fake.stop()


def recorded(cc, fake_api, count=1):
    # LiteLLM runs success callbacks on a thread of its own after returning: wait for them.
    assert fake_api.wait_for(lambda: cc.stats["recorded"] >= count, timeout=5)
    assert cc.flush(timeout=5)
    return list(fake_api.events.values())


def only(cc, fake_api):
    events = recorded(cc, fake_api)
    assert len(events) == 1, events
    return events[0]


def settle():
    """LiteLLM's async callbacks run as tasks of the loop: let them finish before it closes."""
    return asyncio.sleep(0.3)


# --- success ---------------------------------------------------------------------------------


def test_a_mocked_completion_is_recorded_with_its_usage_call_id_and_duration_never_litellms_cost(
    cc_logger, cc, fake_api
):
    response = litellm.completion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="hi",
        metadata={"costcontrol_subject": "user-42", "tags": ["env=prod", "plain"]},
    )

    event = only(cc, fake_api)
    call_id = response._hidden_params["litellm_call_id"]
    assert event["idempotency_key"] == f"litellm/{call_id}"
    assert (event["provider"], event["model"], event["operation"], event["outcome"]) == (
        "openai",
        "gpt-4o",
        "chat",
        "success",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (10, 20)  # LiteLLM's mock usage
    assert (event["service"], event["subject"], event["job"]) == ("search", "user-42", "nightly")
    assert isinstance(event["duration_ms"], int) and event["duration_ms"] >= 0
    assert event["occurred_at"].endswith("+00:00")
    cost = response._hidden_params["response_cost"]
    assert cost > 0
    # LiteLLM's own figure is never the event's amount (nor a tag: one rollup scope per call): the server prices
    # the usage and keeps LiteLLM's figure beside its own, exact to the ledger's 9 places.
    assert event["tags"] == {"team": "growth", "env": "prod"}
    assert "amount" not in event
    assert (event["reported_amount"], event["reported_by"]) == (
        str(Decimal(repr(cost)).quantize(Decimal("1e-9"))),
        "litellm",
    )


def test_cached_and_reasoning_tokens_from_a_provider_are_recorded_disjoint(cc_logger, cc, fake_api, providers):
    litellm.completion(
        model="openai/gpt-4o", api_base=providers.base + "/v1", api_key="sk-test", messages=MESSAGES, user="end-7"
    )

    event = only(cc, fake_api)
    # prompt 120 of which 20 cached; completion 50 of which 15 reasoning: no token priced twice
    assert (event["input_tokens"], event["cached_input_tokens"]) == (100, 20)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (35, 15)
    assert event["model"] == "gpt-4o" + DATED  # the provider's answer
    assert event["subject"] == "end-7"  # the request's `user`
    assert providers.requests[-1][0] == "/v1/chat/completions"


def test_anthropic_through_litellm_keeps_cache_reads_and_writes_apart(cc_logger, cc, fake_api, providers):
    litellm.completion(
        model="anthropic/claude-sonnet-4-5", api_base=providers.base, api_key="sk-test", messages=MESSAGES
    )

    event = only(cc, fake_api)
    assert (event["provider"], event["model"]) == ("anthropic", "claude-sonnet-4-5" + DATED)
    # LiteLLM's prompt_tokens 165 = 25 + 100 cache reads + 40 cache writes: each priced once
    assert (event["input_tokens"], event["cached_input_tokens"], event["cache_write_tokens"]) == (25, 100, 40)
    assert event["output_tokens"] == 15


def test_an_embedding_is_recorded_as_embedding_tokens(cc_logger, cc, fake_api, providers):
    litellm.embedding(model="openai/text-embedding-3-small", api_base=providers.base + "/v1", api_key="sk", input=["x"])

    event = only(cc, fake_api)
    assert (event["operation"], event["embedding_tokens"]) == ("embedding", 8)


def test_a_cache_hit_is_not_recorded(cc_logger, cc, fake_api):
    kwargs = {"litellm_call_id": "c-1", "custom_llm_provider": "openai", "model": "gpt-4o", "call_type": "completion"}
    response = litellm.ModelResponse(model="gpt-4o", usage=litellm.Usage(prompt_tokens=5, completion_tokens=5))

    assert cc_logger.event({**kwargs, "standard_logging_object": {"cache_hit": True}}, response, None, None) is None
    assert cc_logger.event(kwargs, response, None, None)["input_tokens"] == 5


def test_the_proxys_metadata_sets_subject_job_and_tags_and_a_tag_the_server_would_refuse_is_dropped(cc_logger):
    kwargs = {
        "litellm_call_id": "c-2",
        "custom_llm_provider": "openai",
        "model": "gpt-4o",
        "call_type": "acompletion",
        "user": "request-user",
        "litellm_params": {
            "metadata": {
                "user_api_key_end_user_id": "end-user-9",  # the proxy's end user
                "costcontrol_job": "batch-3",
                "costcontrol_tags": {"feature": "x" * 150, "a=b": "no"},
                "tags": ["region:eu"],
            }
        },
    }
    response = litellm.ModelResponse(model="gpt-4o", usage=litellm.Usage(prompt_tokens=5, completion_tokens=5))

    event = cc_logger.event(kwargs, response, None, None)

    assert (event["subject"], event["job"], event["idempotency_key"]) == ("end-user-9", "batch-3", "litellm/c-2")
    assert event["tags"] == {"team": "growth", "region": "eu", "feature": "x" * 100}


# --- streams ---------------------------------------------------------------------------------


def test_a_stream_is_recorded_once_with_the_usage_it_carried(cc_logger, cc, fake_api, providers):
    stream = litellm.completion(
        model="openai/gpt-4o",
        api_base=providers.base + "/v1",
        api_key="sk-test",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    first = next(stream)
    assert first is not None
    assert cc.stats["recorded"] == 0  # nothing before the stream ends
    text = (first.choices[0].delta.content or "") + "".join(c.choices[0].delta.content or "" for c in stream)

    assert text == "Hello"
    event = only(cc, fake_api)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (100, 20)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (35, 15)
    assert event["model"] == "gpt-4o" + DATED
    assert fake_api.received == 1  # LiteLLM reported the stream once, not per chunk


def test_a_stream_whose_provider_sent_no_usage_is_usage_unavailable_not_free(cc_logger, cc, fake_api, providers):
    for _ in litellm.completion(
        model="openai/gpt-4o", api_base=providers.base + "/v1", api_key="sk-test", messages=MESSAGES, stream=True
    ):
        pass

    event = only(cc, fake_api)
    assert event["usage_unavailable"] is True
    assert "input_tokens" not in event and "output_tokens" not in event
    assert event["outcome"] == "success"


def test_a_mocked_stream_is_recorded_once(cc_logger, cc, fake_api):
    chunks = list(litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response="hello there", stream=True))

    assert len(chunks) > 1
    event = only(cc, fake_api)
    assert event["outcome"] == "success" and event["output_tokens"] > 0


# --- failures --------------------------------------------------------------------------------


def test_a_failed_call_is_recorded_as_an_error_without_quantities(cc_logger, cc, fake_api):
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(model="anthropic/claude-sonnet-4-5", messages=MESSAGES, mock_response=Exception("boom"))

    event = only(cc, fake_api)
    assert (event["provider"], event["model"], event["outcome"]) == ("anthropic", "claude-sonnet-4-5", "error")
    assert event["idempotency_key"].startswith("litellm/") and event["idempotency_key"].endswith("/error")
    assert not any(name.endswith("_tokens") for name in event)


def test_a_rate_limit_is_recorded_as_rate_limited(cc_logger, cc, fake_api, providers):
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(
            model="openai/rate-limited",
            api_base=providers.base + "/v1",
            api_key="sk",
            messages=MESSAGES,
            max_retries=0,  # the openai SDK's retries of a 429 would take seconds
        )
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(
            model="gpt-4o",
            messages=MESSAGES,
            mock_response=litellm.RateLimitError("slow down", llm_provider="openai", model="gpt-4o"),
        )

    events = recorded(cc, fake_api, count=2)
    assert [e["outcome"] for e in events] == ["rate_limited", "rate_limited"]
    assert [e["model"] for e in events] == ["rate-limited", "gpt-4o"]


# --- async -----------------------------------------------------------------------------------


def test_async_calls_streams_and_failures_are_recorded(cc_logger, cc, fake_api, providers):
    async def calls():
        await litellm.acompletion(model="gpt-4o", messages=MESSAGES, mock_response="hi")
        stream = await litellm.acompletion(
            model="openai/gpt-4o",
            api_base=providers.base + "/v1",
            api_key="sk-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass
        with pytest.raises(litellm.RateLimitError):
            await litellm.acompletion(
                model="openai/rate-limited",
                api_base=providers.base + "/v1",
                api_key="sk",
                messages=MESSAGES,
                max_retries=0,
            )
        await settle()

    asyncio.run(calls())

    events = recorded(cc, fake_api, count=3)
    by_model = {e["model"]: e for e in events}
    assert len(events) == 3, events
    assert (by_model["gpt-4o"]["input_tokens"], by_model["gpt-4o"]["output_tokens"]) == (10, 20)
    streamed = by_model["gpt-4o" + DATED]
    assert (streamed["input_tokens"], streamed["cached_input_tokens"], streamed["reasoning_tokens"]) == (100, 20, 15)
    assert by_model["rate-limited"]["outcome"] == "rate_limited"
    assert fake_api.received == 3  # an async call is reported by the async callbacks only


# --- idempotency -----------------------------------------------------------------------------


def test_a_call_reported_twice_counts_once_on_the_server(cc_logger, cc, fake_api):
    capture = Capture()
    litellm.callbacks = [cc_logger, capture]
    litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response="hi")
    assert fake_api.wait_for(lambda: len(capture.successes) == 1 and cc.stats["recorded"] == 1)

    cc_logger.log_success_event(**capture.successes[0])  # LiteLLM reporting the same call again

    events = recorded(cc, fake_api, count=2)
    assert len(events) == 1
    assert fake_api.received == 2
    posted = [event for _, path, _, body in fake_api.calls() if path == "/api/v1/events" for event in body["events"]]
    assert len(posted) == 2 and posted[0] == posted[1]  # the same body: the real server's 409 check passes


# --- the budget check --------------------------------------------------------------------------


def _budget(available: str, *, hard_limit: bool = True) -> dict:
    return {
        "name": "search monthly",
        "scope": "service:search",
        "currency": "USD",
        "limit": "100.00",
        "spent": "100.00",
        "available": available,
        "hard_limit": hard_limit,
        "allowed": Decimal(available) > 0,
    }


def _checked_scopes(fake_api) -> list[str]:
    return [body["scope"] for method, path, _, body in fake_api.calls() if (method, path) == CHECK]


def test_the_pre_call_hook_refuses_a_call_when_a_hard_limit_budget_has_no_headroom(cc_logger, fake_api):
    fake_api.routes[KEY] = (200, {"service": "search", "team": None}, {})
    fake_api.routes[CHECK] = (200, {"allowed": False, "budgets": [_budget("0.00")]}, {})

    with pytest.raises(litellm.BudgetExceededError) as refused:
        asyncio.run(
            cc_logger.async_pre_call_hook(
                user_api_key_dict=None, cache=None, data={"model": "gpt-4o", "user": "user-42"}, call_type="completion"
            )
        )

    assert "search monthly" in str(refused.value) and "service:search" in str(refused.value)
    assert (refused.value.current_cost, refused.value.max_budget) == (100.0, 100.0)
    assert _checked_scopes(fake_api) == ["service:search"]  # refused at the first scope


def test_the_pre_call_hook_lets_a_call_through_and_asks_the_service_and_subject_scopes(cc_logger, fake_api):
    fake_api.routes[KEY] = (200, {"service": "search", "team": None}, {})
    fake_api.routes[CHECK] = (200, {"allowed": True, "budgets": [_budget("5.00"), _budget("0", hard_limit=False)]}, {})
    data = {"model": "gpt-4o", "metadata": {"costcontrol_subject": "user-42"}}

    assert asyncio.run(cc_logger.async_pre_call_hook(None, None, data, "completion")) is None
    assert _checked_scopes(fake_api) == ["service:search", "subject:user-42"]


def test_a_team_key_checks_its_team_scopes_and_the_scopes_are_configurable(cc, fake_api):
    fake_api.routes[KEY] = (200, {"service": "search", "team": "ml"}, {})
    fake_api.routes[CHECK] = (200, {"allowed": True, "budgets": []}, {})
    handler = CostcontrolLogger(client=cc, check_scopes=("model:{model}", "global", "subject:{subject}"))

    handler.check_budget(model="openai/gpt-4o")  # the SDK helper: before litellm.completion(...)

    assert _checked_scopes(fake_api) == ["team:ml/model:gpt-4o", "team:ml"]  # no subject: not asked


def test_the_check_lets_calls_through_when_costcontrol_is_down_unless_fail_closed(fake_api, make_client):
    cc = make_client("http://127.0.0.1:9", max_retries=0)  # nothing listens there

    CostcontrolLogger(client=cc, service="search").check_budget(model="gpt-4o")
    with pytest.raises(litellm.BudgetExceededError, match="could not check service:search"):
        CostcontrolLogger(client=cc, service="search", fail_closed=True).check_budget(model="gpt-4o")


def test_after_costcontrol_answered_unavailable_the_check_pauses_instead_of_waiting_on_every_call(cc, fake_api):
    fake_api.routes[KEY] = (200, {"service": "search", "team": None}, {})
    fake_api.routes[CHECK] = (503, {"code": "unavailable", "message": "database down"}, {"Retry-After": "1"})
    handler = CostcontrolLogger(client=cc, service="search")

    handler.check_budget(model="gpt-4o", user="user-42")  # let through
    handler.check_budget(model="gpt-4o", user="user-42")  # not asked again: paused

    assert _checked_scopes(fake_api) == ["service:search"]


def test_the_proxy_loads_the_module_level_instance_and_runs_its_pre_call_hook(monkeypatch, fake_api, tmp_path):
    from litellm.proxy.types_utils.utils import get_instance_fn

    import costcontrol_client.litellm as module

    monkeypatch.setenv("COSTCONTROL_URL", fake_api.url)
    monkeypatch.setenv("COSTCONTROL_API_KEY", "cc-test-key")
    monkeypatch.setenv("COSTCONTROL_SERVICE", "search")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the spool of the client it builds
    monkeypatch.setattr(module, "_proxy_instance", None)

    handler = get_instance_fn("costcontrol_client.litellm.proxy_handler_instance")
    try:
        assert isinstance(handler, CostcontrolLogger)
        assert handler is module.proxy_handler_instance  # one instance
        assert handler.client.service == "search"
        # The proxy runs a callback's async_pre_call_hook only when its own class defines it.
        assert "async_pre_call_hook" in vars(type(handler))
    finally:
        handler.client.close(timeout=2)


@pytest.mark.django_db(transaction=True)
def test_against_the_real_server_litellms_cost_is_kept_beside_ours_and_a_difference_flagged(
    live_server, gpt4o_prices, tmp_path
):
    from api.keys import api_key_issue
    from costcontrol_client import Client
    from tests.conftest import EPOCH
    from tests.factories import PriceFactory
    from tracking.models import CostEntry

    # gpt-4o at LiteLLM's own price (the shared price file); gpt-4o-mini here at twice LiteLLM's input price.
    PriceFactory(provider="openai", model="gpt-4o-mini", unit="input_token", unit_price="0.0000003", valid_from=EPOCH)
    PriceFactory(provider="openai", model="gpt-4o-mini", unit="output_token", unit_price="0.0000006", valid_from=EPOCH)
    issued = api_key_issue(name="litellm", service="gateway")
    client = Client(live_server.url, issued.plaintext, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    litellm.callbacks = [CostcontrolLogger(client=client)]
    try:
        costs = [
            litellm.completion(model=model, messages=MESSAGES, mock_response="hi")._hidden_params["response_cost"]
            for model in ("gpt-4o", "gpt-4o-mini")
        ]
        deadline = time.monotonic() + 10  # LiteLLM runs success callbacks on a thread of its own
        while client.stats["recorded"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.flush(timeout=10)
    finally:
        client.close(timeout=5)
    gpt4o, mini = CostEntry.objects.order_by("model")
    assert (gpt4o.amount, gpt4o.reported_amount, gpt4o.reported_by, gpt4o.reported_differs) == (
        Decimal("0.000225"),  # 10 x 2.50/M + 20 x 10/M: LiteLLM's figure too
        Decimal(repr(costs[0])).quantize(Decimal("1e-9")),
        "litellm",
        False,
    )
    assert mini.amount == Decimal("0.000015") and mini.reported_amount == Decimal("0.0000135")
    assert mini.reported_differs is True  # 10 x 0.30/M + 20 x 0.60/M here; LiteLLM's map says 0.15/M input
