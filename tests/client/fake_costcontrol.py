"""A small stand-in for the costcontrol HTTP API on 127.0.0.1, scriptable to fail.

POST /api/v1/events dedups by idempotency key like the real server; `script` holds answers
to give first ("503 with Retry-After: 1", "drop the connection", ...); `stop()` and
`start()` on the same port make "connection refused for a while".
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.local_http import JsonHandler

API_KEY = "cc-test-key"


@dataclass
class Scripted:
    """One scripted answer. status None + drop: close the connection without answering.

    process: handle the events normally first (the server took them), then answer as scripted
    (a lost answer: the client cannot know the events arrived).
    """

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    process: bool = False
    normal: bool = False  # answer this one as usual (to script failures after some successes)


@dataclass
class Post:
    at: float
    path: str
    size: int
    status: int | None


class FakeCostcontrol:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, dict[str, Any]] = {}  # accepted, by idempotency key
        self.received = 0  # events received in event posts, duplicates included
        self.posts: list[Post] = []
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []  # (method, path+query, headers, body)
        self.script: deque[Scripted] = deque()
        self.reject: Callable[[dict[str, Any]], dict[str, list[str]] | None] = lambda event: None
        # What an accepted event is priced at: (amount, pricing_status).
        self.price: Callable[[dict[str, Any]], tuple[str, str]] = lambda event: ("0", "priced")
        self.max_batch = 1000
        self.routes: dict[tuple[str, str], tuple[int, Any, dict[str, str]]] = {}
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()

    def calls(self) -> list[tuple[str, str, dict[str, str], Any]]:
        """The requests the test's own calls made: all but the sender thread's GET /api/v1/key, which
        it sends at start, at a moment of its own (under any path prefix the client's URL has)."""
        return [request for request in self.requests if not request[1].endswith("/api/v1/key")]

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeCostcontrol:
        fake = self

        class Handler(_Handler):
            server_state = fake

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (keep-alive ones too): "the server is down"."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    # --- what arrived ----------------------------------------------------------------

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.events)

    def event_posts(self) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.path == "/api/v1/events"]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # --- handling --------------------------------------------------------------------

    def take_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        results, counts = [], {"accepted": 0, "duplicates": 0, "rejected": 0}
        with self.lock:
            self.received += len(events)
            for index, event in enumerate(events):
                errors = self.reject(event)
                key = event.get("idempotency_key")
                if errors:
                    counts["rejected"] += 1
                    results.append({"index": index, "status": "rejected", "id": None, "amount": None, "errors": errors})
                else:
                    status = "duplicate" if key in self.events else "accepted"
                    counts["duplicates" if key in self.events else "accepted"] += 1
                    first = self.events.setdefault(key, event)
                    amount, pricing_status = self.price(first)
                    results.append(
                        {
                            "index": index,
                            "status": status,
                            "id": 1,
                            "amount": amount,
                            "currency": "USD",
                            "pricing_status": pricing_status,
                            "errors": None,
                        }
                    )
        return {**counts, "results": results}


class _Handler(JsonHandler):
    server_state: FakeCostcontrol
    protocol_version = "HTTP/1.1"  # keep-alive, as the real server behind a proxy would
    timeout = 5  # an idle keep-alive connection's thread ends by itself

    def setup(self) -> None:
        super().setup()
        with self.server_state.lock:
            self.server_state._sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # a connection the script cut
        finally:
            with self.server_state.lock:
                self.server_state._sockets.discard(self.connection)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.server_state
        body = self._body()
        path = self.path.split("?", 1)[0]
        with fake.lock:
            fake.requests.append((method, self.path, dict(self.headers), body))
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self._send(401, {"code": "unauthorized", "message": "unknown API key"})
            return
        if (method, path) == ("POST", "/api/v1/events"):
            self._events(body)
            return
        status, answer, headers = fake.routes.get((method, path), (404, {"code": "not_found", "message": path}, {}))
        self._send(status, answer, headers)

    def _events(self, body: Any) -> None:
        fake = self.server_state
        events = body.get("events") if isinstance(body, dict) and "events" in body else [body]
        with fake.lock:
            scripted = fake.script.popleft() if fake.script else None
        if scripted is not None and scripted.normal:
            scripted = None
        if scripted is not None and scripted.process:
            fake.take_events(events)
        if scripted is not None:
            with fake.lock:
                fake.posts.append(Post(time.monotonic(), "/api/v1/events", len(events), scripted.status))
            if scripted.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(scripted.status or 500, scripted.body, scripted.headers)
            return
        if len(events) > fake.max_batch:
            with fake.lock:
                fake.posts.append(Post(time.monotonic(), "/api/v1/events", len(events), 413))
            self._send(413, {"code": "batch_too_large", "message": f"at most {fake.max_batch} events"})
            return
        answer = fake.take_events(events)
        with fake.lock:
            fake.posts.append(Post(time.monotonic(), "/api/v1/events", len(events), 200))
        self._send(200, answer)
