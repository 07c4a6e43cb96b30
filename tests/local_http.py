"""The local HTTP servers the tests stand in for the outside with (fake providers, fake billing APIs): a threaded
server on 127.0.0.1, an ephemeral port, its handler reading the fake's state, JSON answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet handler whose `state` is the fake that serves it, answering JSON with `_send`."""

    state: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class LocalHttpServer:
    """A fake's server: `handler` (a JsonHandler subclass) answers with this object as its state. `start()`,
    `base` (http://127.0.0.1:PORT), `stop()`."""

    def __init__(self, handler: type[JsonHandler]) -> None:
        bound = type(handler.__name__, (handler,), {"state": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
