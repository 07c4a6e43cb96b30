"""The event says what the provider said (service tier, every ledger quantity), and a reservation
settles by the call's usage, priced by the server as recording it would be."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgets.models import Reservation
from tests.conftest import EPOCH
from tests.factories import BudgetFactory, PriceFactory
from tracking.events import QUANTITY_FIELDS
from tracking.models import CostEntry

pytestmark = pytest.mark.django_db

USAGE = {
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 1000,
    "output_tokens": 100,
    "cached_input_tokens": 400,
}


@pytest.fixture
def priority_only_prices(db):
    """A model priced at its priority tier only: the same amount whether or not the tier is matched."""
    for unit, price in {
        "input_token": "0.00000425",
        "output_token": "0.000017",
        "input_audio_token": "0.00004",
    }.items():
        PriceFactory(
            provider="openai",
            model="gpt-4o-audio",
            operation="chat",
            unit=unit,
            unit_price=price,
            service_tier="priority",
            valid_from=EPOCH,
        )


@pytest.fixture
def reservation(api):
    BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("10"), hard_limit=True)
    held = api.post("/budgets/reserve", {"scopes": ["service:image-api"], "amount": "1"})
    assert held.status_code == 201
    return held.json()["reservations"][0]


def test_an_event_stores_the_service_tier_it_was_served_at_and_its_audio_tokens(api, priority_only_prices):
    body = {
        "provider": "openai",
        "model": "gpt-4o-audio",
        "service_tier": "Priority",
        "input_tokens": 1000,
        "input_audio_tokens": 500,
        "output_tokens": 100,
        "idempotency_key": "tiered",
    }
    response = api.post("/events", body)

    assert response.status_code == 201, response.json()
    # 1000 x 0.00000425 + 500 x 0.00004 + 100 x 0.000017
    assert response.json()["amount"] == "0.02595"
    assert response.json()["pricing_status"] == "priced"
    entry = CostEntry.objects.get()
    assert entry.service_tier == "priority"
    assert (entry.input_tokens, entry.input_audio_tokens, entry.output_tokens) == (1000, 500, 100)


@pytest.mark.parametrize(("said", "stored"), [("default", ""), ("standard", ""), ("", ""), ("FLEX", "flex")])
def test_the_providers_names_for_the_standard_tier_are_the_standard_tier(api, gpt4o_prices, said, stored):
    assert api.post("/events", {**USAGE, "service_tier": said}).status_code == 201

    assert CostEntry.objects.get().service_tier == stored


def test_every_ledger_quantity_is_accepted_and_stored(api, gpt4o_prices):
    quantities = {name: 7 for name in QUANTITY_FIELDS}
    for name in ("seconds", "gpu_hours", "input_audio_seconds", "input_video_seconds"):
        quantities[name] = "1.5"

    response = api.post("/events", {"provider": "openai", "model": "gpt-4o", **quantities})

    assert response.status_code == 201, response.json()
    entry = CostEntry.objects.get()
    assert {name: getattr(entry, name) for name in QUANTITY_FIELDS} == {
        name: Decimal(value) if isinstance(value, str) else value for name, value in quantities.items()
    }
    assert response.json()["pricing_status"] == "unpriced"  # gpt-4o has no price for most of them


def test_a_service_tier_longer_than_20_characters_is_refused_naming_the_field(api, gpt4o_prices):
    response = api.post("/events", {**USAGE, "service_tier": "x" * 21})

    assert response.status_code == 422
    assert "service_tier" in response.json()["errors"]
    assert CostEntry.objects.count() == 0


def test_the_openapi_document_lists_the_service_tier_and_every_quantity_of_events_and_usages(api):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]

    for name in ("EventIn", "UsageIn"):
        assert {"service_tier", *QUANTITY_FIELDS} <= set(schemas[name]["properties"]), name
    assert {"actual", "usage"} <= set(schemas["SettleIn"]["properties"])
    assert "disjoint" in schemas["UsageIn"]["description"]


def test_a_batch_answers_each_entrys_amount_currency_and_pricing_status(api, gpt4o_prices):
    events = [
        {**USAGE, "idempotency_key": "a"},
        {"provider": "openai", "model": "gpt-4o", "input_audio_tokens": 10, "idempotency_key": "b"},
    ]
    results = api.post("/events", {"events": events}).json()["results"]

    assert [(r["amount"], r["currency"], r["pricing_status"]) for r in results] == [
        ("0.004", "USD", "priced"),  # 600 x 0.0000025 + 400 x 0.00000125 + 100 x 0.00001
        ("0", "USD", "unpriced"),
    ]


# --- settle by usage -----------------------------------------------------------------------------


def test_a_reservation_settles_at_what_recording_the_same_usage_costs_and_nothing_is_recorded(
    api, gpt4o_prices, reservation
):
    settled = api.post(f"/reservations/{reservation['id']}/settle", {"usage": USAGE})

    assert settled.status_code == 200, settled.json()
    assert settled.json()["status"] == "settled"
    assert settled.json()["actual"] == "0.004"
    assert CostEntry.objects.count() == 0  # settling prices, the caller records
    recorded = api.post("/events", USAGE).json()
    assert recorded["amount"] == settled.json()["actual"]  # one pricing function


def test_a_usage_at_a_tier_is_priced_at_that_tier(api, priority_only_prices, reservation):
    usage = {"provider": "openai", "model": "gpt-4o-audio", "service_tier": "priority", "input_tokens": 1000}

    settled = api.post(f"/reservations/{reservation['id']}/settle", {"usage": usage})

    assert settled.status_code == 200, settled.json()
    assert settled.json()["actual"] == "0.00425"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"usage": {**USAGE, "input_tokens": -1}}, "usage.input_tokens"),
        ({"usage": {**USAGE, "tokens": 5}}, "usage.tokens"),
        ({"usage": {**USAGE, "seconds": "+.5962508E555"}}, "usage.seconds"),  # found by schemathesis
        ({"usage": {**USAGE, "input_tokens": 2**62}}, "usage.input_tokens"),  # costs beyond a ledger entry
        ({"usage": {**USAGE, "service_tier": "p" * 21}}, "usage.service_tier"),
        ({"usage": {"model": "gpt-4o"}}, "usage.provider"),
        ({"usage": {**USAGE, "amount": "1"}}, "usage.amount"),
        ({"usage": USAGE, "actual": "1"}, "actual"),
        ({}, "actual"),
    ],
)
def test_a_bad_settlement_is_refused_naming_the_field_and_changes_nothing(api, gpt4o_prices, reservation, body, field):
    response = api.post(f"/reservations/{reservation['id']}/settle", body)

    assert response.status_code == 422, response.json()
    assert field in response.json()["errors"], response.json()
    held = Reservation.objects.get(pk=reservation["id"])
    assert (held.settled_at, held.actual) == (None, None)


def test_a_usage_the_catalog_does_not_price_is_refused_naming_the_missing_rule_never_settled_at_zero(
    api, gpt4o_prices, reservation
):
    unknown_model = api.post(
        f"/reservations/{reservation['id']}/settle", {"usage": {**USAGE, "model": "gpt-4o-nonexistent"}}
    )
    audio_on_a_text_price_list = api.post(
        f"/reservations/{reservation['id']}/settle", {"usage": {**USAGE, "input_audio_tokens": 50}}
    )

    assert unknown_model.status_code == 422
    assert unknown_model.json()["errors"]["usage"] == ["no price for openai/gpt-4o-nonexistent"]
    assert audio_on_a_text_price_list.status_code == 422
    assert "audio" in audio_on_a_text_price_list.json()["errors"]["usage"][0]
    assert Reservation.objects.get(pk=reservation["id"]).settled_at is None


def test_a_settled_reservation_is_a_conflict_whether_settled_by_amount_or_usage(api, gpt4o_prices, reservation):
    assert api.post(f"/reservations/{reservation['id']}/settle", {"actual": "0.5"}).status_code == 200

    again = api.post(f"/reservations/{reservation['id']}/settle", {"usage": USAGE})

    assert again.status_code == 409
    assert Reservation.objects.get(pk=reservation["id"]).actual == Decimal("0.5")


def test_the_api_takes_as_a_usage_exactly_what_the_server_prices():
    from api.events import UsageIn
    from tracking.selectors import USAGE_FIELDS

    assert set(UsageIn.model_fields) == USAGE_FIELDS


def test_a_usage_priced_in_another_currency_than_the_budgets_is_refused(api, gpt4o_prices):
    BudgetFactory(name="Euro", scope="service:image-api", amount=Decimal("10"), currency="EUR", hard_limit=True)
    [held] = api.post("/budgets/reserve", {"scopes": ["service:image-api"], "amount": "1"}).json()["reservations"]

    response = api.post(f"/reservations/{held['id']}/settle", {"usage": USAGE})

    assert response.status_code == 422
    assert response.json()["errors"]["usage"] == ["is priced in USD; the budget counts EUR"]
    assert Reservation.objects.get(pk=held["id"]).settled_at is None
