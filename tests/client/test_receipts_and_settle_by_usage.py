"""record() hands back what the server priced the event at; settle() takes the call's usage."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from costcontrol_client import InvalidRequest, Receipt


@pytest.fixture
def client(fake_api, make_client):
    return make_client(fake_api.url, flush_interval=60)


def test_record_returns_its_key_and_after_wait_the_amount_and_pricing_status_the_server_gave(fake_api, client):
    fake_api.price = lambda event: ("0.0123", "priced")

    receipt = client.record(provider="openai", model="gpt-4o", input_tokens=812, idempotency_key="call-1")

    assert isinstance(receipt, Receipt) and receipt == "call-1" and receipt.key == "call-1"
    assert receipt.status is None  # nothing waits for the server unless asked
    assert receipt.wait(timeout=5)  # sends now: no flush_interval to sit out
    assert (receipt.status, receipt.amount, receipt.currency, receipt.pricing_status) == (
        "accepted",
        Decimal("0.0123"),
        "USD",
        "priced",
    )


def test_a_receipt_says_duplicate_rejected_or_spooled_as_the_event_fared(fake_api, client, make_client):
    fake_api.price = lambda event: ("0.5", "priced")
    client.record(provider="openai", model="gpt-4o", idempotency_key="same").wait(5)
    again = client.record(provider="openai", model="gpt-4o", idempotency_key="same")
    fake_api.reject = lambda event: {"model": ["unknown"]} if event["model"] == "nope" else None
    refused = client.record(provider="openai", model="nope")

    assert again.wait(5) and (again.status, again.amount) == ("duplicate", Decimal("0.5"))
    assert refused.wait(5) and refused.status == "rejected" and refused.errors == {"model": ["unknown"]}
    assert refused.amount is None

    fake_api.stop()
    offline = make_client(fake_api.url, max_retries=0)
    kept = offline.record(provider="openai", model="gpt-4o")
    assert kept.wait(5) and kept.status == "spooled" and kept.amount is None


def test_receipts_collects_the_receipts_of_what_is_recorded_inside_the_block_only(fake_api, client):
    fake_api.price = lambda event: (str(event["input_tokens"]), "priced")
    client.record(provider="openai", model="gpt-4o", input_tokens=1)

    with client.receipts() as got:
        client.record(provider="openai", model="gpt-4o", input_tokens=2)
        client.record(provider="openai", model="gpt-4o", input_tokens=3)

    assert [r.wait(5) and r.amount for r in got] == [Decimal(2), Decimal(3)]


def test_a_receipt_copies_and_pickles_as_its_plain_key_not_the_client(client):
    receipt = client.record(provider="openai", model="gpt-4o", idempotency_key="k")

    copied = copy.deepcopy({"key": receipt})["key"]

    assert copied == "k" and type(copied) is str


def test_settle_sends_the_calls_usage_for_the_server_to_price(fake_api, client):
    fake_api.routes[("POST", "/api/v1/reservations/9/settle")] = (
        200,
        {"id": 9, "status": "settled", "actual": "0.004"},
        {},
    )

    settled = client.settle(
        9,
        usage={
            "provider": "openai",
            "model": "gpt-4o",
            "service_tier": "priority",
            "input_tokens": 600,
            "cached_input_tokens": 400,
            "input_audio_seconds": Decimal("1.5"),
        },
    )

    assert settled["actual"] == "0.004"
    assert fake_api.calls()[-1][3] == {
        "usage": {
            "provider": "openai",
            "model": "gpt-4o",
            "service_tier": "priority",
            "input_tokens": 600,
            "cached_input_tokens": 400,
            "input_audio_seconds": "1.5",
        }
    }


def test_settle_takes_an_amount_or_a_usage_never_both_or_neither_and_refuses_a_float(fake_api, client):
    usage = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1}
    with pytest.raises(ValueError, match="either actual"):
        client.settle(9, actual="1", usage=usage)
    with pytest.raises(ValueError, match="either actual"):
        client.settle(9)
    with pytest.raises(TypeError, match="unknown usage fields"):
        client.settle(9, usage={**usage, "subject": "u1"})
    with pytest.raises(TypeError, match="seconds must be a Decimal"):
        client.settle(9, usage={**usage, "seconds": 1.5})
    assert not [r for r in fake_api.requests if "settle" in r[1]]  # nothing was sent


def test_an_unpriced_usage_raises_invalid_request_naming_the_missing_rule(fake_api, client):
    answer = {
        "code": "invalid",
        "message": "usage: no price in force for openai/gpt-9",
        "errors": {"usage": ["no price in force for openai/gpt-9"]},
    }
    fake_api.routes[("POST", "/api/v1/reservations/9/settle")] = (422, answer, {})

    with pytest.raises(InvalidRequest) as excinfo:
        client.settle(9, usage={"provider": "openai", "model": "gpt-9", "input_tokens": 1})

    assert "no price in force for openai/gpt-9" in str(excinfo.value)


def test_the_client_knows_exactly_the_fields_the_server_takes_in_events_and_usages():
    from api.events import EventIn, UsageIn
    from costcontrol_client import EVENT_FIELDS, USAGE_FIELDS

    assert set(EVENT_FIELDS) == set(EventIn.model_fields)
    assert set(USAGE_FIELDS) == set(UsageIn.model_fields)
