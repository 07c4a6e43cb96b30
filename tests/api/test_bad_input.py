"""Bad input gets a 4xx naming what is wrong, never a 500, and nothing is written (issue 18)."""

from __future__ import annotations

import json

import pytest

from tests.factories import PriceFactory
from tracking.models import Batch, CostEntry, SpendRollup

pytestmark = pytest.mark.django_db

EVENT = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}


def nothing_written() -> bool:
    return CostEntry.objects.count() == 0 and SpendRollup.objects.count() == 0


def test_json_nested_100000_deep_is_a_400_not_a_recursion_error(api, gpt4o_prices):
    body = '{"provider": "openai", "model": "gpt-4o", "tags": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = api.post("/events", body)
    assert response.status_code == 400 and response.json()["code"] == "malformed_json"
    assert "nested too deeply" in response.json()["message"] and nothing_written()


def test_a_lone_surrogate_in_a_tag_key_is_refused_naming_the_tags(api, gpt4o_prices):
    response = api.post("/events", '{"provider": "openai", "model": "gpt-4o", "tags": {"\\ud800": "x"}}')
    assert response.status_code == 422, response.content
    assert next(iter(response.json()["errors"])).startswith("tags") and "surrogate" in response.json()["message"]
    assert nothing_written()


def test_an_occurred_at_before_year_one_in_utc_is_refused_naming_it(api, gpt4o_prices):
    response = api.post("/events", {**EVENT, "occurred_at": "0001-01-01T00:00:00+01:00"})
    assert response.status_code == 422, response.content
    assert "occurred_at" in response.json()["errors"] and "out of range" in response.json()["message"]
    assert nothing_written()


def test_a_body_over_the_limit_is_a_json_413_stating_the_limit(api, gpt4o_prices, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/events", {**EVENT, "subject": "x" * 2000})
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "body_too_large" and response.json()["limit_bytes"] == 1000
    assert "1000 bytes" in response.json()["message"] and nothing_written()
    assert api.post("/budgets/check", {"scope": "x" * 2000}).status_code == 413  # every operation


def test_a_body_that_is_not_json_by_its_content_type_is_a_415(client, api, gpt4o_prices):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api.key.plaintext}"}
    for path in ("/api/v1/events", "/api/v1/budgets/check"):
        response = client.post(path, json.dumps(EVENT), content_type="text/plain", **headers)
        assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    form = client.post("/api/v1/events", EVENT, **headers)  # the test client's multipart form
    assert form.status_code == 415 and nothing_written()
    assert api.post("/events", EVENT).status_code == 201


def test_a_currency_without_an_amount_is_refused_not_read_as_usd(api, gpt4o_prices):
    response = api.post("/events", {**EVENT, "currency": "EUR"})
    assert response.status_code == 422 and "currency" in response.json()["errors"]
    assert "without an amount" in response.json()["message"] and nothing_written()
    assert api.post("/events", {**EVENT, "amount": "1.5", "currency": "EUR"}).json()["currency"] == "EUR"


def test_minus_zero_is_shown_as_zero(api, gpt4o_prices):
    body = api.post("/events", '{"provider": "openai", "model": "gpt-4o", "amount": -0.0}').json()
    assert body["amount"] == "0"
    assert CostEntry.objects.get().amount == 0


def test_a_batch_name_with_a_slash_is_refused_at_start(api):
    response = api.post("/batches", {"name": "nightly/leads"})
    assert response.status_code == 422 and "name" in response.json()["errors"]
    assert "'/'" in response.json()["message"] and Batch.objects.count() == 0


def test_a_batch_of_1000_events_naming_1000_models_is_recorded(api, gpt4o_prices):
    for i in range(1000):
        PriceFactory(provider="openai", model=f"model-{i}", operation="chat", unit="input_token", unit_price="0.000001")
    events = [{**EVENT, "model": f"model-{i}", "output_tokens": 0, "idempotency_key": f"m{i}"} for i in range(1000)]
    response = api.post("/events", {"events": events})
    assert response.status_code == 200, response.content[:500]
    assert response.json()["accepted"] == 1000 and CostEntry.objects.count() == 1000
    assert {r["amount"] for r in response.json()["results"]} == {"0.001"}


def test_an_idempotency_key_sent_again_with_another_body_is_a_409_naming_the_key(api, gpt4o_prices):
    assert api.post("/events", {**EVENT, "idempotency_key": "k1"}).status_code == 201
    same = api.post("/events", {**EVENT, "provider": "OpenAI", "idempotency_key": "k1"})  # validates alike
    assert same.status_code == 200 and same.json()["status"] == "duplicate"
    response = api.post("/events", {**EVENT, "input_tokens": 999, "idempotency_key": "k1"})
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["code"] == "idempotency_conflict" and "'k1'" in body["message"]
    assert "input_tokens" in body["message"] and "image-api/" not in body["message"]
    explicit = api.post("/events", {**EVENT, "amount": "2", "idempotency_key": "k1"})
    assert explicit.status_code == 409 and "amount" in explicit.json()["message"]
    assert CostEntry.objects.count() == 1


def test_a_batch_repeating_a_key_with_another_body_rejects_that_event_with_a_conflict(api, gpt4o_prices):
    api.post("/events", {"events": [{**EVENT, "idempotency_key": "a"}]})
    body = api.post(
        "/events",
        {
            "events": [
                {**EVENT, "idempotency_key": "a", "subject": "someone-else"},
                {**EVENT, "idempotency_key": "b"},
                {**EVENT, "idempotency_key": "b", "model": "gpt-4o-mini"},  # the same key twice in one batch
            ]
        },
    ).json()
    assert [r["status"] for r in body["results"]] == ["rejected", "accepted", "rejected"]
    first = body["results"][0]
    assert first["code"] == "idempotency_conflict" and "'a'" in first["errors"]["idempotency_key"][0]
    assert "subject" in first["errors"]["idempotency_key"][0]
    assert body["results"][2]["code"] == "idempotency_conflict" and body["results"][1]["code"] is None
    assert CostEntry.objects.count() == 2
