"""Concurrent writers: 8 processes x 5,000 events, half recorded in process (tracking.services: a quarter
one by one with cost_entry_record, a quarter in batches with cost_entry_record_many) and half through
POST /api/v1/events (batches) to a real gunicorn (2 workers), all on the pytest-django test database.

Random providers/models/services/subjects/tags; about 5 % of the events reuse an idempotency key from
a pool shared by every process (so the same event arrives twice, from two processes, over either
path). While they write, a thread of the test evaluates the budgets and delivers notifications to a
webhook that answers 503 to its first requests. Afterwards, exactly (Decimal ==):
ledger total = hourly and daily rollups per scope = budget spent = the amounts the writers were
told = /metrics (the float of the exact sum); one entry per distinct key; every threshold alert of
the budget that was crossed delivered exactly once.

Also runnable as the writer itself: `python -m tests.reliability.test_concurrent_writers SPEC.json`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from .web import REPO, database_url, gunicorn, http

PROCESSES = 8
EVENTS_PER_PROCESS = int(os.environ.get("RELIABILITY_EVENTS_PER_PROCESS", "5000"))  # smaller for a quick run
CHUNK = 100  # events per chunk; a chunk goes one by one or as a batch in process, or as HTTP batches
DUPLICATE_SHARE = 0.05
DUPLICATE_POOL = 600  # keys shared by every process: each is sent ~3 times in all
ALERTING_EVERY = 100  # every 100th event of a process is an explicit-amount event of the alerting budget
ALERTING_AMOUNT = Decimal("0.26")
ALERTING_EVENTS = PROCESSES * -(-EVENTS_PER_PROCESS // ALERTING_EVERY)
ALERTING_LIMIT = ALERTING_AMOUNT * ALERTING_EVENTS * 100 / 104  # 400 x 0.26 = 104 of 100: ends above 100 %
METRICS_TOKEN = "reliability-metrics-token"
SERVICES = ["chat-api", "search", "batch", "support"]
MODELS = [
    ("openai", "gpt-4o", "chat"),
    ("openai", "gpt-4o-mini", "chat"),
    ("anthropic", "claude-3-5-sonnet-20241022", "chat"),
    ("anthropic", "claude-3-5-haiku-20241022", "chat"),
    ("openai", "text-embedding-3-small", "embedding"),
    ("openai", "o1", "chat"),
]


# --- the writer (a child process) ------------------------------------------------------------------


def _random_event(rng: random.Random, now: datetime) -> dict[str, Any]:
    provider, model, operation = rng.choice(MODELS)
    event: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "operation": operation,
        "service": rng.choice(SERVICES),
        "input_tokens": rng.randint(1, 8000),
        "output_tokens": 0 if operation == "embedding" else rng.randint(0, 1500),
        "subject": f"user-{rng.randint(1, 40)}",
        "tags": {"env": rng.choice(["prod", "staging"]), "feature": rng.choice(["chat", "rag", "summary"])},
        "occurred_at": (now - timedelta(seconds=rng.randint(0, 3000))).isoformat(),
        "outcome": rng.choice(["success"] * 20 + ["error", "rate_limited"]),
        "duration_ms": rng.randint(50, 9000),
    }
    if rng.random() < 0.1:
        event["cached_input_tokens"] = rng.randint(0, event["input_tokens"])
    if rng.random() < 0.2:
        event["job"] = f"job-{rng.randint(1, 5)}"
    return event


def writer_events(index: int, count: int, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(key, event) pairs of writer `index`: keys are unique to it except the shared duplicate pool, whose
    events are the same whichever writer sends them (a retry of one event)."""
    rng = random.Random(1000 + index)
    events = []
    for i in range(count):
        if i % ALERTING_EVERY == 0:
            key = f"alerting-{index}-{i}"
            event = {
                "provider": "openai",
                "model": "gpt-4o",
                "operation": "chat",
                "service": rng.choice(SERVICES),
                "amount": str(ALERTING_AMOUNT),
                "currency": "USD",
                "tags": {"feature": "alerting"},
                "occurred_at": now.isoformat(),
            }
        elif rng.random() < DUPLICATE_SHARE:
            shared = rng.randrange(DUPLICATE_POOL)
            key = f"dup-{shared}"
            event = _random_event(random.Random(shared), now)
        else:
            key = f"w{index}-{i}"
            event = _random_event(rng, now)
        events.append((key, event))
    return events


def _writer(spec: dict[str, Any]) -> dict[str, Any]:
    import django

    django.setup()
    from tracking.services import cost_entry_record, cost_entry_record_many

    now = datetime.fromisoformat(spec["now"])
    events = writer_events(spec["index"], spec["count"], now)
    seen: dict[str, str] = {}  # ledger key -> amount the writer was told
    counts = {"accepted": 0, "duplicate": 0}
    timings = {"inprocess": 0.0, "http": 0.0}
    sent = {"inprocess": 0, "http": 0}
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        path = (start // CHUNK + spec["index"]) % 4  # 0: one by one, 1: in-process batch, 2-3: HTTP batches
        if path < 2:
            # In process, with the ledger key the API's per-service namespacing makes of the event's key.
            raws = [{**event, "idempotency_key": f"{event['service']}/{key}"} for key, event in chunk]
            began = time.perf_counter()
            if path == 0:
                for raw in raws:
                    result = cost_entry_record(**raw)
                    counts["accepted" if result.created else "duplicate"] += 1
                    seen[raw["idempotency_key"]] = str(result.entry.amount)
            else:
                for raw, item in zip(raws, cost_entry_record_many(raws), strict=True):
                    if item.status not in counts or item.entry is None:
                        raise RuntimeError(f"event {raw['idempotency_key']} was {item}")
                    counts[item.status] += 1
                    seen[raw["idempotency_key"]] = str(item.entry.amount)
            timings["inprocess"] += time.perf_counter() - began
            sent["inprocess"] += len(chunk)
        else:
            by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for key, event in chunk:
                by_service[event["service"]].append({**event, "idempotency_key": key})
            began = time.perf_counter()
            for service, batch in by_service.items():
                headers = {"Authorization": f"Bearer {spec['keys'][service]}", "Content-Type": "application/json"}
                status, _, body = http(
                    "POST", f"{spec['url']}/api/v1/events", json.dumps({"events": batch}).encode(), headers, 120
                )
                if status != 200:
                    raise RuntimeError(f"POST /api/v1/events answered {status}: {body[:1000]!r}")
                answer = json.loads(body)
                for event, item in zip(batch, answer["results"], strict=True):
                    if item["status"] not in counts:
                        raise RuntimeError(f"event {event['idempotency_key']} was {item}")
                    counts[item["status"]] += 1
                    seen[f"{service}/{event['idempotency_key']}"] = item["amount"]
            timings["http"] += time.perf_counter() - began
            sent["http"] += len(chunk)
    return {"seen": seen, "counts": counts, "seconds": timings, "sent": sent}


# --- the test ---------------------------------------------------------------------------------------


def _ledger_scopes(entry: Any, teams: dict[int, str]) -> list[str]:
    """The scopes an entry counts towards, written out here (not tracking.rollups.entry_scopes)."""
    scopes = ["global", f"provider:{entry.provider}", f"model:{entry.model}"]
    optional = {"operation": entry.operation, "service": entry.service, "subject": entry.subject, "job": entry.job}
    scopes += [f"{kind}:{value}" for kind, value in optional.items() if value]
    if entry.service and "/" not in entry.service:  # the service's copy of its subjects and jobs
        scopes += [f"service:{entry.service}/{kind}:{optional[kind]}" for kind in ("subject", "job") if optional[kind]]
    if entry.team_id:
        scopes.append(f"team:{teams[entry.team_id]}")
    scopes += [f"tag:{k}={v}" for k, v in (entry.tags or {}).items()]
    return scopes


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = http("GET", f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, body[:500]
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class AlertPump:
    """Evaluates the budgets and delivers due notifications every second, beside the writers
    (in a thread of the test: its own database connection)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.passes = 0
        self.thread = threading.Thread(target=self._run, name="alert-pump")

    def _run(self) -> None:
        from django.db import connection

        from alerts.delivery import notifications_flush
        from alerts.evaluation import alerts_evaluate

        try:
            while not self.stop.wait(1.0):
                alerts_evaluate(budgets_only=True)
                notifications_flush()
                self.passes += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> AlertPump:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


@pytest.mark.postgres
def test_concurrent_writers_agree_to_the_cent_everywhere_and_alerts_go_out_once(transactional_db, tmp_path):
    from django.db import connection
    from django.db.models import Sum
    from django.utils import timezone

    from alerts.delivery import notifications_flush
    from alerts.evaluation import alerts_evaluate
    from alerts.models import Alert, Channel, Notification, NotificationStatus
    from alerts.transports import DELIVERY_HEADER
    from api.keys import api_key_issue
    from budgets.models import Budget
    from budgets.selectors import budget_statuses
    from core.models import Team
    from tests.alerts.servers import webhook_receiver
    from tracking.catalog import price_catalog_load_default
    from tracking.models import CostEntry, MetricSeries, SpendRollup, SpendRollupDay

    price_catalog_load_default()
    keys = {s: api_key_issue(name=f"writers-{s}", service=s, rate_limit_per_minute=10**9).plaintext for s in SERVICES}
    budget_scopes = ["global", "provider:openai", "service:search", "model:gpt-4o", "tag:env=prod", "subject:user-7"]
    budgets = [
        Budget.objects.create(name=f"writers {scope}", scope=scope, amount=Decimal(10**7), period="none")
        for scope in budget_scopes
    ]
    alerting = Budget.objects.create(
        name="writers alerting", scope="tag:feature=alerting", amount=ALERTING_LIMIT, period="none"
    )
    url = database_url(connection.settings_dict)
    now = datetime.now(UTC).replace(microsecond=0)
    log = tmp_path / "gunicorn.log"
    env = {"METRICS_BEARER_TOKEN": METRICS_TOKEN, "METRICS_CACHE_SECONDS": "0"}
    with webhook_receiver(script=[503, 503, 503]) as receiver, gunicorn(url, log, workers=2, env=env) as server:
        hook = Channel.objects.create(name="writers hook", kind="webhook", target=receiver.url, max_per_hour=0)
        alerting.channels.add(hook)
        children = []
        started = time.perf_counter()
        try:
            with AlertPump() as pump:
                for index in range(PROCESSES):
                    spec = {"index": index, "count": EVENTS_PER_PROCESS, "now": now.isoformat(), "url": server.url}
                    spec["keys"], spec["result"] = keys, str(tmp_path / f"writer-{index}.json")
                    (tmp_path / f"spec-{index}.json").write_text(json.dumps(spec))
                    children.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "tests.reliability.test_concurrent_writers", str(tmp_path / f"spec-{index}.json")],
                            cwd=REPO,
                            env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "costcontrol.settings.test"},
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                        )
                    )  # fmt: skip
                outputs = [child.communicate(timeout=600)[0].decode(errors="replace") for child in children]
            elapsed = time.perf_counter() - started
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=10)
        for child, output in zip(children, outputs, strict=True):
            assert child.returncode == 0, output[-3000:]
        assert not pump.errors, pump.errors
        results = [json.loads((tmp_path / f"writer-{i}.json").read_text()) for i in range(PROCESSES)]

        # --- one entry per distinct key; each writer was told the same amount for a key --------------
        entries = list(CostEntry.objects.all())
        ledger = {e.idempotency_key: e.amount for e in entries}
        told: dict[str, set[Decimal]] = defaultdict(set)
        for result in results:
            for key, amount in result["seen"].items():
                told[key].add(Decimal(amount))
        assert len(entries) == len(ledger) == len(told)
        assert {k: {v} for k, v in ledger.items()} == dict(told)
        sent = sum(r["counts"]["accepted"] + r["counts"]["duplicate"] for r in results)
        accepted = sum(r["counts"]["accepted"] for r in results)
        assert sent == PROCESSES * EVENTS_PER_PROCESS
        assert accepted == len(entries) < sent  # duplicates counted once
        total = sum(ledger.values(), Decimal(0))
        assert total == CostEntry.objects.aggregate(s=Sum("amount"))["s"] > 0

        # --- rollups per scope (hourly and daily) = the ledger grouped by scope -----------------------
        teams = dict(Team.objects.values_list("pk", "name"))
        by_scope: dict[str, Decimal] = defaultdict(Decimal)
        for entry in entries:
            for scope in _ledger_scopes(entry, teams):
                by_scope[scope] += entry.amount
        for model in (SpendRollup, SpendRollupDay):
            rollups = dict(model.objects.values_list("scope").annotate(s=Sum("amount")).values_list("scope", "s"))
            assert rollups == dict(by_scope), model.__name__
        assert by_scope["global"] == total

        # --- budgets --------------------------------------------------------------------------------
        at = timezone.now()
        for budget in [*budgets, alerting]:
            assert budget_statuses([budget], at=at)[0].spent == by_scope[budget.scope], budget.scope
        assert by_scope["tag:feature=alerting"] == ALERTING_AMOUNT * ALERTING_EVENTS

        # --- /metrics of the gunicorn server, and the table it reads ----------------------------------
        series: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
        for entry in entries:
            series[(entry.provider, entry.service, entry.operation, entry.model)] += entry.amount
        stored = defaultdict(Decimal)
        for row in MetricSeries.objects.values("provider", "service", "operation", "model", "amount"):
            stored[(row["provider"], row["service"], row["operation"], row["model"])] += row["amount"]
        assert dict(stored) == dict(series)
        samples = _scrape(server.url)
        exported = {
            tuple(dict(labels)[k] for k in ("provider", "service", "operation", "model")): value
            for (name, labels), value in samples.items()
            if name == "costcontrol_cost_dollars_total"
        }
        # Prometheus carries floats: the exported value is the float nearest the exact sum, per series.
        assert exported == {labels: float(amount) for labels, amount in series.items()}
        spent = {
            dict(labels)["budget"]: value
            for (name, labels), value in samples.items()
            if name == "costcontrol_budget_spent_dollars"
        }
        for budget in [*budgets, alerting]:
            assert spent[budget.name] == float(by_scope[budget.scope]), budget.name

        # --- threshold alerts: each delivered exactly once, through the 503s ---------------------------
        for step in range(1, 40):
            alerts_evaluate(budgets_only=True)
            notifications_flush(now=timezone.now() + timedelta(minutes=10 * step))
            if not Notification.objects.exclude(status=NotificationStatus.SENT).exists():
                break
        alerts = list(Alert.objects.filter(budget=alerting))
        notes = list(Notification.objects.filter(channel=hook))
        assert alerts and {a.level for a in alerts} >= {"exceeded"}
        assert all(n.status == NotificationStatus.SENT for n in notes), [(n.dedup_key, n.status) for n in notes]
        assert {n.alert_id for n in notes} == {a.pk for a in alerts}
        delivered = [r.headers[DELIVERY_HEADER] for r in receiver.delivered]
        assert sorted(delivered) == sorted(n.dedup_key for n in notes)  # each once
        assert len(receiver.requests) == len(delivered) + 3  # the three 503s were retried
        assert not Alert.objects.exclude(budget=alerting).exists()

    in_process = sum(r["sent"]["inprocess"] for r in results)
    over_http = sum(r["sent"]["http"] for r in results)
    rate_in = in_process / sum(r["seconds"]["inprocess"] for r in results) * PROCESSES
    rate_http = over_http / sum(r["seconds"]["http"] for r in results) * PROCESSES
    print(
        f"\nconcurrent writers: {sent:,} events ({in_process:,} in process, {over_http:,} over HTTP) from "
        f"{PROCESSES} processes in {elapsed:.1f} s = {sent / elapsed:,.0f} events/s overall "
        f"(~{rate_in:,.0f}/s in process, ~{rate_http:,.0f}/s over HTTP at that concurrency); "
        f"{len(entries):,} distinct entries, {sent - accepted:,} duplicates counted once; "
        f"total {total} USD; {len(alerts)} threshold alert(s) ({', '.join(sorted(a.level for a in alerts))}), "
        f"{pump.passes} evaluation passes during the load"
    )


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["result"]).write_text(json.dumps(_writer(spec)))
