"""/metrics keeps the model label bounded: each provider's top METRICS_MODELS_PER_PROVIDER models by spend keep
their name and the rest are summed into model="other", with every total unchanged."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import PriceFactory
from tracking.services import cost_entry_record_many

pytestmark = pytest.mark.django_db

MODEL_LABELLED = ("costcontrol_cost_dollars_total", "costcontrol_tokens_total", "costcontrol_unpriced_events_total")


def scrape(client) -> list[tuple[str, dict[str, str], float]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name in MODEL_LABELLED
    ]


def totals(samples) -> dict[tuple[str, str], float]:
    """Each model-labelled metric summed per provider (whole dollars and counts: exact in a float)."""
    summed: dict[tuple[str, str], float] = defaultdict(float)
    for name, labels, value in samples:
        summed[(name, labels["provider"])] += value
    return dict(summed)


@pytest.fixture
def invented_models(gpt4o_prices):
    """200 invented models on one provider, model-i costing i dollars, and 3 on another."""
    PriceFactory(provider="anthropic", model="claude-haiku-4-5", operation="chat", unit="input_token")
    events = [
        {
            "idempotency_key": f"inv-{i}",
            "provider": "openai",
            "model": f"invented-{i:03d}",
            "service": "svc",
            "amount": Decimal(i),
            "input_tokens": 10,
        }
        for i in range(1, 201)
    ]
    events += [
        {"idempotency_key": f"an-{i}", "provider": "anthropic", "model": m, "amount": Decimal(i), "input_tokens": 1}
        for i, m in enumerate(("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"), start=1)
    ]
    events.append(
        {"idempotency_key": "nop", "provider": "openai", "model": "invented-unpriced", "usage_unavailable": True}
    )
    results = cost_entry_record_many(events)
    assert [r.errors for r in results if r.status != "accepted"] == []


def test_200_invented_models_give_at_most_n_plus_one_model_series_per_provider(client, settings, invented_models):
    settings.METRICS_MODELS_PER_PROVIDER = 5
    samples = scrape(client)
    for name in MODEL_LABELLED:
        invented = {labels["model"] for n, labels, _ in samples if n == name and labels["provider"] == "openai"}
        assert len(invented) <= 6, (name, sorted(invented))
    cost = {lb["model"]: v for n, lb, v in samples if n == MODEL_LABELLED[0] and lb["provider"] == "openai"}
    # the five that cost most keep their names; the other 195 (1 + ... + 195 dollars) are "other"
    assert cost == {**{f"invented-{i}": float(i) for i in range(196, 201)}, "other": float(sum(range(1, 196)))}
    anthropic = {lb["model"] for n, lb, _ in samples if n == MODEL_LABELLED[0] and lb["provider"] == "anthropic"}
    assert anthropic == {"claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"}  # fewer than N: no "other"


def test_folding_leaves_every_providers_totals_unchanged(client, settings, invented_models):
    settings.METRICS_MODELS_PER_PROVIDER = 1000
    unfolded = scrape(client)
    assert len({labels["model"] for _, labels, _ in unfolded if labels["provider"] == "openai"}) == 201
    settings.METRICS_MODELS_PER_PROVIDER = 3
    folded = scrape(client)
    assert totals(folded) == totals(unfolded)
    assert totals(folded)[("costcontrol_cost_dollars_total", "openai")] == float(sum(range(1, 201)))
    assert ("costcontrol_unpriced_events_total", {"provider": "openai", "model": "other"}, 1.0) in folded


def test_the_default_keeps_twenty_models_per_provider(client, invented_models):
    samples = scrape(client)
    invented = {
        labels["model"] for n, labels, _ in samples if n == MODEL_LABELLED[0] and labels["provider"] == "openai"
    }
    assert len(invented) == 21 and "other" in invented and "invented-200" in invented
