"""A real Prometheus (Debian's `prometheus` binary) scrapes the app's /metrics on 127.0.0.1, and what it
stores equals the ledger: the proof that the exposition, the protection and the counters work end to end."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db.models import Sum

from tracking.models import CostEntry
from tracking.services import cost_entry_record

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the prometheus binary is not installed (Debian: apt-get install prometheus; CI installs it)",
    ),
]
DEADLINE_SECONDS = 40
TOKEN = "integration-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(live_server, tmp_path: Path, settings) -> Iterator[str]:
    """Prometheus on 127.0.0.1:<free port>, scraping the live server every second with a bearer token;
    stopped (and its data deleted with tmp_path) whatever the test does."""
    settings.METRICS_BEARER_TOKEN = TOKEN
    (tmp_path / "token").write_text(TOKEN)
    target = live_server.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "costcontrol",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(f"{url}/-/ready") is not None, what="Prometheus to be ready", log=tmp_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def http_get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - 127.0.0.1 only
            return response.read()
    except OSError:
        return None


def query(base: str, promql: str) -> list[dict[str, Any]]:
    body = http_get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    if body is None:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def wait_for(condition: Any, *, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.25)
    details = (log / "prometheus.log").read_text()[-3000:] if log else ""
    pytest.fail(f"timed out after {DEADLINE_SECONDS} s waiting for {what}\n{details}")


def ledger_by_series() -> dict[tuple[str, str, str, str], Decimal]:
    rows = CostEntry.objects.filter(currency="USD").values("provider", "service", "operation", "model")
    return {
        (r["provider"], r["service"], r["operation"], r["model"]): r["total"]
        for r in rows.annotate(total=Sum("amount")).order_by()
    }


def stored_by_series(base: str) -> dict[tuple[str, str, str, str], Decimal]:
    return {
        (s["metric"]["provider"], s["metric"]["service"], s["metric"]["operation"], s["metric"]["model"]): Decimal(
            s["value"][1]
        )
        for s in query(base, "costcontrol_cost_dollars_total")
    }


def test_prometheus_stores_what_the_ledger_holds(prometheus, gpt4o_prices):
    for i in range(7):
        cost_entry_record(
            provider="openai",
            model="gpt-4o",
            service=["api", "batch"][i % 2],
            subject=f"user-{i}",
            input_tokens=1234 * (i + 1),
            output_tokens=321 * i,
            duration_ms=100 * i,
        )

    up = wait_for(lambda: query(prometheus, 'up{job="costcontrol"} == 1'), what="a successful scrape (up == 1)")
    assert up[0]["value"][1] == "1"
    stored = wait_for(
        lambda: (s := stored_by_series(prometheus)) == ledger_by_series() and s,
        what="costcontrol_cost_dollars_total to equal the ledger",
    )
    assert set(stored) == {("openai", "api", "chat", "gpt-4o"), ("openai", "batch", "chat", "gpt-4o")}
    ledger_total = CostEntry.objects.aggregate(t=Sum("amount"))["t"]
    assert sum(stored.values()) == ledger_total  # Decimal-exact, after parsing Prometheus' answer

    # A later event (any process: it goes through the database) reaches Prometheus too.
    cost_entry_record(provider="openai", model="gpt-4o", service="api", input_tokens=40_000)
    wait_for(lambda: stored_by_series(prometheus) == ledger_by_series(), what="the new event to be scraped")
    total = query(prometheus, "sum(costcontrol_cost_dollars_total)")[0]["value"][1]
    assert Decimal(total).quantize(Decimal("1E-9")) == CostEntry.objects.aggregate(t=Sum("amount"))["t"]
    requests = query(prometheus, 'sum(costcontrol_requests_total{provider="openai"})')[0]["value"][1]
    assert requests == "8"


def test_prometheus_without_the_token_is_refused(prometheus, live_server, settings):
    settings.METRICS_BEARER_TOKEN = "another-token"  # the scraper's token is now wrong

    down = wait_for(lambda: query(prometheus, 'up{job="costcontrol"} == 0'), what="a refused scrape (up == 0)")
    assert down[0]["value"][1] == "0"
    assert http_get(f"{live_server.url}/metrics") is None  # 401 without a token
