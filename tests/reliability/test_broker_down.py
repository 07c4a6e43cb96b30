"""Broker down: Redis stopped for 30 s while usage keeps being recorded, in process and through the API.

The Celery app publishes to a real redis-server with the transport options the settings give a
Redis CELERY_BROKER_URL. Every write enqueues a budget evaluation after it commits (the debounce
is reset before each write, so each one really asks the broker): while Redis is down every write
still succeeds and none waits on the broker (kombu's defaults made each of those publishes take
~6 s). When Redis is back, a real Celery worker (embedded, consuming from Redis) runs the
evaluation, and the threshold alerts fire for the spend recorded while the broker was down.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun

import alerts.apps
from alerts.models import Alert, AlertState
from alerts.tasks import evaluate
from api.keys import api_key_issue
from budgets.models import Budget
from costcontrol.celery import app as celery_app
from tracking.models import CostEntry
from tracking.services import cost_entry_record

from .servers import RedisServer
from .web import REPO

DOWN_SECONDS = 30
AMOUNT = Decimal("0.10")
LIMIT = Decimal("5")
# Generous: a write takes milliseconds; with kombu's defaults each publish to a down broker took ~6 s.
SLOWEST_WRITE_SECONDS = 3.0


def _settings_transport_options(broker_url: str) -> dict[str, object]:
    """The broker transport options costcontrol's settings give this broker URL (a fresh interpreter)."""
    script = (
        "import json; from costcontrol.settings import base;print(json.dumps(base.CELERY_BROKER_TRANSPORT_OPTIONS))"
    )
    env = {**os.environ, "CELERY_BROKER_URL": broker_url}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def celery_on_redis(redis: RedisServer) -> Iterator[RedisServer]:
    """The in-process Celery app publishing to `redis`, configured as the settings configure it."""
    conf = celery_app.conf
    saved = (conf.broker_url, conf.broker_transport_options, conf.task_always_eager)
    conf.broker_url = redis.url
    conf.broker_transport_options = _settings_transport_options(redis.url)
    conf.task_always_eager = False
    celery_app._pool = None  # connection and producer pools are per URL: take new ones
    celery_app.amqp._producer_pool = None
    try:
        yield redis
    finally:
        if celery_app._pool is not None:
            celery_app._pool.force_close_all()
        conf.broker_url, conf.broker_transport_options, conf.task_always_eager = saved
        celery_app._pool = None
        celery_app.amqp._producer_pool = None


def test_recording_goes_on_while_the_broker_is_down_and_alerts_catch_up(
    transactional_db, client, celery_on_redis, gpt4o_prices, monkeypatch, caplog
):
    redis = celery_on_redis
    key = api_key_issue(name="broker-down", service="web", rate_limit_per_minute=10**9).plaintext
    budget = Budget.objects.create(name="Everything", scope="global", amount=LIMIT, period="none")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    durations: list[float] = []
    written = 0

    def record(n: int) -> None:
        """One write, half in process and half through the API; every one asks the broker after commit."""
        nonlocal written
        monkeypatch.setattr(alerts.apps, "_last_enqueued", 0.0)
        event = {"provider": "openai", "model": "gpt-4o", "amount": str(AMOUNT), "currency": "USD"}
        began = time.perf_counter()
        if n % 2:
            result = cost_entry_record(**event, service="batch", idempotency_key=f"in-process-{n}")
            assert result.created
        else:
            body = json.dumps({**event, "idempotency_key": f"api-{n}"})
            response = client.post("/api/v1/events", body, content_type="application/json", **headers)
            assert response.status_code == 201, response.content
        durations.append(time.perf_counter() - began)
        written += 1

    import redis as redis_py

    broker = redis_py.Redis.from_url(redis.url)
    record(0)
    assert broker.llen("celery") == 1  # the broker is really asked: the evaluation is queued in Redis
    broker.close()

    durations.clear()
    redis.stop()
    caplog.set_level(logging.WARNING, logger="alerts.apps")
    down_at = time.monotonic()
    n = 1
    while time.monotonic() - down_at < DOWN_SECONDS:
        record(n)
        n += 1
        time.sleep(0.05)
    down_writes = n - 1
    failed_publishes = [r for r in caplog.records if "could not enqueue the budget evaluation" in r.getMessage()]
    assert len(failed_publishes) == down_writes  # each write asked the broker, and went on without it
    assert max(durations) < SLOWEST_WRITE_SECONDS, sorted(durations)[-5:]
    assert CostEntry.objects.count() == written == down_writes + 1
    # Nobody evaluated while the broker was down: no alert yet, though the budget is over its limit.
    assert not Alert.objects.filter(budget=budget).exists()
    assert AMOUNT * down_writes > LIMIT

    redis.start()
    evaluated = threading.Event()

    def on_postrun(sender: Any = None, **kwargs: Any) -> None:
        if sender is not None and sender.name == "alerts.evaluate":
            evaluated.set()

    task_postrun.connect(on_postrun, weak=False)
    try:
        # As beat does every minute: enqueue the evaluation; a real worker takes it from Redis.
        evaluate.apply_async()
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            # (Not polling the database meanwhile: SQLite's shared in-memory test database locks tables.)
            assert evaluated.wait(timeout=60), "the worker did not run alerts.evaluate within 60 s"
    finally:
        task_postrun.disconnect(on_postrun)
    alert = Alert.objects.filter(budget=budget, state=AlertState.FIRING).first()
    assert alert is not None and alert.level == "exceeded", alert
    assert alert.value == AMOUNT * written  # the spend recorded while the broker was down, to the cent
    print(
        f"\nbroker down {DOWN_SECONDS} s: {down_writes} writes, all recorded; slowest {max(durations) * 1000:.0f} ms, "
        f"median {sorted(durations)[len(durations) // 2] * 1000:.1f} ms; alert '{alert.title}' after it came back"
    )
