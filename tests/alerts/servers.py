"""Real servers on 127.0.0.1 for delivery tests: an HTTP webhook receiver and an SMTP server.

Both can hold requests open (`Hold`): the sender waits inside its send, for as long as the test
needs (e.g. to kill the worker that is sending), and the held request is then dropped unanswered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Hold:
    """Holds the first `count` requests open without an answer until release() (or `limit` seconds);
    they are then dropped unanswered: the sender never learns they arrived."""

    def __init__(self, count: int = 1, limit: float = 60.0) -> None:
        self.count = count
        self.limit = limit
        self.held = 0
        self.arrived = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Whether this request is held (then it has arrived: `arrived` is set)."""
        with self._lock:
            if self.held >= self.count or self.released.is_set():
                return False
            self.held += 1
        self.arrived.set()
        return True

    def wait_arrived(self, timeout: float) -> bool:
        return self.arrived.wait(timeout)

    def wait_released(self) -> None:
        self.released.wait(self.limit)

    def release(self) -> None:
        self.released.set()


@dataclass
class WebhookReceiver:
    """Answers each POST with the next status of `script` (then 200), recording every request.
    With a `hold`, the first requests are held open and dropped unanswered (recorded as "dropped")."""

    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    hold: Hold | None = None

    def next_status(self) -> int:
        with self.lock:
            return self.script.pop(0) if self.script else 200

    @property
    def delivered(self) -> list[Received]:
        """Requests that were answered 2xx."""
        return [r for r in self.requests if r.headers.get("_status", "200").startswith("2")]


@contextmanager
def webhook_receiver(script: list[int] | None = None, hold: Hold | None = None) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(script=list(script or []), hold=hold)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if hold is not None and hold.take():
                headers = {k: v for k, v in self.headers.items()}
                headers["_status"] = "dropped"
                receiver.requests.append(Received(self.path, headers, body))
                hold.wait_released()
                self.close_connection = True  # no answer: the connection just closes
                return
            status = receiver.next_status()
            headers = {k: v for k, v in self.headers.items()}
            headers["_status"] = str(status)
            receiver.requests.append(Received(self.path, headers, body))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else b"try later")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        if hold is not None:
            hold.release()
        server.shutdown()
        server.server_close()


class MailSink:
    """Keeps every message the server accepted. With a `hold`, the first transactions are held at
    RCPT TO (before any message data) and then refused with 421: those messages never arrive."""

    def __init__(self, hold: Hold | None = None) -> None:
        self.messages: list[Any] = []
        self.hold = hold

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.hold is not None and self.hold.take():
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait_released)
            return "421 4.3.0 held by the test, closing"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(port: int = 0, handler: Any = None, hold: Hold | None = None) -> Iterator[tuple[Controller, MailSink]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd). port=0 picks a free one."""
    import socket

    if port == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    sink = MailSink(hold)
    controller = Controller(handler or sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, sink
    finally:
        if hold is not None:
            hold.release()
        controller.stop()
