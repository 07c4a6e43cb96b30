"""Recording usage: pricing at the event's time, every unit, idempotency, unpriced events, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError

from tests.conftest import EPOCH
from tests.factories import PriceFactory, TeamFactory
from tracking.models import CostEntry, PricingStatus, SpendRollup
from tracking.selectors import ledger_differences, spend_total
from tracking.services import IdempotencyConflict, cost_entry_record, cost_entry_record_many

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


def rollup(scope: str) -> SpendRollup:
    return SpendRollup.objects.get(scope=scope)


def test_it_prices_gpt_4o_like_the_published_price_list(gpt4o_prices):
    entry = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500).entry

    assert entry.amount == Decimal("0.0075")
    assert entry.currency == "USD"
    assert entry.pricing_status == PricingStatus.PRICED
    assert entry.operation == "chat"  # filled from the catalog
    assert entry.prices_used["input_token"]["unit_price"] == "0.0000025"


def test_it_uses_the_price_in_force_at_the_events_time_across_a_price_change():
    change = datetime(2026, 11, 1, tzinfo=UTC)
    PriceFactory(provider="openai", model="m", unit="input_token", unit_price="0.000002", valid_until=change)
    PriceFactory(provider="openai", model="m", unit="input_token", unit_price="0.000001", valid_from=change)

    with time_machine.travel(NOW, tick=False):
        before = cost_entry_record(
            provider="openai", model="m", input_tokens=1_000_000, occurred_at=change - timedelta(seconds=1)
        )
        at = cost_entry_record(provider="openai", model="m", input_tokens=1_000_000, occurred_at=change)
        after = cost_entry_record(provider="openai", model="m", input_tokens=1_000_000)

    assert (before.entry.amount, at.entry.amount, after.entry.amount) == (Decimal(2), Decimal(1), Decimal(1))


@pytest.mark.parametrize(
    ("unit", "quantity_field", "quantity", "unit_price", "expected"),
    [
        ("input_token", "input_tokens", 1234, "0.0000025", "0.003085"),
        ("output_token", "output_tokens", 777, "0.00001", "0.00777"),
        ("cached_input_token", "cached_input_tokens", 10_000, "0.00000125", "0.0125"),
        ("cache_write_token", "cache_write_tokens", 10_000, "0.00000375", "0.0375"),
        ("reasoning_token", "reasoning_tokens", 300, "0.00006", "0.018"),
        ("embedding_token", "embedding_tokens", 8_000, "0.00000002", "0.00016"),
        ("image", "images", 3, "0.04", "0.12"),
        ("request", "requests", 2, "0.005", "0.01"),
        ("second", "seconds", "61.5", "0.0001", "0.00615"),
        ("gpu_hour", "gpu_hours", "1.5", "0.50", "0.75"),
    ],
)
def test_it_prices_every_unit_kind(unit, quantity_field, quantity, unit_price, expected):
    PriceFactory(provider="acme", model="m", operation="op", unit=unit, unit_price=unit_price)

    entry = cost_entry_record(provider="acme", model="m", **{quantity_field: quantity}).entry

    assert entry.amount == Decimal(expected)
    assert entry.pricing_status == PricingStatus.PRICED


def test_it_bills_reasoning_and_embedding_tokens_at_the_output_and_input_price_when_the_model_has_no_own_price():
    PriceFactory(provider="acme", model="m", unit="input_token", unit_price="0.000001")
    PriceFactory(provider="acme", model="m", unit="output_token", unit_price="0.000004")

    entry = cost_entry_record(provider="acme", model="m", reasoning_tokens=1000, embedding_tokens=1000).entry

    assert entry.amount == Decimal("0.005")


def test_it_prices_images_by_size_and_quality():
    for variant, price in {"standard/1024-x-1024": "0.04", "hd/1024-x-1792": "0.12"}.items():
        PriceFactory(
            provider="openai",
            model="dall-e-3",
            operation="image_generation",
            unit="image",
            variant=variant,
            unit_price=price,
        )

    hd = cost_entry_record(provider="openai", model="dall-e-3", images=2, variant="hd/1024-x-1792").entry
    unsized = cost_entry_record(provider="openai", model="dall-e-3", images=1).entry

    assert hd.amount == Decimal("0.24")
    assert unsized.pricing_status == PricingStatus.UNPRICED  # two sizes, none named: never guessed


def test_it_rounds_once_half_to_even_at_nine_places():
    PriceFactory(provider="acme", model="m", unit="input_token", unit_price="0.0000000015")  # 1.5e-9

    odd = cost_entry_record(provider="acme", model="m", input_tokens=1).entry  # 1.5e-9 -> 2e-9
    even = cost_entry_record(provider="acme", model="m", input_tokens=3).entry  # 4.5e-9 -> 4e-9

    assert (odd.amount, even.amount) == (Decimal("0.000000002"), Decimal("0.000000004"))


def test_the_same_idempotency_key_recorded_twice_counts_once(gpt4o_prices):
    first = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1000, idempotency_key="req-1")
    second = cost_entry_record(provider="OpenAI", model="gpt-4o", input_tokens=1000, idempotency_key="req-1")

    assert first.created and not second.created
    assert second.entry.pk == first.entry.pk
    with pytest.raises(IdempotencyConflict, match="other values of input_tokens"):
        cost_entry_record(provider="openai", model="gpt-4o", input_tokens=5000, idempotency_key="req-1")
    assert CostEntry.objects.count() == 1
    assert rollup("global").events == 1
    assert rollup("global").amount == Decimal("0.0025")


def test_an_event_with_no_price_in_force_is_stored_unpriced_and_counted_as_such(gpt4o_prices):
    entry = cost_entry_record(provider="openai", model="gpt-9-unreleased", input_tokens=1000).entry

    assert entry.amount == 0
    assert entry.pricing_status == PricingStatus.UNPRICED
    assert rollup("model:gpt-9-unreleased").unpriced == 1
    assert rollup("global").unpriced == 1


def test_an_event_using_a_unit_the_model_has_no_price_for_is_unpriced_not_under_counted(gpt4o_prices):
    entry = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1000, images=1).entry

    assert entry.pricing_status == PricingStatus.UNPRICED
    assert entry.amount == 0
    assert entry.prices_used == {"missing_units": ["image"], "reason": "no price for openai/gpt-4o: image"}


def test_an_explicit_amount_is_kept_exactly_and_marked_actual(gpt4o_prices):
    entry = cost_entry_record(
        provider="openai", model="gpt-4o", input_tokens=1000, amount="1.234567891", currency="eur"
    ).entry

    assert entry.amount == Decimal("1.234567891")
    assert entry.currency == "EUR"
    assert entry.pricing_status == PricingStatus.EXPLICIT
    assert entry.is_estimate is False
    assert SpendRollup.objects.get(scope="global", currency="EUR").amount == Decimal("1.234567891")


def test_failed_and_rate_limited_calls_are_recorded_and_counted(gpt4o_prices):
    cost_entry_record(provider="openai", model="gpt-4o", input_tokens=100, outcome="error", duration_ms=1200)
    cost_entry_record(provider="openai", model="gpt-4o", outcome="rate_limited")

    row = rollup("provider:openai")
    assert (row.events, row.errors, row.rate_limited) == (2, 1, 1)
    assert row.amount == Decimal("0.00025")


def test_an_entry_counts_towards_every_scope_it_belongs_to(gpt4o_prices):
    team = TeamFactory(name="ml")
    cost_entry_record(
        provider="openai",
        model="gpt-4o",
        input_tokens=1000,
        service="image-api",
        subject="john-doe",
        job="batch-123",
        team="ml",
        tags={"env": "prod", "feature": "search"},
    )

    scopes = set(SpendRollup.objects.values_list("scope", flat=True))
    own = {
        "provider:openai",
        "operation:chat",  # the default operation
        "model:gpt-4o",
        "service:image-api",
        "subject:john-doe",
        "job:batch-123",
        "tag:env=prod",
        "tag:feature=search",
        # The service's copy of its end users and jobs (what service:image-api/job:* templates read).
        "service:image-api/subject:john-doe",
        "service:image-api/job:batch-123",
    }
    # ... and the team's copy of each (core.scopes): team:ml is the team's whole spend.
    assert scopes == {"global", f"team:{team.name}", *own, *(f"team:{team.name}/{scope}" for scope in own)}
    assert all(row.amount == Decimal("0.0025") for row in SpendRollup.objects.all())


def test_spend_in_a_window_is_read_from_the_hourly_rollups(gpt4o_prices):
    with time_machine.travel(NOW, tick=False):
        for hours_ago in (0, 1, 5):
            cost_entry_record(
                provider="openai", model="gpt-4o", input_tokens=1000, occurred_at=NOW - timedelta(hours=hours_ago)
            )

    assert SpendRollup.objects.filter(scope="global").count() == 3
    assert spend_total(scope="global", start=NOW - timedelta(hours=2), end=NOW + timedelta(hours=1)) == Decimal("0.005")


def test_a_batch_keeps_valid_events_and_reports_the_others(gpt4o_prices):
    results = cost_entry_record_many(
        [
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "idempotency_key": "a"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "idempotency_key": "a"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": -5, "idempotency_key": "b"},
            {"provider": "opneai", "model": "gpt-4o", "input_tokens": 5, "idempotency_key": "c"},
            "not an object",
        ]
    )

    assert [r.status for r in results] == ["accepted", "duplicate", "rejected", "rejected", "rejected"]
    assert results[2].errors == {"input_tokens": ["must be a non-negative integer, got -5"]}
    assert "provider" in results[3].errors
    assert CostEntry.objects.count() == 1
    assert rollup("global").amount == Decimal("0.0025")


def test_an_event_costing_more_than_an_entry_holds_is_rejected_alone_and_the_batch_goes_in(gpt4o_prices):
    results = cost_entry_record_many(
        [
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 2**62, "idempotency_key": "huge"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "idempotency_key": "fine"},
        ]
    )

    assert [r.status for r in results] == ["rejected", "accepted"]
    assert "input_tokens" in results[0].errors
    assert list(CostEntry.objects.values_list("idempotency_key", flat=True)) == ["fine"]
    assert rollup("global").amount == Decimal("0.0025")


def test_entries_built_for_a_batch_hold_what_the_model_would_and_save_like_any_other(gpt4o_prices):
    team = TeamFactory(name="ml")
    [result] = cost_entry_record_many(
        [{"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "team": "ml", "idempotency_key": "t"}]
    )
    entry = result.entry
    stored = CostEntry.objects.get(pk=entry.pk)

    for field in CostEntry._meta.concrete_fields:
        assert getattr(entry, field.attname) == getattr(stored, field.attname), field.name
    assert entry.team == team  # the relation cache: no query
    assert entry.tags == {} and entry.tags is not CostEntry(amount=0).tags


def test_a_batch_sent_twice_is_counted_once(gpt4o_prices):
    batch = [
        {"provider": "openai", "model": "gpt-4o", "input_tokens": i, "idempotency_key": f"k{i}"} for i in range(1, 51)
    ]
    first = cost_entry_record_many(batch)
    second = cost_entry_record_many(batch)

    assert {r.status for r in first} == {"accepted"}
    assert {r.status for r in second} == {"duplicate"}
    assert rollup("global").events == 50
    assert ledger_differences()[0] == []


def test_a_batch_of_keys_recorded_before_and_new_ones_records_only_the_new_ones(gpt4o_prices):
    first = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1000, idempotency_key="old").entry
    results = cost_entry_record_many(
        [
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 2000, "idempotency_key": "new-1"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "idempotency_key": "old"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 3000, "idempotency_key": "new-2"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 2000, "idempotency_key": "new-1"},
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 4000, "idempotency_key": "new-1"},
        ]
    )

    assert [r.status for r in results] == ["accepted", "duplicate", "accepted", "duplicate", "rejected"]
    assert results[4].code == "idempotency_conflict" and "input_tokens" in results[4].errors["idempotency_key"][0]
    assert results[1].entry.pk == first.pk and results[1].entry.amount == Decimal("0.0025")
    assert results[3].entry is results[0].entry
    assert sorted(CostEntry.objects.values_list("idempotency_key", flat=True)) == ["new-1", "new-2", "old"]
    assert rollup("global").events == 3
    assert rollup("global").amount == Decimal("0.015")
    assert ledger_differences()[0] == []


def test_one_event_is_recorded_as_a_batch_of_one_would_be(gpt4o_prices):
    team = TeamFactory(name="ml")
    event = {
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 20,
        "service": "crm",
        "team": "ml",
        "tags": {"env": "prod"},
        "duration_ms": 300,
        "occurred_at": EPOCH,
    }
    one = cost_entry_record(idempotency_key="one", **event).entry
    [item] = cost_entry_record_many([{**event, "idempotency_key": "batch"}])

    fields = [f.attname for f in CostEntry._meta.concrete_fields if f.attname not in ("id", "idempotency_key")]
    stored = CostEntry.objects.get(pk=one.pk)
    assert [getattr(one, name) for name in fields if name != "recorded_at"] == [
        getattr(item.entry, name) for name in fields if name != "recorded_at"
    ]
    assert [getattr(one, name) for name in fields] == [getattr(stored, name) for name in fields]
    assert one.team == team and SpendRollup.objects.get(scope="team:ml").events == 2


@pytest.mark.parametrize("size", [1, 40, 400])
def test_recording_takes_a_few_queries_whatever_the_batch_size(gpt4o_prices, django_assert_max_num_queries, size):
    TeamFactory(name="ml")
    events = [
        {"provider": "openai", "model": "gpt-4o", "input_tokens": i, "subject": f"u{i}", "team": "ml"}
        for i in range(size)
    ]
    events.append({"provider": "acme", "model": "m", "input_tokens": 1})  # an unknown provider: one more query

    # No query per event: team, prices, unknown providers, the ledger insert, the hourly, daily and
    # series upserts and the transaction's begin and end, plus a statement per chunk of rows where
    # the database limits a statement's parameters (SQLite; a team's entry also writes its team's
    # copy of each scope, twice the rollup rows).
    with django_assert_max_num_queries(10 + size // 7):
        results = cost_entry_record_many(events)

    assert [r.status for r in results].count("accepted") == size
    assert results[-1].status == "rejected"


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        ({"provider": "opneai"}, "provider", "unknown provider 'opneai'"),
        ({"provider": ""}, "provider", "is required"),
        ({"input_tokens": -1}, "input_tokens", "non-negative integer"),
        ({"input_tokens": 1.5}, "input_tokens", "non-negative integer"),
        ({"input_tokens": float("inf")}, "input_tokens", "finite"),
        ({"seconds": "-2"}, "seconds", "must not be negative"),
        ({"seconds": "NaN"}, "seconds", "finite"),
        ({"seconds": "Infinity"}, "seconds", "finite"),
        ({"seconds": 2.5}, "seconds", "not float"),
        ({"amount": "0.0000000001"}, "amount", "more than 9 decimal places"),
        ({"amount": "-1"}, "amount", "must not be negative"),
        ({"amount": "lots"}, "amount", "is not a number"),
        ({"amount": "1", "currency": "XYZ"}, "currency", "unknown currency"),
        ({"occurred_at": "2026-11-23T12:36:00+00:00"}, "occurred_at", "in the future"),
        ({"occurred_at": "2026-11-23T12:00:00"}, "occurred_at", "time zone"),
        ({"occurred_at": "yesterday"}, "occurred_at", "ISO-8601"),
        ({"team": "nobody"}, "team", "unknown team"),
        ({"tags": {"a=b": "c"}}, "tags", "without '='"),
        ({"outcome": "exploded"}, "outcome", "not one of"),
        ({"subject": "x" * 201}, "subject", "longer than 200"),
        ({"colour": "red"}, "colour", "not a known field"),
        ({"service_tier": "x" * 21}, "service_tier", "longer than 20"),
        ({"service_tier": 1}, "service_tier", "must be a string"),
        ({"cache_write_1h_tokens": -1}, "cache_write_1h_tokens", "non-negative integer"),
        ({"input_audio_tokens": "12"}, "input_audio_tokens", "non-negative integer"),
        ({"input_audio_seconds": "0.0000001"}, "input_audio_seconds", "more than 6 decimal places"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(gpt4o_prices, event, field, message):
    raw = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10} | event

    with time_machine.travel(NOW, tick=False), pytest.raises(ValidationError) as excinfo:
        cost_entry_record(**raw)

    assert field in excinfo.value.message_dict
    assert message in " ".join(excinfo.value.message_dict[field])
    assert CostEntry.objects.count() == 0
    assert SpendRollup.objects.count() == 0


def test_a_timestamp_up_to_five_minutes_ahead_is_accepted_as_clock_skew(gpt4o_prices):
    with time_machine.travel(NOW, tick=False):
        entry = cost_entry_record(provider="openai", model="gpt-4o", occurred_at=NOW + timedelta(minutes=5)).entry

    assert entry.occurred_at == NOW + timedelta(minutes=5)


def test_old_events_are_priced_from_the_catalog_epoch(gpt4o_prices):
    entry = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1000, occurred_at=EPOCH).entry

    assert entry.amount == Decimal("0.0025")


def test_a_price_change_made_behind_the_record_paths_back_is_used_by_the_next_event():
    """Prices are read for every batch: a change made by any process is used by the very next event."""
    change = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    old = PriceFactory(provider="acme", model="m", unit="input_token", unit_price="0.000002")
    with time_machine.travel(NOW, tick=False):
        first = cost_entry_record(provider="acme", model="m", input_tokens=1_000_000).entry
        # As another process or a SQL console would: no service, no signal, no cache invalidation call.
        type(old).objects.filter(pk=old.pk).update(valid_until=change)
        PriceFactory(provider="acme", model="m", unit="input_token", unit_price="0.000003", valid_from=change)
        second = cost_entry_record(provider="acme", model="m", input_tokens=1_000_000).entry

    assert (first.amount, second.amount) == (Decimal(2), Decimal(3))
    assert ledger_differences()[0] == []


@pytest.mark.django_db
def test_a_call_without_usage_is_recorded_as_unpriced_never_as_a_silent_zero(gpt4o_prices):
    result = cost_entry_record(
        provider="openai", model="gpt-4o", usage_unavailable=True, idempotency_key="stream-without-usage"
    )
    entry = result.entry
    assert (entry.amount, entry.pricing_status) == (Decimal(0), "unpriced")
    assert entry.note.startswith("usage unavailable")
    assert SpendRollup.objects.get(scope="global").unpriced == 1
    with pytest.raises(ValidationError) as excinfo:
        cost_entry_record(provider="openai", model="gpt-4o", usage_unavailable=True, input_tokens=5)
    assert "usage_unavailable" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        cost_entry_record(provider="openai", model="gpt-4o", usage_unavailable="yes")
    assert "usage_unavailable" in excinfo.value.message_dict


@pytest.mark.parametrize(
    ("said", "stored"), [("priority", "priority"), (" Flex ", "flex"), ("default", ""), ("standard", ""), (None, "")]
)
def test_the_service_tier_is_stored_as_the_provider_said_it_with_its_standard_tier_as_empty(gpt4o_prices, said, stored):
    entry = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=10, service_tier=said).entry

    entry.refresh_from_db()
    assert entry.service_tier == stored


def test_the_new_quantities_are_stored_on_the_entry_as_given(gpt4o_prices):
    entry = cost_entry_record(
        provider="openai",
        model="gpt-4o",
        cache_write_1h_tokens=10,
        input_audio_tokens=20,
        output_audio_tokens=30,
        input_image_tokens=40,
        output_image_tokens=50,
        web_searches=2,
        input_audio_seconds="1.25",
    ).entry

    entry.refresh_from_db()
    assert (entry.cache_write_1h_tokens, entry.input_audio_tokens, entry.output_audio_tokens) == (10, 20, 30)
    assert (entry.input_image_tokens, entry.output_image_tokens, entry.web_searches) == (40, 50, 2)
    assert entry.input_audio_seconds == Decimal("1.25")
    assert entry.pricing_status == PricingStatus.UNPRICED  # gpt-4o's prices here have none of those units
