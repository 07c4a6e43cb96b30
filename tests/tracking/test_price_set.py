"""Setting one price: a new version closes the one in force; the same price changes nothing; bad input is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError

from tests.conftest import EPOCH
from tests.factories import PriceFactory
from tracking.catalog import price_set
from tracking.models import Price
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

CHANGE = datetime(2026, 6, 1, tzinfo=UTC)


def gpt_4o_input(**overrides) -> Price:
    arguments = {
        "provider": "openai",
        "model": "gpt-4o",
        "operation": "chat",
        "unit": "input_token",
        "unit_price": Decimal("0.0000025"),
        "valid_from": EPOCH,
        "source": "test",
    }
    return price_set(**{**arguments, **overrides})


def versions() -> list[tuple]:
    return list(Price.objects.order_by("valid_from").values_list("unit_price", "valid_from", "valid_until"))


def test_the_first_price_of_a_key_is_in_force_from_its_valid_from():
    price = gpt_4o_input(provider="OpenAI")

    assert (price.provider, price.unit_price, price.currency) == ("openai", Decimal("0.0000025"), "USD")
    assert (price.valid_from, price.valid_until) == (EPOCH, None)


def test_the_same_price_again_returns_the_version_in_force_unchanged():
    first = gpt_4o_input()

    again = gpt_4o_input(unit_price="0.00000250", valid_from=CHANGE)

    assert again.pk == first.pk
    assert versions() == [(Decimal("0.0000025"), EPOCH, None)]


def test_a_new_price_closes_the_version_in_force_and_events_are_priced_at_their_own_time():
    gpt_4o_input()

    new = gpt_4o_input(unit_price="0.000001", valid_from=CHANGE)

    assert versions() == [(Decimal("0.0000025"), EPOCH, CHANGE), (Decimal("0.000001"), CHANGE, None)]
    assert new.valid_until is None
    with time_machine.travel(CHANGE + timedelta(hours=1), tick=False):
        before = cost_entry_record(
            provider="openai", model="gpt-4o", input_tokens=1_000_000, occurred_at=CHANGE - timedelta(seconds=1)
        )
        at = cost_entry_record(provider="openai", model="gpt-4o", input_tokens=1_000_000, occurred_at=CHANGE)
    assert (before.entry.amount, at.entry.amount) == (Decimal("2.5"), Decimal(1))


def test_a_new_currency_at_the_same_amount_is_a_new_version():
    gpt_4o_input()

    euro = gpt_4o_input(currency="eur", valid_from=CHANGE)

    assert (euro.currency, euro.valid_from) == ("EUR", CHANGE)
    assert Price.objects.count() == 2


@pytest.mark.parametrize("valid_from", [EPOCH, EPOCH - timedelta(days=1)])
def test_a_new_price_may_not_start_at_or_before_the_version_in_force(valid_from):
    gpt_4o_input()

    with pytest.raises(ValidationError) as excinfo:
        gpt_4o_input(unit_price="0.000001", valid_from=valid_from)

    assert "must be later than 2020-01-01T00:00:00+00:00" in excinfo.value.message_dict["valid_from"][0]
    assert versions() == [(Decimal("0.0000025"), EPOCH, None)]


def test_a_new_price_may_not_start_inside_a_closed_version():
    PriceFactory(provider="openai", model="gpt-4o", unit="input_token", valid_until=CHANGE)

    with pytest.raises(ValidationError) as excinfo:
        gpt_4o_input(valid_from=CHANGE - timedelta(days=1))

    assert "valid_from" in excinfo.value.message_dict
    assert Price.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"unit_price": "-0.000001"}, "unit_price", "must not be negative"),
        ({"unit_price": "abc"}, "unit_price", "'abc' is not a number"),
        ({"unit_price": "NaN"}, "unit_price", "must be finite"),
        ({"unit_price": 0.1}, "unit_price", "not float"),
        ({"unit_price": "0.0000000000000001"}, "unit_price", "more than 15 decimal places"),
        ({"unit_price": "1000000000"}, "unit_price", "out of range"),
        ({"unit": "token"}, "unit", "unknown unit 'token'"),
        ({"currency": "XYZ"}, "currency", "unknown currency 'XYZ'"),
        ({"provider": ""}, "provider", "is required"),
        ({"model": "m" * 201}, "model", "longer than 200"),
        ({"valid_from": datetime(2026, 1, 1)}, "valid_from", "time zone"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(overrides, field, message):
    existing = gpt_4o_input()

    with pytest.raises(ValidationError) as excinfo:
        gpt_4o_input(**{"valid_from": CHANGE, **overrides})

    assert message in " ".join(excinfo.value.message_dict[field])
    assert list(Price.objects.values_list("pk", "valid_until")) == [(existing.pk, None)]


def test_a_zero_price_is_a_price():
    free = gpt_4o_input(model="llama-local", provider="ollama", unit_price=0)

    assert free.unit_price == Decimal(0)
    assert cost_entry_record(provider="ollama", model="llama-local", input_tokens=5000).entry.amount == Decimal(0)


# --- price rules: service tier, context-size tier, off-peak windows -----------------------------------

WEEKDAY_NIGHTS = [{"hours_utc": ["16:30-00:30"], "weekdays": [1, 2, 3, 4, 5], "weekday_timezone": "UTC"}]


def test_a_service_tier_and_a_context_size_tier_are_keys_of_their_own_beside_the_standard_price():
    standard = gpt_4o_input()
    priority = gpt_4o_input(service_tier="priority", unit_price="0.00000425")
    long_prompt = gpt_4o_input(above_tokens=200_000, unit_price="0.000005", valid_from=CHANGE)

    assert {standard.pk, priority.pk, long_prompt.pk} == set(
        Price.objects.filter(valid_until__isnull=True).values_list("pk", flat=True)
    )
    assert (priority.service_tier, priority.above_tokens) == ("priority", 0)
    assert (long_prompt.service_tier, long_prompt.above_tokens) == ("", 200_000)


def test_a_new_priority_price_closes_the_priority_version_only():
    standard = gpt_4o_input()
    gpt_4o_input(service_tier="priority", unit_price="0.00000425")

    gpt_4o_input(service_tier="priority", unit_price="0.000005", valid_from=CHANGE)

    standard.refresh_from_db()
    assert standard.valid_until is None
    assert list(
        Price.objects.filter(service_tier="priority").order_by("valid_from").values_list("unit_price", "valid_until")
    ) == [(Decimal("0.00000425"), CHANGE), (Decimal("0.000005"), None)]


def test_off_peak_windows_are_stored_normalised_and_changed_windows_open_a_new_version():
    first = gpt_4o_input(
        service_tier="off_peak",
        off_peak_windows=[{"hours_utc": "16:30-00:30", "weekdays": ["fri", 1, 2, 3, 4]}],
        unit_price="0.000001",
    )
    same = gpt_4o_input(
        service_tier="off_peak", off_peak_windows=WEEKDAY_NIGHTS, unit_price="0.000001", valid_from=CHANGE
    )
    later = CHANGE + timedelta(days=1)
    moved = gpt_4o_input(
        service_tier="off_peak",
        off_peak_windows=[{"hours_utc": ["17:00-01:00"], "weekdays": [1, 2, 3, 4, 5]}],
        unit_price="0.000001",
        valid_from=later,
    )

    assert first.off_peak_windows == WEEKDAY_NIGHTS
    assert same.pk == first.pk
    assert moved.pk != first.pk
    first.refresh_from_db()
    assert first.valid_until == later
    assert moved.off_peak_windows[0]["hours_utc"] == ["17:00-01:00"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"service_tier": "turbo"}, "service_tier"),
        ({"above_tokens": -1}, "above_tokens"),
        ({"above_tokens": "200k"}, "above_tokens"),
        ({"service_tier": "off_peak"}, "off_peak_windows"),
        ({"off_peak_windows": WEEKDAY_NIGHTS}, "off_peak_windows"),
        ({"service_tier": "off_peak", "off_peak_windows": [{"hours_utc": "25:00-01:00"}]}, "off_peak_windows"),
        (
            {"service_tier": "off_peak", "off_peak_windows": [{"hours_utc": "00:00-01:00", "weekdays": [8]}]},
            "off_peak_windows",
        ),
    ],
)
def test_a_bad_tier_or_window_is_refused_naming_the_field_and_nothing_is_written(overrides, field):
    with pytest.raises(ValidationError) as error:
        gpt_4o_input(**overrides)

    assert field in error.value.message_dict
    assert not Price.objects.exists()
