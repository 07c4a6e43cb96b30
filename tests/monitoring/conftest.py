from __future__ import annotations

import pytest

from monitoring import metrics


@pytest.fixture(autouse=True)
def fresh_collector(settings):
    """Every test reads the database afresh: no collection or GPU count kept from another test."""
    settings.METRICS_CACHE_SECONDS = 0
    settings.METRICS_BEARER_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []
    metrics.COLLECTOR.clear()
    saved = metrics.GPU_IDLE
    metrics.GPU_IDLE = metrics.GpuIdle()
    yield
    metrics.COLLECTOR.clear()
    metrics.GPU_IDLE = saved
