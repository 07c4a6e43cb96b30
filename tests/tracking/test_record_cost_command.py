"""`manage.py record_cost`: one event from the command line."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tracking.events import QUANTITY_FIELDS
from tracking.models import DECIMAL_QUANTITY_FIELDS, CostEntry, SpendRollup

pytestmark = pytest.mark.django_db


def record(*args: str) -> str:
    out = StringIO()
    call_command("record_cost", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_prints_the_issues_example_as_json_with_a_decimal_string_amount(gpt4o_prices):
    printed = json.loads(
        record(
            "--provider", "openai", "--model", "gpt-4o", "--input-tokens", "1000", "--output-tokens", "500", "--json"
        )
    )

    assert printed["amount"] == "0.0075"
    assert printed["currency"] == "USD"
    assert printed["created"] is True
    assert printed["quantities"] == {"input_tokens": 1000, "output_tokens": 500}


def test_it_prints_a_readable_line_and_records_tags_and_dimensions(gpt4o_prices):
    line = record(
        "--provider",
        "openai",
        "--model",
        "gpt-4o",
        "--input-tokens",
        "1000",
        "--service",
        "api",
        "--subject",
        "u1",
        "--tag",
        "env=prod",
        "--tag",
        "team=ml",
        "--at",
        "2026-01-05T10:00:00+00:00",
    )

    assert "openai/gpt-4o chat, 0.0025 USD" in line
    entry = CostEntry.objects.get()
    assert entry.tags == {"env": "prod", "team": "ml"}
    assert SpendRollup.objects.filter(scope="tag:team=ml").exists()


def test_the_same_idempotency_key_twice_is_reported_and_not_counted_again(gpt4o_prices):
    args = ("--provider", "openai", "--model", "gpt-4o", "--input-tokens", "10", "--idempotency-key", "job-7-call-3")
    record(*args)
    second = record(*args)

    assert "Already recorded" in second
    assert CostEntry.objects.count() == 1


def test_an_explicit_amount_is_recorded_as_given(gpt4o_prices):
    printed = json.loads(record("--provider", "openai", "--model", "gpt-4o", "--amount", "12.5", "--actual", "--json"))

    assert printed["amount"] == "12.5"
    assert printed["pricing_status"] == "explicit"
    assert printed["is_estimate"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--provider", "nope", "--model", "gpt-4o"), "provider: unknown provider 'nope'"),
        (
            ("--provider", "openai", "--model", "gpt-4o", "--input-tokens", "-3"),
            "input_tokens: must be a non-negative integer",
        ),
        (("--provider", "openai", "--model", "gpt-4o", "--seconds", "inf"), "seconds: must be finite"),
        (
            ("--provider", "openai", "--model", "gpt-4o", "--amount", "0.1234567891"),
            "amount: 0.1234567891 has more than 9 decimal places",
        ),
        (("--provider", "openai", "--model", "gpt-4o", "--at", "2999-01-01T00:00:00+00:00"), "occurred_at:"),
        (("--provider", "openai", "--model", "gpt-4o", "--at", "soon"), "at: 'soon' is not an ISO-8601 timestamp"),
        (("--provider", "openai", "--model", "gpt-4o", "--tag", "novalue"), "tag: 'novalue' is not KEY=VALUE"),
        (
            ("--provider", "openai", "--model", "gpt-4o", "--amount", "1", "--currency", "ABC"),
            "currency: unknown currency",
        ),
    ],
)
def test_bad_input_fails_with_one_line_naming_the_field_and_writes_nothing(gpt4o_prices, args, message):
    with pytest.raises(CommandError) as excinfo:
        record(*args)

    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    assert CostEntry.objects.count() == 0


def test_an_unpriced_event_warns_on_stderr(gpt4o_prices):
    err = StringIO()
    call_command(
        "record_cost",
        "--provider",
        "openai",
        "--model",
        "gpt-unknown",
        "--input-tokens",
        "5",
        stdout=StringIO(),
        stderr=err,
    )

    assert "stored with amount 0 and counted as unpriced" in err.getvalue()


def test_it_records_the_service_tier_and_the_audio_image_and_1_hour_cache_quantities(gpt4o_prices):
    printed = json.loads(
        record(
            "--provider", "openai", "--model", "gpt-4o", "--service-tier", "priority",
            "--input-tokens", "100", "--cache-write-1h-tokens", "10",
            "--input-audio-tokens", "20", "--output-audio-tokens", "30", "--cached-audio-tokens", "5",
            "--input-image-tokens", "40", "--output-image-tokens", "50",
            "--web-searches", "2", "--input-audio-seconds", "1.5", "--json",
        )
    )  # fmt: skip

    assert printed["service_tier"] == "priority"
    assert printed["quantities"] == {
        "input_tokens": 100,
        "cache_write_1h_tokens": 10,
        "input_audio_tokens": 20,
        "output_audio_tokens": 30,
        "cached_audio_tokens": 5,
        "input_image_tokens": 40,
        "output_image_tokens": 50,
        "web_searches": 2,
        "input_audio_seconds": "1.5",
    }
    assert CostEntry.objects.get().service_tier == "priority"


def test_the_default_service_tier_is_the_standard_tier(gpt4o_prices):
    printed = json.loads(
        record(
            "--provider", "openai", "--model", "gpt-4o", "--input-tokens", "1000", "--service-tier", "default", "--json"
        )
    )

    assert printed["service_tier"] == ""
    assert printed["amount"] == "0.0025"


def test_a_service_tier_that_is_not_one_of_the_tiers_is_refused_and_writes_nothing(gpt4o_prices):
    with pytest.raises(CommandError) as excinfo:
        record("--provider", "openai", "--model", "gpt-4o", "--input-tokens", "1", "--service-tier", "turbo")

    assert "--service-tier: invalid choice: 'turbo'" in str(excinfo.value)
    assert CostEntry.objects.count() == 0


def test_every_ledger_quantity_has_an_option(gpt4o_prices):
    values = {name: ("2.5" if name in DECIMAL_QUANTITY_FIELDS else "3") for name in QUANTITY_FIELDS}
    args = [arg for name, value in values.items() for arg in (f"--{name.replace('_', '-')}", value)]

    printed = json.loads(record("--provider", "openai", "--model", "gpt-4o", *args, "--json"))

    assert printed["quantities"] == {name: int(v) if v == "3" else v for name, v in values.items()}


def test_an_unpriced_event_names_the_unit_without_a_price(gpt4o_prices):
    err = StringIO()
    call_command(
        "record_cost", "--provider", "openai", "--model", "gpt-4o", "--input-audio-tokens", "5",
        stdout=StringIO(), stderr=err,
    )  # fmt: skip

    assert "audio" in err.getvalue()
    assert "stored with amount 0 and counted as unpriced" in err.getvalue()
