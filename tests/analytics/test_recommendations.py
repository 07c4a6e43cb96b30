"""Every saving equals a direct recomputation from the catalog's unit prices and the recorded usage."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine

from analytics.recommendations import savings_recommendations
from budgets.models import Budget
from tests.analytics.conftest import HOUR, T0
from tests.factories import PriceFactory
from tracking.gpu import GpuReading, gpu_sample_record
from tracking.services import cost_entry_record_many

pytestmark = pytest.mark.django_db

EPOCH = T0 - timedelta(days=400)
PRICES = {
    # provider, model, operation: unit -> price (USD per unit)
    ("openai", "gpt-4o", "chat"): {
        "input_token": "0.0000025",
        "output_token": "0.00001",
        "cached_input_token": "0.00000125",
    },
    ("openai", "gpt-4o-mini", "chat"): {"input_token": "0.00000015", "output_token": "0.0000006"},
    ("openai", "gpt-4.1", "chat"): {"input_token": "0.000002", "output_token": "0.000008"},
    # Cheaper, but never proposed: a dated snapshot, a fine-tune, a free preview, another mode.
    ("openai", "gpt-4o-mini-2024-07-18", "chat"): {"input_token": "0.00000001", "output_token": "0.00000001"},
    ("openai", "ft:gpt-4o-mini:acme", "chat"): {"input_token": "0.00000001", "output_token": "0.00000001"},
    ("openai", "gpt-preview", "chat"): {"input_token": "0", "output_token": "0"},
    ("openai", "text-embedding-3-small", "embedding"): {"input_token": "0.00000002"},
    ("gpu", "TestGPU", ""): {"gpu_hour": "2.00"},
}


@pytest.fixture
def prices(db):
    for (provider, model, operation), units in PRICES.items():
        for unit, price in units.items():
            PriceFactory(
                provider=provider,
                model=model,
                operation=operation,
                unit=unit,
                unit_price=Decimal(price),
                valid_from=EPOCH,
            )


def record(events):
    with time_machine.travel(T0, tick=False):
        results = cost_entry_record_many(events)
    assert all(r.status == "accepted" for r in results), [r.errors for r in results if r.errors]


def usage(n, *, model, day_offset=1, **fields):
    return [
        {
            "provider": "openai",
            "model": model,
            "operation": "chat",
            "service": "app",
            "subject": f"user-{i % 3}",
            "occurred_at": T0 - timedelta(days=day_offset, hours=i % 20),
            "idempotency_key": f"{model}:{day_offset}:{i}",
            **fields,
        }
        for i in range(n)
    ]


def by_kind(recommendations, kind, scope=None):
    return [r for r in recommendations if r.kind == kind and (scope is None or r.scope == scope)]


def price(model, unit):
    for (_, m, _), units in PRICES.items():
        if m == model:
            return Decimal(units[unit])
    raise KeyError(model)


def test_a_cheaper_model_saves_what_the_same_tokens_cost_less_there(prices):
    record(usage(200, model="gpt-4o", input_tokens=3000, output_tokens=1200, cached_input_tokens=500))

    rec = by_kind(savings_recommendations(at=T0), "cheaper_model", "model:gpt-4o")[0]

    tokens_in, tokens_out, cached = 200 * 3000, 200 * 1200, 200 * 500
    now = (
        tokens_in * price("gpt-4o", "input_token")
        + tokens_out * price("gpt-4o", "output_token")
        + cached * price("gpt-4o", "cached_input_token")
    )
    # gpt-4o-mini has no cache-read price: cached input is billed as input, as the record path does.
    there = (tokens_in + cached) * price("gpt-4o-mini", "input_token") + tokens_out * price(
        "gpt-4o-mini", "output_token"
    )
    assert rec.data["alternative"] == "gpt-4o-mini"
    assert rec.monthly_saving == (now - there).quantize(Decimal("1E-9"))
    assert rec.data["current_cost"] == now.quantize(Decimal("1E-9"))
    assert rec.provider == "openai"


def test_savings_over_a_shorter_window_are_scaled_to_a_30_day_month(prices):
    record(usage(100, model="gpt-4o", input_tokens=1000, output_tokens=1000))

    seven = by_kind(savings_recommendations(at=T0, days=7), "cheaper_model")[0]
    thirty = by_kind(savings_recommendations(at=T0, days=30), "cheaper_model")[0]

    assert seven.monthly_saving == (thirty.monthly_saving * 30 / 7).quantize(Decimal("1E-9"))


def test_heavy_uncached_input_gets_a_prompt_caching_saving(prices):
    record(usage(100, model="gpt-4o", input_tokens=20_000, output_tokens=300))

    rec = by_kind(savings_recommendations(at=T0), "cached_input", "model:gpt-4o")[0]

    cacheable = 100 * 20_000 // 2
    assert rec.data["cacheable_tokens"] == cacheable
    assert rec.monthly_saving == cacheable * (price("gpt-4o", "input_token") - price("gpt-4o", "cached_input_token"))


def test_failed_calls_are_estimated_at_the_models_mean_cost_per_call(prices):
    record(
        usage(90, model="gpt-4o", input_tokens=30_000, output_tokens=10_000)
        + usage(10, model="gpt-4o", day_offset=2, input_tokens=30_000, outcome="error")
    )

    rec = by_kind(savings_recommendations(at=T0), "failed_calls", "model:gpt-4o")[0]

    total = 90 * (30_000 * price("gpt-4o", "input_token") + 10_000 * price("gpt-4o", "output_token")) + 10 * (
        30_000 * price("gpt-4o", "input_token")
    )
    assert rec.data["failed"] == 10 and rec.data["events"] == 100
    assert rec.monthly_saving == (total * 10 / 100).quantize(Decimal("1E-9"))


def test_idle_gpu_hours_in_burst_mode_are_a_saving(prices):
    reading = dict(index=0, uuid="GPU-1", name="TestGPU", memory_used=1, memory_total=2, power_watts=None)
    for i in range(48):  # hourly samples at 10 % utilisation
        gpu_sample_record(
            reading=GpuReading(utilisation_percent=10, **reading),
            sampled_at=T0 - 48 * HOUR + i * HOUR,
            interval_seconds=3600,
            burst=True,
        )

    rec = by_kind(savings_recommendations(at=T0), "idle_gpu")[0]

    # 47 billed hours (the first sample bills nothing), 90 % idle, 2.00 USD per GPU-hour.
    assert rec.data["idle_gpu_hours"] == Decimal("42.3")
    assert rec.monthly_saving == Decimal("42.3") * 2


def test_a_budget_always_far_under_gets_a_smaller_amount(prices):
    budget = Budget.objects.create(name="app weekly", scope="service:app", amount=Decimal(1000), period="weekly")
    for week in range(1, 6):
        record(usage(10, model="gpt-4o", day_offset=7 * week, input_tokens=10_000, output_tokens=1_000))

    rec = by_kind(savings_recommendations(at=T0), "budget_amount", "service:app")[0]

    weekly = 10 * (10_000 * price("gpt-4o", "input_token") + 1_000 * price("gpt-4o", "output_token"))  # 0.35 USD
    assert rec.data["budget_id"] == budget.pk and rec.data["way"] == "under"
    assert rec.data["suggested_amount"] == Decimal("0.44")  # 0.35 x 1.25 = 0.4375, up to 2 figures
    assert rec.monthly_saving is None
    assert weekly == Decimal("0.35")


def test_no_recommendation_without_usage(prices):
    assert savings_recommendations(at=T0) == []
