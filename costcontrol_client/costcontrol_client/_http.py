"""A small keep-alive JSON-over-HTTP transport on the standard library.

Why `http.client` and not `requests`/`httpx`: the client is installed into other teams'
services, where every dependency is one more version to clash with theirs; our needs are
one host, JSON bodies, a timeout and keep-alive, which `http.client` covers in ~100 lines.
(`urllib.request` would also do, but opens a new connection, and a TLS handshake, per call:
too slow for `check()` in front of every model call.) Not supported: HTTP proxies from the
environment; the costcontrol server is expected to be reachable directly.
"""

from __future__ import annotations

import http.client
import json
import select
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

from .errors import parse_retry_after

# Errors that mean "no usable answer came": retried by the background sender, raised as
# Unavailable by the synchronous calls. http.client.HTTPException covers a malformed reply.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=json_default, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # decoded JSON, or the text when it was not JSON
    retry_after: float | None


class Transport:
    """One keep-alive connection per thread to the costcontrol server."""

    def __init__(self, url: str, api_key: str, *, timeout: float, user_agent: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()
        self._ssl_context = ssl.create_default_context() if self._https else None

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if not _closed_by_peer(conn):
                return conn
            # The server closed it while idle: a request sent on it would fail, and a POST
            # that fails cannot be told apart from one that arrived. A fresh one, then.
            self._drop(conn)
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl_context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)

    def request(self, method: str, path: str, payload: Any = None, *, query: dict[str, str] | None = None) -> Response:
        """Send one request; raises one of NETWORK_ERRORS when no answer came."""
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        body = None if payload is None else dumps(payload)
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            raw = conn.getresponse()
            data = raw.read()
        except BaseException:
            self._drop(conn)
            raise
        if raw.will_close:
            self._drop(conn)
        return Response(raw.status, _decode(data), parse_retry_after(raw.getheader("Retry-After")))

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or sent junk)."""
    sock = conn.sock
    if sock is None:
        return False  # http.client connects again by itself
    try:
        if hasattr(select, "poll"):  # select() fails past fd 1024, which busy servers reach
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")
