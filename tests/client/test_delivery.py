"""Background delivery: batches, retries and backoff, the spool, nothing lost and nothing doubled."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costcontrol_client import Client, default_spool_path

from .conftest import CLIENT_PROJECT
from .fake_costcontrol import API_KEY, Scripted


def chat(**extra):
    return {"provider": "openai", "model": "gpt-4o", "operation": "chat", "input_tokens": 10, **extra}


def test_each_recorded_event_arrives_once_with_its_key_time_and_service(fake_api, make_client):
    client = make_client(fake_api.url, service="search")

    keys = [client.record(**chat(subject=f"user-{i}")) for i in range(3)]

    assert client.flush(timeout=5)
    assert fake_api.keys() == set(keys)
    for key in keys:
        event = fake_api.events[key]
        assert event["service"] == "search"
        assert datetime.fromisoformat(event["occurred_at"]).tzinfo is not None
        assert len(key) == 32 and int(key, 16) >= 0  # uuid4 hex
    assert fake_api.received == 3


def test_a_caller_given_key_time_and_decimals_are_kept(fake_api, make_client):
    client = make_client(fake_api.url, service="search")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    key = client.record(**chat(idempotency_key="job-7-step-3", occurred_at=at, amount=Decimal("0.0123"), service="etl"))

    assert key == "job-7-step-3"
    assert client.flush(timeout=5)
    event = fake_api.events["job-7-step-3"]
    assert event["occurred_at"] == "2026-01-02T03:04:05+00:00"
    assert event["amount"] == "0.0123"
    assert event["service"] == "etl"


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"model": "gpt-4o"}, ValueError),
        ({"provider": "openai"}, ValueError),
        ({"provider": "openai", "model": "gpt-4o", "tokens": 3}, TypeError),
        ({"provider": "openai", "model": "gpt-4o", "amount": 0.1}, TypeError),
        ({"provider": "openai", "model": "gpt-4o", "occurred_at": datetime(2026, 1, 1)}, ValueError),
    ],
)
def test_record_refuses_at_once_what_the_server_would_refuse(fake_api, make_client, event, error):
    client = make_client(fake_api.url)

    with pytest.raises(error):
        client.record(**event)

    assert client.queued == 0


def test_events_go_in_batches_of_at_most_batch_size(fake_api, make_client):
    client = make_client(fake_api.url, batch_size=10, flush_interval=30)

    keys = {client.record(**chat()) for _ in range(25)}

    assert client.flush(timeout=5)
    sizes = [post.size for post in fake_api.event_posts()]
    assert sizes[0] == 10
    assert max(sizes) <= 10
    assert sum(sizes) == 25
    assert fake_api.keys() == keys


def test_queued_events_are_sent_every_flush_interval_without_a_flush(fake_api, make_client):
    client = make_client(fake_api.url, flush_interval=0.1, batch_size=500)

    key = client.record(**chat())

    assert fake_api.wait_for(lambda: key in fake_api.keys(), timeout=3)


def test_a_503_is_retried_after_the_servers_retry_after(fake_api, make_client):
    unavailable = Scripted(503, {"code": "unavailable", "message": "database down"}, {"Retry-After": "1"})
    fake_api.script.extend([unavailable, unavailable])
    client = make_client(fake_api.url, backoff_base=0.01, backoff_max=5)

    key = client.record(**chat())

    assert client.flush(timeout=8)
    posts = fake_api.event_posts()
    assert [p.status for p in posts] == [503, 503, 200]
    assert posts[1].at - posts[0].at >= 0.95  # Retry-After: 1, though our own backoff says 0.01
    assert posts[2].at - posts[1].at >= 0.95
    assert fake_api.keys() == {key}
    assert client.stats["retries"] == 2


def test_a_429_is_retried_after_the_servers_retry_after(fake_api, make_client):
    fake_api.script.append(Scripted(429, {"code": "rate_limited", "message": "slow down"}, {"Retry-After": "0.5"}))
    client = make_client(fake_api.url, backoff_base=0.01, backoff_max=5)

    key = client.record(**chat())

    assert client.flush(timeout=5)
    posts = fake_api.event_posts()
    assert [p.status for p in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.45
    assert fake_api.keys() == {key}


def test_500s_and_dropped_connections_are_retried_with_growing_backoff(fake_api, make_client):
    fake_api.script.extend([Scripted(500, {"code": "error"}), Scripted(drop=True), Scripted(502, None)])
    client = make_client(fake_api.url, backoff_base=0.2, backoff_max=5, max_retries=3)

    key = client.record(**chat())

    assert client.flush(timeout=8)
    posts = fake_api.event_posts()
    assert [p.status for p in posts] == [500, None, 502, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    # "equal jitter": attempt n waits between half and all of 0.2 * 2**n
    assert gaps[0] >= 0.09
    assert gaps[1] >= 0.19
    assert gaps[2] >= 0.39
    assert fake_api.keys() == {key}


def test_a_batch_whose_answer_was_lost_is_sent_again_and_counted_once(fake_api, make_client):
    fake_api.script.append(Scripted(drop=True, process=True))  # the server stored them, then the line broke
    client = make_client(fake_api.url)

    keys = {client.record(**chat()) for _ in range(5)}

    assert client.flush(timeout=5)
    assert fake_api.received == 10  # sent twice ...
    assert fake_api.keys() == keys  # ... counted once: the server dedups on the client's keys
    assert client.stats["duplicates"] == 5


def test_when_the_server_stays_down_events_are_spooled_and_redelivered_when_it_is_back(fake_api, make_client):
    fake_api.stop()  # connection refused
    client = make_client(fake_api.url, max_retries=2)

    first = {client.record(**chat()) for _ in range(20)}

    assert client.flush(timeout=5)  # spooled counts as done
    assert client.spool.count() == 20
    assert client.stats["spooled"] == 20
    more = {client.record(**chat()) for _ in range(5)}  # offline now: straight to the spool
    assert client.flush(timeout=5)
    assert client.spool.count() == 25

    fake_api.start()  # same port

    assert fake_api.wait_for(lambda: fake_api.keys() == first | more, timeout=5)
    last = client.record(**chat())
    assert client.flush(timeout=5)
    assert fake_api.keys() == first | more | {last}
    assert fake_api.received == 26  # nothing sent twice
    assert client.spool.count() == 0


def test_a_new_client_resends_the_spool_left_by_an_earlier_one_at_start_up(fake_api, make_client):
    fake_api.stop()
    before = make_client(fake_api.url, max_retries=0)
    keys = {before.record(**chat()) for _ in range(7)}
    before.close(timeout=3)
    assert before.spool.count() == 7

    fake_api.start()
    after = make_client(fake_api.url)

    assert fake_api.wait_for(lambda: fake_api.keys() == keys, timeout=5)
    assert fake_api.wait_for(lambda: after.stats["resent"] == 7)
    assert fake_api.wait_for(lambda: after.spool.count() == 0)


def test_close_sends_what_is_still_queued(fake_api, make_client):
    client = make_client(fake_api.url, flush_interval=60, batch_size=500)
    keys = {client.record(**chat()) for _ in range(5)}
    assert fake_api.keys() == set()

    client.close()

    assert fake_api.keys() == keys


def test_a_close_that_runs_out_of_time_spools_the_rest(fake_api, make_client):
    fake_api.script.append(Scripted(503, {"code": "unavailable"}, {"Retry-After": "3"}))
    client = make_client(fake_api.url, backoff_max=10, flush_interval=60)
    keys = {client.record(**chat()) for _ in range(4)}
    assert not client.flush(timeout=0.3)  # waiting out Retry-After

    started = time.monotonic()
    client.close(timeout=0.2)

    assert time.monotonic() - started < 2
    assert client.spool.count() == 4
    assert fake_api.keys() == set()
    again = make_client(fake_api.url)  # the next start delivers them
    assert fake_api.wait_for(lambda: fake_api.keys() == keys, timeout=5)
    again.close()


def test_a_full_queue_spools_instead_of_growing_or_blocking(fake_api, make_client):
    fake_api.stop()
    client = make_client(fake_api.url, max_queue=5, batch_size=100, flush_interval=60)

    started = time.perf_counter()
    keys = {client.record(**chat()) for _ in range(12)}
    elapsed = time.perf_counter() - started

    assert client.queued == 5
    assert client.spool.count() == 7
    assert elapsed < 1  # no network wait in record()
    fake_api.start()
    client.close(timeout=15)  # generous: a loaded machine (the whole suite) slows the re-send
    assert fake_api.keys() == keys
    assert fake_api.received == 12


def test_a_close_once_the_server_is_back_sends_the_spool_and_the_queue_without_waiting_out_the_backoff(
    fake_api, make_client
):
    fake_api.stop()
    before = make_client(fake_api.url, max_retries=0)
    spooled = {before.record(**chat()) for _ in range(3)}
    before.close(timeout=3)
    # Started while the server is down: the start-up re-send fails and the next probe is far off.
    client = make_client(fake_api.url, backoff_base=60, backoff_max=60, flush_interval=60)
    assert fake_api.wait_for(lambda: client._offline, timeout=5)
    queued = {client.record(**chat()) for _ in range(2)}

    fake_api.start()
    started = time.monotonic()
    client.close(timeout=5)

    assert time.monotonic() - started < 5
    assert fake_api.keys() == spooled | queued
    assert client.spool.count() == 0


def test_events_the_server_rejects_are_logged_with_their_field_errors_and_not_retried(fake_api, make_client, caplog):
    fake_api.reject = lambda event: {"model": ["unknown model 'gpt-9'"]} if event["model"] == "gpt-9" else None
    client = make_client(fake_api.url, flush_interval=60)
    good = {client.record(**chat()) for _ in range(2)}
    bad = client.record(**chat(model="gpt-9"))

    with caplog.at_level(logging.WARNING, logger="costcontrol_client"):
        assert client.flush(timeout=5)

    assert len(fake_api.event_posts()) == 1
    assert fake_api.keys() == good
    assert client.stats["rejected"] == 1
    warning = next(r.getMessage() for r in caplog.records if "rejected" in r.getMessage())
    assert bad in warning and "model: unknown model 'gpt-9'" in warning
    assert client.spool.count() == 0


def test_a_batch_refused_with_a_400_goes_to_the_dead_letter_file_with_the_errors_not_retried(
    fake_api, make_client, caplog
):
    fake_api.script.append(
        Scripted(400, {"code": "invalid", "message": "bad batch", "errors": {"events": ["idempotency_key missing"]}})
    )
    client = make_client(fake_api.url, flush_interval=60)
    receipt = client.record(**chat())

    with caplog.at_level(logging.WARNING, logger="costcontrol_client"):
        assert client.flush(timeout=5)

    assert [p.status for p in fake_api.event_posts()] == [400]
    assert (client.stats["rejected"], client.stats["dead_letters"], client.stats["dropped"]) == (1, 1, 0)
    assert receipt.status == "rejected" and receipt.errors == {"events": ["idempotency_key missing"]}
    assert "idempotency_key missing" in caplog.text
    [letter] = [json.loads(line) for line in client.dead_letters.path.read_text().splitlines()]
    assert (letter["status"], letter["code"], letter["message"]) == (400, "invalid", "bad batch")
    assert letter["errors"] == {"events": ["idempotency_key missing"]} and letter["event"]["idempotency_key"] == receipt
    assert client.spool.count() == 0
    time.sleep(0.2)
    assert len(fake_api.event_posts()) == 1


def test_a_refused_api_key_keeps_the_events_in_the_spool_for_a_fixed_key(fake_api, make_client, caplog):
    client = make_client(fake_api.url, api_key="wrong", backoff_base=30, backoff_max=30)

    with caplog.at_level(logging.ERROR, logger="costcontrol_client"):
        key = client.record(**chat())
        assert client.flush(timeout=5)

    assert len(fake_api.event_posts()) == 0  # the fake answers 401 before counting event posts
    assert sum(1 for _, path, _, _ in fake_api.requests if path == "/api/v1/events") == 1  # not retried
    assert client.spool.count() == 1
    assert "refused the API key" in caplog.text
    fixed = make_client(fake_api.url)
    assert fake_api.wait_for(lambda: fake_api.keys() == {key}, timeout=5)
    fixed.close()


def test_a_batch_too_large_for_the_server_is_halved_until_it_fits(fake_api, make_client):
    fake_api.max_batch = 10
    client = make_client(fake_api.url, batch_size=40, flush_interval=60)

    keys = {client.record(**chat()) for _ in range(40)}

    assert client.flush(timeout=5)
    assert fake_api.keys() == keys
    assert {p.size for p in fake_api.event_posts() if p.status == 200} == {10}


def test_many_threads_recording_at_once_lose_nothing_and_double_nothing(fake_api, make_client):
    client = make_client(fake_api.url, batch_size=100, max_queue=100_000)
    keys: list[str] = []
    lock = threading.Lock()

    def work():
        mine = [client.record(**chat()) for _ in range(500)]
        with lock:
            keys.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert client.flush(timeout=8)
    assert len(set(keys)) == 4000
    assert fake_api.keys() == set(keys)
    assert fake_api.received == 4000


def test_the_exit_hook_sends_what_a_program_recorded_without_closing(fake_api, tmp_path):
    program = (
        "import sys\n"
        f"sys.path.insert(0, {str(CLIENT_PROJECT)!r})\n"
        "from costcontrol_client import Client\n"
        f"cc = Client({fake_api.url!r}, {API_KEY!r}, flush_interval=60, spool_path={str(tmp_path / 's.jsonl')!r})\n"
        "print(cc.record(provider='openai', model='gpt-4o', input_tokens=1))\n"
    )

    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20, check=True)

    assert fake_api.keys() == {done.stdout.strip()}


def test_the_default_spool_lives_in_the_users_cache_dir_one_file_per_server_and_key(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_CACHE_HOME is the Linux cache dir")

    path = default_spool_path("http://cc.internal", "key-a")

    assert path.parent == tmp_path / "costcontrol"
    assert path.suffix == ".jsonl"
    assert path != default_spool_path("http://cc.internal", "key-b")
    assert path != default_spool_path("http://other.internal", "key-a")
    client = Client("http://127.0.0.1:9", "key-a", max_retries=0)
    try:
        assert client.spool.path == default_spool_path("http://127.0.0.1:9", "key-a")
    finally:
        client.close(timeout=1)
    assert os.path.commonpath([client.spool.path, tmp_path]) == str(tmp_path)
