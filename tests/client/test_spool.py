"""The spool file: what a re-send leaves behind, torn lines, and two senders on one spool."""

from __future__ import annotations

import json
import logging
import threading
import uuid

from costcontrol_client._spool import Spool

from .fake_costcontrol import Scripted


def spooled_events(count):
    return [
        {"provider": "openai", "model": "gpt-4o", "input_tokens": 1, "idempotency_key": uuid.uuid4().hex}
        for _ in range(count)
    ]


def test_a_resend_that_fails_half_way_keeps_only_what_the_server_did_not_take(fake_api, make_client, tmp_path):
    events = spooled_events(30)
    Spool(tmp_path / "spool.jsonl", max_bytes=10**6).append(events)
    fake_api.script.extend([Scripted(normal=True), Scripted(503, {"code": "unavailable"})])

    client = make_client(fake_api.url, batch_size=10)

    assert fake_api.wait_for(lambda: len(fake_api.keys()) == 30, timeout=5)
    assert [p.status for p in fake_api.event_posts()] == [200, 503, 200, 200]
    assert fake_api.received == 30  # the first ten were not sent again
    assert fake_api.wait_for(lambda: client.spool.count() == 0)
    assert fake_api.keys() == {e["idempotency_key"] for e in events}


def test_a_torn_line_in_the_spool_is_skipped_and_the_rest_delivered(fake_api, make_client, tmp_path, caplog):
    good = spooled_events(3)
    lines = [json.dumps(good[0]), '{"provider": "openai", "mod', json.dumps(good[1]), json.dumps(good[2])]
    (tmp_path / "spool.jsonl").write_text("\n".join(lines) + "\n")

    with caplog.at_level(logging.ERROR, logger="costcontrol_client"):
        client = make_client(fake_api.url)
        assert fake_api.wait_for(lambda: len(fake_api.keys()) == 3, timeout=5)

    assert fake_api.keys() == {e["idempotency_key"] for e in good}
    assert "unreadable line" in caplog.text
    assert fake_api.wait_for(lambda: client.spool.count() == 0)


def test_clients_sharing_one_spool_send_each_spooled_event_once(fake_api, make_client, tmp_path):
    events = spooled_events(300)
    Spool(tmp_path / "spool.jsonl", max_bytes=10**6).append(events)

    clients = []
    threads = [
        threading.Thread(target=lambda: clients.append(make_client(fake_api.url, batch_size=20))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert fake_api.wait_for(lambda: len(fake_api.keys()) == 300, timeout=5)
    for client in clients:
        assert client.flush(timeout=5)
    assert fake_api.wait_for(lambda: sum(client.stats["resent"] for client in clients) == 300)
    assert fake_api.received == 300


def test_the_spool_refuses_to_grow_past_its_limit_and_the_loss_is_logged(fake_api, make_client, tmp_path, caplog):
    fake_api.stop()
    client = make_client(fake_api.url, max_spool_bytes=2000, max_queue=1, flush_interval=60, batch_size=100)

    with caplog.at_level(logging.ERROR, logger="costcontrol_client"):
        for _ in range(40):
            client.record(provider="openai", model="gpt-4o", input_tokens=1)

    assert 0 < client.spool.count() < 39
    # Every event is in the queue (one fits), with the sender (at most one), spooled or dropped:
    # how many are in the first two depends on the sender thread's timing.
    assert 38 <= client.stats["dropped"] + client.spool.count() <= 40
    assert client.stats["dropped"] > 0
    assert "LOST" in caplog.text
