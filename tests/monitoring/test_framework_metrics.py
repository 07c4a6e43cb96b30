"""django-prometheus's framework metrics: model operations on Budget and Batch, the cache."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache
from prometheus_client import REGISTRY

from tests.factories import BudgetFactory
from tracking.batches import batch_start

pytestmark = pytest.mark.django_db


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_budget_and_batch_inserts_are_counted_and_the_cache_is_instrumented():
    budgets = sample("django_model_inserts_total", model="budget")
    batches = sample("django_model_inserts_total", model="batch")
    BudgetFactory(amount=Decimal("5"))
    batch_start(name="metrics")
    assert sample("django_model_inserts_total", model="budget") == budgets + 1
    assert sample("django_model_inserts_total", model="batch") == batches + 1
    gets = sample("django_cache_get_total", backend="locmem")
    cache.get("nothing-here")
    assert sample("django_cache_get_total", backend="locmem") == gets + 1
