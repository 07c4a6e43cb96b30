"""No event is dropped for a reason the client could have known (issue 18): record() refuses an event
for another service than the API key's, and what the server rejects for good is kept in the
dead-letter file with the server's reason, never only logged, and not retried."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from costcontrol_client import Client, ServiceMismatch, default_dead_letter_path

from .fake_costcontrol import Scripted

KEY_ANSWER = {
    "name": "search prod",
    "prefix": "0a1b2c3d4e5f",
    "service": "search",
    "team": None,
    "scopes": [],
    "rate_limit_per_minute": 6000,
    "expires_at": None,
}


def chat(**extra):
    return {"provider": "openai", "model": "gpt-4o", "operation": "chat", "input_tokens": 10, **extra}


def dead_letters(client: Client) -> list[dict]:
    path = client.dead_letters.path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def key_route(fake_api):
    fake_api.routes[("GET", "/api/v1/key")] = (200, KEY_ANSWER, {})


def key_requests(fake_api) -> int:
    return sum(1 for method, path, _, _ in fake_api.requests if (method, path) == ("GET", "/api/v1/key"))


def test_record_refuses_an_event_for_another_service_than_the_keys_naming_the_field(fake_api, make_client, key_route):
    client = make_client(fake_api.url)
    client.record(**chat())
    assert client.flush(timeout=5)  # the sender asked for the key's service before sending

    with pytest.raises(ServiceMismatch) as excinfo:
        client.record(**chat(service="billing"))

    assert isinstance(excinfo.value, ValueError) and excinfo.value.field == "service"
    assert str(excinfo.value).startswith("service: ") and "'billing'" in str(excinfo.value)
    assert (excinfo.value.service, excinfo.value.key_service) == ("billing", "search")
    client.record(**chat(service="search"))  # its own service, said or not, is fine
    assert client.flush(timeout=5)
    assert {e.get("service") for e in fake_api.events.values()} == {None, "search"}
    assert client.key_service == "search" and key_requests(fake_api) == 1  # asked once


def test_a_client_whose_default_service_is_not_the_keys_refuses_every_event_saying_so(fake_api, make_client, key_route):
    client = make_client(fake_api.url, service="billing")
    client.key()

    with pytest.raises(ServiceMismatch, match="the client's default service 'billing'"):
        client.record(**chat())
    assert client.stats["recorded"] == 0


def test_a_server_down_at_start_does_not_block_recording_and_the_service_is_learnt_when_it_is_back(
    fake_api, make_client, key_route
):
    fake_api.stop()
    client = make_client(fake_api.url)
    early = client.record(**chat())
    assert client.flush(timeout=5)
    assert client.key_service is None and early.status == "spooled"

    fake_api.start()  # the same port

    assert fake_api.wait_for(lambda: client.key_service == "search" and fake_api.keys() == {early}, timeout=5)
    with pytest.raises(ServiceMismatch):
        client.record(**chat(service="billing"))


def test_events_the_server_rejects_in_a_batch_are_kept_with_the_reason_and_time_not_retried(fake_api, make_client):
    fake_api.reject = lambda event: {"model": ["unknown model 'gpt-9'"]} if event["model"] == "gpt-9" else None
    client = make_client(fake_api.url, flush_interval=60)
    good = client.record(**chat())
    bad = client.record(**chat(model="gpt-9"))

    assert client.flush(timeout=5)

    [letter] = dead_letters(client)
    assert letter["event"]["idempotency_key"] == bad and letter["event"]["model"] == "gpt-9"
    assert (letter["status"], letter["code"]) == (200, "rejected")  # the batch was taken, this event rejected
    assert letter["message"] == "model: unknown model 'gpt-9'"
    assert letter["errors"] == {"model": ["unknown model 'gpt-9'"]}
    assert datetime.fromisoformat(letter["rejected_at"]).tzinfo is not None
    assert fake_api.keys() == {good} and fake_api.received == 2 and client.spool.count() == 0
    assert client.stats["dead_letters"] == 1


def test_a_403_for_the_events_goes_to_the_dead_letter_file_a_401_for_the_key_stays_in_the_spool(fake_api, make_client):
    reason = {"code": "forbidden", "message": "this API key records for service 'search' only, not 'billing'"}
    fake_api.script.append(Scripted(403, {**reason, "errors": {"service": [reason["message"]]}}))
    client = make_client(fake_api.url, flush_interval=60)
    refused = client.record(**chat())

    assert client.flush(timeout=5)

    [letter] = dead_letters(client)
    assert (letter["status"], letter["code"], letter["message"]) == (403, "forbidden", reason["message"])
    assert letter["errors"] == {"service": [reason["message"]]} and letter["event"]["idempotency_key"] == refused
    assert client.spool.count() == 0 and refused.status == "rejected"
    assert [p.status for p in fake_api.event_posts()] == [403]  # not retried


def test_the_dead_letter_file_lies_next_to_the_spool_unless_given(tmp_path, fake_api, make_client):
    assert default_dead_letter_path(tmp_path / "spool-abc.jsonl") == tmp_path / "spool-abc.dead-letters.jsonl"
    assert make_client(fake_api.url).dead_letters.path == tmp_path / "spool.dead-letters.jsonl"
    chosen = tmp_path / "elsewhere" / "rejected.jsonl"
    fake_api.reject = lambda event: {"model": ["unknown"]}
    client = make_client(fake_api.url, dead_letter_path=chosen, spool_path=tmp_path / "other.jsonl")

    client.record(**chat())
    assert client.flush(timeout=5)

    assert len(chosen.read_text().splitlines()) == 1


def test_a_wrapped_call_for_another_service_is_kept_in_the_dead_letter_file_and_the_call_succeeds(
    fake_api, make_client, key_route
):
    openai = pytest.importorskip("openai")
    from costcontrol_client import wrap_openai

    from .fake_providers import FakeProviders

    providers = FakeProviders().start()
    try:
        cc = make_client(fake_api.url)
        cc.key()
        sdk = openai.OpenAI(api_key="sk-test", base_url=providers.base + "/v1", max_retries=0)
        wrapped = wrap_openai(sdk, cc, service="billing")
        completion = wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        sdk.close()
    finally:
        providers.stop()

    assert completion.choices
    [letter] = dead_letters(cc)
    assert (letter["status"], letter["code"]) == (None, "service_mismatch")
    assert letter["errors"]["service"][0].startswith("service: ") and letter["event"]["service"] == "billing"
    assert letter["event"]["input_tokens"] > 0


# --- the real client against the real server ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_against_the_real_server_a_rejected_event_lands_in_the_dead_letter_file_and_is_not_retried(
    live_server, gpt4o_prices, tmp_path: Path
):
    from api.keys import api_key_issue
    from tracking.models import CostEntry

    issued = api_key_issue(name="search prod", service="search")
    options = {"spool_path": tmp_path / "spool.jsonl", "flush_interval": 0.05, "backoff_base": 0.01}
    client = Client(live_server.url, issued.plaintext, **options)
    try:
        client.record(**chat(idempotency_key="call-1"))
        assert client.flush(timeout=10)
        assert client.key_service == "search"  # learnt from GET /api/v1/key
        with pytest.raises(ServiceMismatch):
            client.record(**chat(service="billing"))

        # The same idempotency key with another body: the server's 409 idempotency_conflict, in a batch.
        conflicting = client.record(**chat(idempotency_key="call-1", input_tokens=20))
        assert conflicting.wait(timeout=10) and conflicting.status == "rejected"
    finally:
        client.close(timeout=5)

    [letter] = dead_letters(client)
    assert letter["code"] == "idempotency_conflict" and letter["status"] == 200
    assert "'call-1'" in letter["errors"]["idempotency_key"][0] and "call-1" in letter["message"]
    assert letter["event"]["input_tokens"] == 20 and letter["event"]["idempotency_key"] == "call-1"
    assert client.spool.count() == 0 and client.stats["retries"] == 0

    again = Client(live_server.url, issued.plaintext, **options)  # a restart re-sends the spool: nothing
    again.close(timeout=5)
    assert again.stats["resent"] == 0 and len(dead_letters(again)) == 1
    assert list(CostEntry.objects.values_list("input_tokens", flat=True)) == [10]
