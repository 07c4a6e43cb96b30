"""How long `Client.record()` keeps the caller: median microseconds per call.

    python costcontrol_client/bench_record.py [N]

Runs against a throwaway local server that accepts every batch, so the background sender
is really sending (and competing for the GIL) while the caller records, as in production.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from costcontrol_client import Client


class _Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        count = len(body.get("events", [body]))
        data = json.dumps({"accepted": count, "duplicates": 0, "rejected": 0, "results": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def measure(client: Client, count: int) -> list[float]:
    """Per-call durations in microseconds of `count` record() calls (each timed alone)."""
    samples = []
    clock = time.perf_counter_ns
    for i in range(count):
        started = clock()
        client.record(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            input_tokens=812,
            output_tokens=95,
            subject=f"user-{i % 100}",
        )
        samples.append((clock() - started) / 1000)
    return samples


def main(count: int = 50_000) -> float:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as spool_dir:
        client = Client(
            f"http://127.0.0.1:{server.server_address[1]}",
            "bench",
            service="bench",
            max_queue=count + 1,
            spool_path=Path(spool_dir) / "spool.jsonl",
        )
        try:
            measure(client, 1000)  # warm up
            samples = measure(client, count)
            client.flush(timeout=30)
        finally:
            client.close(timeout=5)
            server.shutdown()
            server.server_close()
    median = statistics.median(samples)
    p99 = statistics.quantiles(samples, n=100)[98]
    print(f"record(): median {median:.2f} µs, p99 {p99:.2f} µs per call ({count} calls)")
    return median


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
