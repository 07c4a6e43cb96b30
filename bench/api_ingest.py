#!/usr/bin/env python
"""Benchmark of HTTP batch ingest: events/s through POST /api/v1/events, and raw COPY beside it.

    bin/with-postgres .venv/bin/python bench/api_ingest.py            # part of `make bench`
    ... bench/api_ingest.py --batches 40 --batch-size 500 --clients 4 --workers 2 --rounds 3

On a fresh PostgreSQL database (created on the server of DATABASE_URL, dropped at the end):
migrate, load the default price catalog, create an API key, start gunicorn on 127.0.0.1 (its
own processes, `--workers`), then `--clients` threads post pre-built batches of `--batch-size`
events (each with its own idempotency key, realistic scopes: 6 models, 4 services, 200 subjects,
tags) as fast as the server answers. Events/s = events accepted / wall time of the round.

The reference, measured in the same run on the same database: the same rows written with
psycopg COPY straight into tracking_costentry (its indexes included; no pricing, no validation,
no rollups), one COPY per batch in its own transaction: what the disk and the server can take.
Its rows are CostEntry objects of the same events, their columns CostEntry's concrete fields,
each value prepared by its field (get_db_prep_save), before the clock starts.
Each figure is the median of --rounds rounds; the ratio is ingest / COPY. Target: at least 25 %
of the COPY rate. See bench/README.md. otlp_ingest.py measures POST /v1/traces with the same
server, database, rounds and reference (ingest_benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import (  # noqa: E402
    TARGET_INGEST_COPY_RATIO,
    is_postgresql_url,
    log,
    machine_cores,
    pg_database_create,
    pg_database_drop,
)

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("openai", "text-embedding-3-small"),
    ("openai", "o1"),
]
SERVICES = ["chat-api", "search", "batch", "support"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_batches(count: int, size: int, run: str, seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    batches = []
    for b in range(count):
        events = []
        for i in range(size):
            provider, model = rng.choice(MODELS)
            events.append(
                {
                    "provider": provider,
                    "model": model,
                    "operation": "embedding" if "embedding" in model else "chat",
                    "input_tokens": rng.randint(50, 8000),
                    "output_tokens": 0 if "embedding" in model else rng.randint(10, 1500),
                    "subject": f"user-{rng.randint(1, 200)}",
                    "tags": {"env": rng.choice(["prod", "staging"]), "feature": rng.choice(["chat", "rag", "summary"])},
                    "occurred_at": (now - timedelta(seconds=rng.randint(0, 3600))).isoformat(),
                    "outcome": "success" if rng.random() > 0.02 else "error",
                    "duration_ms": rng.randint(80, 9000),
                    "idempotency_key": f"{run}-{b}-{i}",
                }
            )
        batches.append(events)
    return batches


def post_all(
    url: str,
    bodies: list[bytes],
    clients: int,
    *,
    headers: dict[str, str],
    accepted: Callable[[bytes], int],
) -> tuple[int, float, list[str]]:
    """POST every body to `url` (clients threads); returns (items accepted, seconds, errors).

    `accepted` reads an answer's body and returns how many of the request's items were taken, or
    raises: an answer that is not a 200 or that `accepted` refuses is an error, not a count."""
    queue = list(reversed(bodies))
    lock = threading.Lock()
    total = 0
    errors: list[str] = []

    def client() -> None:
        nonlocal total
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            request = Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http://127.0.0.1 only
            try:
                with urlopen(request, timeout=120) as response:  # noqa: S310
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}, not 200")
                    count = accepted(response.read())
                with lock:
                    total += count
            except Exception as exc:  # noqa: BLE001 - reported, the round is marked failed
                with lock:
                    errors.append(f"{exc.__class__.__name__}: {exc}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total, time.perf_counter() - started, errors


def copy_rows(database_url: str, batches: list[list[dict[str, Any]]]) -> tuple[list[str], list[list[tuple[Any, ...]]]]:
    """The reference's columns and rows: each event as a CostEntry (service "bench", a rough price,
    a key of its own), prepared by its fields for the bench database (Django set up on it here)."""
    from decimal import Decimal

    os.environ.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="costcontrol.settings.local")
    import django

    django.setup()
    from django.db import connection

    from tracking.models import CostEntry, PricingStatus

    fields = [f for f in CostEntry._meta.concrete_fields if not f.primary_key]
    rows_by_batch = []
    for batch in batches:
        rows = []
        for event in batch:
            at = datetime.fromisoformat(event["occurred_at"])
            nanos = event.get("input_tokens", 0) * 2500 + event.get("output_tokens", 0) * 10000
            entry = CostEntry(
                **{**event, "occurred_at": at, "idempotency_key": f"copy-{event['idempotency_key']}"},
                recorded_at=at,
                service="bench",
                amount=Decimal(nanos).scaleb(-9),
                pricing_status=PricingStatus.PRICED,
            )
            rows.append(tuple(f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields))
        rows_by_batch.append(rows)
    connection.close()
    return [f.column for f in fields], rows_by_batch


def copy_all(database_url: str, columns: list[str], rows_by_batch: list[list[tuple[Any, ...]]]) -> tuple[int, float]:
    """The reference: the rows COPYed into the ledger, one transaction per batch."""
    import psycopg

    written = 0
    with psycopg.connect(database_url) as conn:
        started = time.perf_counter()
        for rows in rows_by_batch:
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY tracking_costentry ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            written += len(rows)
        return written, time.perf_counter() - started


def prepare_database(database_url: str) -> str:
    """Migrate, load the default catalog, create the API key; returns the key's plaintext."""
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "costcontrol.settings.local"}
    env["DJANGO_DEBUG"] = "0"
    env.update(ENABLE_EMAIL_ALERTS="0", ENABLE_SLACK_ALERTS="0")
    for command in (["migrate", "-v0"], ["bootstrap"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=BASE_DIR, env=env, check=True, capture_output=True)
    script = (
        "import django; django.setup();"
        "from api.keys import api_key_issue;"
        "print(api_key_issue(name='bench', service='bench', rate_limit_per_minute=10**9).plaintext)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def start_server(database_url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "costcontrol.settings.local"}
    env.update(DJANGO_DEBUG="0", CELERY_BROKER_URL="memory://", LOG_LEVEL="WARNING")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "costcontrol.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers), "--log-level", "warning"],
        cwd=BASE_DIR,
        env=env,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not answer /healthz within 30 s")


def ledger_rows(database_url: str) -> int:
    """Rows the server wrote (the reference's own rows have keys starting with copy-)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM tracking_costentry WHERE idempotency_key NOT LIKE 'copy-%'").fetchone()
    return row[0] if row else 0


# (batches, run, seed) -> the request bodies and, for each, the events its rows are (the COPY reference's rows)
Build = Callable[[int, str, int], tuple[list[bytes], list[list[dict[str, Any]]]]]


def ingest_parser(doc: str | None, *, batches: int, batch_size: int) -> argparse.ArgumentParser:
    """The options of an HTTP ingest benchmark (api_ingest.py, otlp_ingest.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=batches, help=f"requests per round ({batches})")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"items per request ({batch_size})")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (3)")
    parser.add_argument("--json", action="store_true")
    return parser


def ingest_benchmark(
    args: argparse.Namespace,
    *,
    name: str,
    title: str,
    unit: str,
    path: str,
    headers: Callable[[str], dict[str, str]],
    accepted: Callable[[bytes], int],
    build: Build,
    target: float,
    strict: bool = False,
) -> int:
    """Measure `unit`/s POSTed to `path` beside COPY of the same rows, on a fresh database; print the
    figures (or their JSON). `headers` gives a request's headers for the API key. With `strict`, a
    failed request, or a ledger that does not hold one row per item accepted, fails the run (exit 1,
    no figures) instead of being reported beside them."""
    url = os.environ.get("DATABASE_URL", "")
    if not is_postgresql_url(url):
        print(f"{name}: needs a PostgreSQL DATABASE_URL (run it through bin/with-postgres)", file=sys.stderr)
        return 0
    database, database_url = pg_database_create(url)
    log(f"{name}: created database {database}")
    server = None
    try:
        key = prepare_database(database_url)
        port = free_port()
        server = start_server(database_url, port, args.workers)
        endpoint, request_headers = f"http://127.0.0.1:{port}{path}", headers(key)
        warm, _ = build(2, "warm", 0)
        total, _, failures = post_all(endpoint, warm, args.clients, headers=request_headers, accepted=accepted)
        ingest, reference, body_bytes = [], [], []
        for r in range(args.rounds):
            bodies, batches = build(args.batches, uuid.uuid4().hex[:8], r)
            body_bytes += [len(b) for b in bodies]
            count, seconds, errors = post_all(
                endpoint, bodies, args.clients, headers=request_headers, accepted=accepted
            )
            total += count
            failures += errors
            ingest.append(count / seconds)
            copied, copy_seconds = copy_all(database_url, *copy_rows(database_url, batches))
            reference.append(copied / copy_seconds)
            log(
                f"{name}: round {r + 1}: {count:,} {unit} in {seconds:.2f} s = {count / seconds:,.0f}/s; "
                f"COPY {copied / copy_seconds:,.0f} rows/s"
                + (f"; {len(errors)} request(s) failed, e.g. {errors[0]}" if errors else "")
            )
        written = ledger_rows(database_url)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        pg_database_drop(url, database)
        log(f"{name}: dropped database {database}")
    if strict and (failures or written != total):
        log(f"{name}: FAILED: {len(failures)} request(s) failed; {written:,} ledger rows for {total:,} {unit} accepted")
        for failure in failures[:5]:
            log(f"{name}:   {failure}")
        return 1
    result = {
        f"{unit}_per_second": statistics.median(ingest),
        "copy_rows_per_second": statistics.median(reference),
        "rounds": args.rounds,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "clients": args.clients,
        "workers": args.workers,
        "body_bytes_median": statistics.median(body_bytes),
        "accepted": total,
        "ledger_rows": written,
        "errors": failures[:5],
        "cores": machine_cores(),
    }
    result["ratio"] = result[f"{unit}_per_second"] / result["copy_rows_per_second"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rate, copy, ratio = result[f"{unit}_per_second"], result["copy_rows_per_second"], result["ratio"]
    print(
        f"{title} ({args.batch_size} {unit}/request, {args.clients} clients, gunicorn {args.workers} workers), "
        f"machine: {result['cores']} cores, median of {args.rounds} rounds"
    )
    print(f"  ingest {rate:,.0f} {unit}/s; COPY reference {copy:,.0f} rows/s; ratio {ratio:.3f}")
    print(f"  target: >= {target:.0%} of COPY -> {'PASS' if ratio >= target else 'MISS'}")
    print(
        f"  ledger rows written {written:,} for {total:,} {unit} accepted; median body {result['body_bytes_median']:,.0f} B"
    )
    if failures:
        print(f"  {len(failures)} request(s) failed, e.g. {failures[0]}")
    return 0


def main() -> int:
    args = ingest_parser(__doc__, batches=40, batch_size=500).parse_args()

    def build(count: int, run: str, seed: int) -> tuple[list[bytes], list[list[dict[str, Any]]]]:
        batches = build_batches(count, args.batch_size, run, seed)
        return [json.dumps({"events": b}).encode() for b in batches], batches

    return ingest_benchmark(
        args,
        name="api_ingest",
        title="HTTP batch ingest (POST /api/v1/events)",
        unit="events",
        path="/api/v1/events",
        headers=lambda key: {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        accepted=lambda answer: json.loads(answer)["accepted"],
        build=build,
        target=TARGET_INGEST_COPY_RATIO,
    )


if __name__ == "__main__":
    sys.exit(main())
