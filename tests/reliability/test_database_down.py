"""Database down: PostgreSQL stopped and started again while the API takes traffic.

Its own PostgreSQL cluster (initdb in a temporary folder, a free port of 127.0.0.1), migrated with
manage.py, served by gunicorn (2 sync workers, persistent connections as in production), written
to by a costcontrol_client.Client that records an event every few milliseconds throughout.
While the database is down: raw requests get 503 + Retry-After + a JSON error (never a 500 or a
traceback), /healthz answers 503, the client spools. After it is back: the first requests of
every worker succeed (a dead persistent connection is replaced, not reused), the client delivers
its spool, and the ledger holds exactly the keys the client recorded, each once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest

from .web import api_key_create, gunicorn, http, migrate, postgres_cluster

CLIENT_PROJECT = Path(__file__).resolve().parents[2] / "costcontrol_client"
if str(CLIENT_PROJECT) not in sys.path:
    sys.path.insert(0, str(CLIENT_PROJECT))

from costcontrol_client import Client  # noqa: E402

pytestmark = pytest.mark.postgres

SERVICE = "dbdown"
DOWN_SECONDS = 4.0


def _event(key: str) -> dict[str, object]:
    return {
        "provider": "openai",
        "model": "gpt-4o",
        "operation": "chat",
        "input_tokens": 100,
        "output_tokens": 10,
        "idempotency_key": key,
    }


def _assert_unavailable(status: int, headers: dict[str, str], body: bytes, what: str) -> None:
    assert status == 503, f"{what}: {status} {body[:500]!r}"
    assert int(headers.get("Retry-After", "0")) > 0, f"{what}: no Retry-After in {headers}"
    assert headers.get("Content-Type", "").startswith("application/json"), f"{what}: {headers}"
    answer = json.loads(body)
    assert answer["code"] == "unavailable" and "retry" in answer["message"], answer
    assert b"Traceback" not in body


def _admin_login_form(base: str) -> tuple[bytes, dict[str, str]]:
    """A login POST to the admin that passes the CSRF check (body, headers): it reads the user table."""
    _, headers, _ = http("GET", f"{base}/admin/login/")
    cookie = next(part for part in headers["Set-Cookie"].split(";") if part.strip().startswith("csrftoken="))
    token = cookie.split("=", 1)[1]
    body = urlencode({"csrfmiddlewaretoken": token, "username": "nobody", "password": "wrong", "next": "/admin/"})
    return body.encode(), {"Cookie": cookie.strip(), "Content-Type": "application/x-www-form-urlencoded"}


def test_the_api_answers_503_while_postgresql_is_down_and_the_client_delivers_everything_once(tmp_path):
    log = tmp_path / "gunicorn.log"
    with postgres_cluster() as cluster:
        migrate(cluster.url)
        key = api_key_create(cluster.url, service=SERVICE)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with gunicorn(cluster.url, log, workers=2) as server:
            events_url = f"{server.url}/api/v1/events"
            client = Client(
                server.url,
                key,
                spool_path=tmp_path / "spool.jsonl",
                batch_size=50,
                flush_interval=0.05,
                timeout=5.0,
                max_retries=2,
                backoff_base=0.05,
                backoff_max=0.5,
                close_timeout=30.0,
            )
            recorded: list[str] = []
            stop, paused = threading.Event(), threading.Event()

            def traffic() -> None:
                n = 0
                while not stop.is_set():
                    if paused.is_set():
                        time.sleep(0.01)
                        continue
                    recorded.append(client.record(**_event(f"steady-{n}")))
                    n += 1
                    time.sleep(0.005)

            sender = threading.Thread(target=traffic, name="traffic")
            sender.start()
            try:
                time.sleep(1.5)
                # Up: a raw request is recorded (and each worker holds a persistent connection).
                for n in range(4):
                    status, _, body = http("POST", events_url, json.dumps(_event(f"raw-up-{n}")).encode(), auth)
                    assert status == 201, body

                # A quick restart no request sees: each worker's persistent connection is dead
                # afterwards, and the first request on it must get a new one (CONN_HEALTH_CHECKS).
                paused.set()
                client.flush(timeout=10)
                cluster.stop("fast")
                cluster.start()
                for n in range(10):
                    status, _, body = http("POST", events_url, json.dumps(_event(f"raw-restart-{n}")).encode(), auth)
                    assert status == 201, (n, status, body[:500])
                paused.clear()

                login_form = _admin_login_form(server.url)
                cluster.stop("fast")
                down_at = time.monotonic()
                refused = 0
                while time.monotonic() - down_at < DOWN_SECONDS or refused < 6:
                    status, headers, body = http(
                        "POST", events_url, json.dumps(_event(f"raw-down-{refused}")).encode(), auth
                    )
                    _assert_unavailable(status, headers, body, "POST /api/v1/events (one event)")
                    batch = json.dumps({"events": [_event(f"raw-down-batch-{refused}-{i}") for i in range(3)]})
                    status, headers, body = http("POST", events_url, batch.encode(), auth)
                    _assert_unavailable(status, headers, body, "POST /api/v1/events (a batch)")
                    status, headers, body = http("GET", f"{server.url}/api/v1/budgets", headers=auth)
                    _assert_unavailable(status, headers, body, "GET /api/v1/budgets")
                    status, headers, body = http("GET", f"{server.url}/healthz")
                    assert status == 503 and int(headers.get("Retry-After", "0")) > 0, (status, body)
                    assert json.loads(body)["status"] == "unavailable"
                    # A view outside the API that reads the database: the admin's login.
                    status, headers, body = http("POST", f"{server.url}/admin/login/", *login_form)
                    assert status == 503 and int(headers.get("Retry-After", "0")) > 0, (status, body[:500])
                    refused += 1
                    time.sleep(0.2)
                spooled_while_down = client.stats["spooled"]
                assert spooled_while_down > 0, client.stats  # the client noticed and kept events on disk

                cluster.start()
                # Every request after the restart succeeds: no worker reuses its dead connection.
                for n in range(10):
                    status, _, body = http("POST", events_url, json.dumps(_event(f"raw-back-{n}")).encode(), auth)
                    assert status == 201, (n, status, body[:500])
                status, _, body = http("GET", f"{server.url}/healthz")
                assert status == 200, body
                time.sleep(1.0)
            finally:
                stop.set()
                sender.join(timeout=10)
                client.close(timeout=30.0)

            # The client sent its spool after the restart; nothing is left on disk.
            assert client.spool.count() == 0, client.stats
            stats = client.stats
            assert stats["dropped"] == 0 and stats["rejected"] == 0, stats
            assert stats["resent"] >= spooled_while_down > 0, stats

        with psycopg.connect(cluster.url) as conn:
            keys = [row[0] for row in conn.execute("SELECT idempotency_key FROM tracking_costentry")]
        expected = {f"{SERVICE}/{k}" for k in recorded}
        expected |= {f"{SERVICE}/raw-up-{n}" for n in range(4)} | {f"{SERVICE}/raw-back-{n}" for n in range(10)}
        expected |= {f"{SERVICE}/raw-restart-{n}" for n in range(10)}
        assert len(recorded) == len(set(recorded)) > 200
        # Exactly the keys recorded, each once: nothing lost, nothing doubled, nothing refused with 503 written.
        assert len(keys) == len(set(keys))
        assert set(keys) == expected, (len(set(keys) - expected), len(expected - set(keys)))
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "Internal Server Error" not in text, text[-3000:]
        print(
            f"database down {DOWN_SECONDS:.0f} s: {len(recorded)} events recorded by the client, "
            f"{spooled_while_down} spooled while down, {stats['resent']} resent, {refused} rounds of 503s"
        )
