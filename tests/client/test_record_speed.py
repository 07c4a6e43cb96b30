"""record() must not slow the caller: a printed median, and only a generous sanity bound."""

from __future__ import annotations

import statistics
import time


def test_record_keeps_the_caller_for_microseconds_not_a_network_round_trip(fake_api, make_client, capsys):
    client = make_client(fake_api.url, max_queue=100_000, flush_interval=0.05)
    samples = []
    for i in range(20_000):
        started = time.perf_counter_ns()
        client.record(provider="openai", model="gpt-4o", operation="chat", input_tokens=812, subject=f"u{i % 50}")
        samples.append((time.perf_counter_ns() - started) / 1000)

    median = statistics.median(samples)
    with capsys.disabled():
        print(f"\nrecord(): median {median:.1f} µs over {len(samples)} calls (sender running)")
    assert median < 500  # a sanity bound on a shared CI machine; the real figure is printed
    assert client.flush(timeout=8)
    assert len(fake_api.keys()) == 20_000
