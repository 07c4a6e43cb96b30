"""Rollups = ledger, after any workload, on any database, under concurrent writers."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection, connections

from tests.factories import PriceFactory, TeamFactory
from tracking.models import CostEntry, SpendRollup
from tracking.selectors import ledger_differences, spend_total
from tracking.services import cost_entry_correct, cost_entry_record, cost_entry_record_many

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
MODELS = ["m1", "m2", "m3"]


@pytest.fixture
def catalog(db):
    for model, (inp, out) in zip(
        MODELS, [("0.0000025", "0.00001"), ("0.00000015", "0.0000006"), ("0.000003", "0.000015")], strict=True
    ):
        PriceFactory(provider="acme", model=model, unit="input_token", unit_price=inp)
        PriceFactory(provider="acme", model=model, unit="output_token", unit_price=out)
    TeamFactory(name="ml")


def random_event(rng: random.Random, n: int) -> dict:
    """A random event under one of n + 1 keys (~1/3 of them repeat); a repeated key repeats its event,
    as a retry does (the same key with other values is an idempotency conflict, not a duplicate)."""
    key = rng.randint(0, n)
    body = random.Random(key)
    event = {
        "provider": "acme",
        "model": body.choice([*MODELS, "unpriced-model"]),
        "input_tokens": body.randint(0, 50_000),
        "output_tokens": body.randint(0, 5_000),
        "service": body.choice(["", "chat-api", "batch"]),
        "subject": body.choice(["", "alice", "bob"]),
        "job": body.choice(["", "", "batch-1"]),
        "team": body.choice(["", "ml"]),
        "tags": body.choice([{}, {"env": "prod"}, {"env": "dev", "feature": "search"}]),
        "outcome": body.choice(["success"] * 8 + ["error", "rate_limited"]),
        "occurred_at": NOW - timedelta(minutes=body.randint(0, 60 * 72)),
        "idempotency_key": f"k{key}",
    }
    if body.random() < 0.1:
        event["amount"] = f"{body.randint(0, 10**9)}E-9"
    return event


@pytest.mark.django_db
def test_rollups_equal_the_ledger_after_a_mixed_workload(catalog):
    rng = random.Random(7)
    with time_machine.travel(NOW, tick=False):
        for _ in range(300):
            cost_entry_record(**random_event(rng, 400))
        for _ in range(5):
            cost_entry_record_many([random_event(rng, 400) for _ in range(60)])
        for entry in CostEntry.objects.order_by("?")[:20]:
            cost_entry_correct(entry=entry, amount=f"{rng.randint(0, 10**7)}E-9", note="invoice")

    differences, expected_rows, rollup_rows = ledger_differences()
    assert differences == []
    assert expected_rows == rollup_rows > 50
    ledger_total = sum(CostEntry.objects.values_list("amount", flat=True), Decimal(0))
    assert spend_total(scope="global", start=NOW - timedelta(days=4), end=NOW + timedelta(hours=1)) == ledger_total
    out = StringIO()
    call_command("verify_ledger", stdout=out)
    assert out.getvalue().startswith("OK: ledger and rollups agree")


@pytest.mark.django_db
def test_verify_ledger_fails_on_a_tampered_rollup_and_rebuild_repairs_it(catalog):
    with time_machine.travel(NOW, tick=False):
        for i in range(20):
            cost_entry_record(**random_event(random.Random(i), 10_000))
    before = {r.pk: (r.scope, r.amount, r.events) for r in SpendRollup.objects.all()}
    SpendRollup.objects.filter(scope="global").update(amount=Decimal("999"))
    SpendRollup.objects.filter(scope="provider:acme").delete()

    err = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("verify_ledger", stderr=err)
    assert excinfo.value.returncode == 1
    assert "global" in err.getvalue() and "provider:acme" in err.getvalue()

    out = StringIO()
    call_command("rebuild_rollups", stdout=out)
    call_command("verify_ledger", stdout=out)
    assert "OK: ledger and rollups agree" in out.getvalue()
    assert sorted((s, a, e) for s, a, e in before.values()) == sorted(
        SpendRollup.objects.values_list("scope", "amount", "events")
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_concurrent_writers_into_the_same_scopes_and_hours_keep_totals_exact(catalog):
    """4 threads, each with its own PostgreSQL connection, write 150 single events and 3 batches of 50
    into the same few scopes and hours; 1 in 5 keys is shared between writers."""
    assert connection.vendor == "postgresql"
    per_writer, errors = 300, []
    barrier = threading.Barrier(4)

    def events_for(writer: int) -> list[dict]:
        rng = random.Random(writer)
        events = []
        for i in range(per_writer):
            shared = i % 5 == 0
            events.append(
                {
                    "provider": "acme",
                    "model": MODELS[i % 3],
                    "input_tokens": rng.randint(1, 40_000),
                    "output_tokens": rng.randint(1, 4_000),
                    "service": "chat-api",
                    "tags": {"env": "prod"},
                    "occurred_at": NOW - timedelta(minutes=i % 120),
                    # Shared keys carry the same payload in every writer (as a client retry would).
                    "idempotency_key": f"shared-{i}" if shared else f"w{writer}-{i}",
                    **({"input_tokens": 1000, "output_tokens": 100} if shared else {}),
                }
            )
        return events

    def writer(n: int) -> None:
        try:
            events = events_for(n)
            barrier.wait()
            for event in events[:150]:
                cost_entry_record(**event)
            for start in range(150, per_writer, 50):
                cost_entry_record_many(events[start : start + 50])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    with time_machine.travel(NOW, tick=True):  # process-wide: every writer thread sees it
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)

    assert errors == []
    unique_keys = {e["idempotency_key"] for n in range(4) for e in events_for(n)}
    assert CostEntry.objects.count() == len(unique_keys) == 4 * per_writer - 3 * per_writer // 5
    ledger_total = sum(CostEntry.objects.values_list("amount", flat=True), Decimal(0))
    assert SpendRollup.objects.filter(scope="global").count() == 3  # three UTC hours
    assert spend_total(scope="global", start=NOW - timedelta(hours=3), end=NOW + timedelta(hours=1)) == ledger_total
    assert (
        spend_total(scope="tag:env=prod", start=NOW - timedelta(hours=3), end=NOW + timedelta(hours=1)) == ledger_total
    )
    assert ledger_differences()[0] == []
    call_command("verify_ledger", stdout=StringIO())


@pytest.mark.django_db
def test_rebuild_rollups_reports_progress_on_a_terminal_and_json_otherwise(catalog):
    import io
    import json as json_module

    rng = random.Random(3)
    with time_machine.travel(NOW, tick=False):
        for _ in range(30):
            cost_entry_record(**random_event(rng, 10_000))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Terminal()
    call_command("rebuild_rollups", stdout=StringIO(), stderr=err)
    assert "ledger [" in err.getvalue() and f"{CostEntry.objects.count()}/{CostEntry.objects.count()}" in err.getvalue()
    out, quiet = StringIO(), Terminal()
    call_command("rebuild_rollups", "--json", stdout=out, stderr=quiet)
    assert json_module.loads(out.getvalue())["rollup_rows"] > 0 and quiet.getvalue() == ""
    assert ledger_differences()[0] == []
