"""The costcontrol client: non-blocking usage recording and synchronous budget calls.

Delivery, in short: `record()` stamps the event with an idempotency key and a time and puts
it on a bounded in-memory queue; one daemon thread sends the queue in batches. A batch that
fails on the network, a 5xx, 408 or 429 is retried with exponential backoff and jitter
(Retry-After honoured); a batch still failing after `max_retries` goes to the spool file and
the client goes "offline": from then on batches go straight to the spool and the server is
probed now and then (backoff again) by re-sending the spool. The first success re-sends the
whole spool. The server dedups on the idempotency key, so a batch sent twice (a retry after
a lost answer, a spool re-sent after a crash) is counted once.

Events the server rejects for good (a 4xx other than 401, 408 and 429, or rejected one by one in
a batch) are not retried and not dropped: each goes to the dead-letter file with the server's
reason. The sender asks the server once for the key's service (GET /api/v1/key), so that
`record()` refuses an event for another service at once instead of sending it to be rejected.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import random
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._http import NETWORK_ERRORS, Response, Transport
from ._spool import Spool, SpoolFull
from ._version import __version__
from .errors import CostcontrolError, ServiceMismatch, Unavailable, error_from_response

logger = logging.getLogger("costcontrol_client")
# A library configures no logging: the application's handlers decide what is shown.
logger.addHandler(logging.NullHandler())

EVENTS_PATH = "/api/v1/events"
KEY_PATH = "/api/v1/key"
MAX_BATCH = 1000  # the server's limit per POST /api/v1/events

# The API's EventIn fields (it refuses any other): checked in record(), where a typo can still be fixed.
EVENT_FIELDS = frozenset(
    {
        "provider",
        "model",
        "operation",
        "variant",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "embedding_tokens",
        "images",
        "requests",
        "seconds",
        "gpu_hours",
        "cache_write_1h_tokens",
        "input_audio_tokens",
        "output_audio_tokens",
        "cached_audio_tokens",
        "cache_write_audio_tokens",
        "input_image_tokens",
        "output_image_tokens",
        "cached_image_tokens",
        "input_video_tokens",
        "output_video_tokens",
        "input_characters",
        "output_characters",
        "input_images",
        "pixels",
        "pages",
        "web_searches",
        "maps_queries",
        "input_audio_seconds",
        "input_video_seconds",
        "sessions",
        "messages",
        "citation_tokens",
        "guardrail_units",
        "credits",
        "service_tier",
        "region",
        "speed",
        "amount",
        "currency",
        "occurred_at",
        "service",
        "subject",
        "job",
        "tags",
        "outcome",
        "duration_ms",
        "is_estimate",
        "reported_amount",
        "reported_by",
        "usage_unavailable",
        "idempotency_key",
    }
)
# What a usage (settle(usage=...)) may hold: the event's pricing fields, no amount, time or attribution.
USAGE_FIELDS = frozenset(
    EVENT_FIELDS
    - {
        "amount",
        "currency",
        "occurred_at",
        "service",
        "subject",
        "job",
        "tags",
        "outcome",
        "duration_ms",
        "is_estimate",
        "reported_amount",
        "reported_by",
        "usage_unavailable",
        "idempotency_key",
    }
)
# Decimal on the server, which refuses floats (binary fractions are not money).
_DECIMAL_FIELDS = (
    "amount",
    "reported_amount",
    "seconds",
    "gpu_hours",
    "input_audio_seconds",
    "input_video_seconds",
    "credits",
)
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Refused because of the credentials, not the events: kept in the spool for a fixed key. (A 403 is
# the events': the server answers it to an event the key may not record, one for another service.)
_AUTH_STATUSES = frozenset({401})

_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def default_spool_path(url: str, api_key: str) -> Path:
    """Under the user's cache dir, one file per (server, key): another app's events are never sent with our key."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(f"{url}\n{api_key}".encode()).hexdigest()[:16]
    return base / "costcontrol" / f"spool-{digest}.jsonl"


def default_dead_letter_path(spool_path: str | os.PathLike[str]) -> Path:
    """Next to the spool: spool-<hash>.jsonl -> spool-<hash>.dead-letters.jsonl."""
    path = Path(spool_path)
    return path.with_name(f"{path.stem if path.suffix == '.jsonl' else path.name}.dead-letters.jsonl")


def _money(value: Any, name: str) -> str:
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{name} must be a Decimal, int or decimal string, not {type(value).__name__}")
    if isinstance(value, Decimal | int | str):
        return str(value)
    raise TypeError(f"{name} must be a Decimal, int or decimal string, not {type(value).__name__}")


def _timestamp(value: datetime | str, name: str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must carry a time zone (a naive datetime is ambiguous)")
        return value.isoformat()
    return str(value)


class Receipt(str):
    """What `record()` returns: the event's idempotency key (it is that string), and, once the server
    has answered for it, what the event was priced at.

    `wait(timeout)` asks the sender to send now and blocks until the answer (or the spool) came;
    then `status` is "accepted", "duplicate" (the key was recorded before: the first entry's
    amount), "rejected" (see `errors`), "spooled" (not sent yet: kept on disk for later) or
    "dropped"; `amount` (Decimal), `currency` and `pricing_status` ("priced", "explicit",
    "unpriced") are the ledger entry's. Nothing waits unless you call `wait()`.
    """

    # Class-level until answered: record() sets only the client (it is on the caller's clock).
    status: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    pricing_status: str | None = None
    entry_id: int | None = None
    errors: dict[str, Any] | None = None
    _client: Client

    def __new__(cls, key: str, client: Client) -> Receipt:
        receipt = super().__new__(cls, key)
        receipt._client = client
        return receipt

    @property
    def key(self) -> str:
        return str(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Send now and wait for the server's answer; False if `timeout` ran out first."""
        client = self._client
        if self.status is None and not client._worker.is_alive():
            client._spool_queue("the sender thread is not running")
        client._wake.set()
        with client._progress:
            return client._progress.wait_for(lambda: self.status is not None, timeout)

    def _resolve(self, status: str, result: Mapping[str, Any] | None = None) -> None:
        """Under the client's lock."""
        self.status = status
        if result:
            amount = result.get("amount")
            self.amount = Decimal(amount) if isinstance(amount, str) else None
            self.currency = result.get("currency")
            self.pricing_status = result.get("pricing_status")
            self.entry_id = result.get("id")
            self.errors = result.get("errors")

    def __reduce__(self) -> Any:  # pickles (and copies) as the plain key
        return (str, (str(self),))


# The receipts of the calls made inside `Client.receipts()` (per thread and asyncio task).
_collecting: ContextVar[list[Receipt] | None] = ContextVar("costcontrol_receipts", default=None)


class Client:
    """Records usage in the background and answers budget questions synchronously. Thread-safe.

    One Client per process and server is enough; share it between threads. `close()` (or the
    exit hook) sends what is left or writes it to the spool.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        service: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        spool_path: str | os.PathLike[str] | None = None,
        dead_letter_path: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_spool_bytes: int = 256 * 1024 * 1024,
        close_timeout: float = 10.0,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
        if max_queue < 1 or max_retries < 0 or flush_interval <= 0:
            raise ValueError("max_queue >= 1, max_retries >= 0 and flush_interval > 0 are required")
        self.url = url.rstrip("/")
        self.service = service
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.close_timeout = close_timeout
        self._timeout = timeout
        self._api_key = api_key
        self._transport = self._new_transport()
        self.spool = Spool(spool_path or default_spool_path(self.url, api_key), max_bytes=max_spool_bytes)
        # Events the server rejected for good, each with its reason (JSON lines, appended as the spool is).
        self.dead_letters = Spool(
            dead_letter_path or default_dead_letter_path(self.spool.path), max_bytes=max_spool_bytes
        )
        # The key's service, from GET /api/v1/key (the sender thread asks once): record() checks events against it.
        self._key_service: str | None = None
        self._stats = dict.fromkeys(
            (
                "recorded",
                "accepted",
                "duplicates",
                "rejected",
                "dead_letters",
                "dropped",
                "spooled",
                "resent",
                "retries",
            ),
            0,
        )
        self._setup_state()
        self._closed = False
        _clients.add(self)
        atexit.register(self._at_exit)
        self._start_worker()

    def _setup_state(self) -> None:
        """Locks, queue and counters (again in a forked child, whose copies may be held by dead threads)."""
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._queue: deque[dict[str, Any]] = deque()
        # Each queued or in-flight event's receipt, by id() of its dict (alive until resolved).
        self._receipts: dict[int, Receipt] = {}
        self._enqueued = 0  # events ever put on the queue
        self._finished = 0  # of those, taken off and sent, spooled or dropped (FIFO: flush waits on this)
        self._inflight: list[dict[str, Any]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._abort = threading.Event()  # close() ran out of time: stop waiting, spool what is left
        self._offline = False
        self._next_probe = 0.0
        self._probe_failures = 0
        self._last_retry_after: float | None = None
        self._next_key_try = 0.0  # when the sender asks for the key's service (again); inf: never
        self._key_failures = 0

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._run, name="costcontrol-sender", daemon=True)
        self._worker.start()

    # --- recording ---------------------------------------------------------------------

    def record(self, **event: Any) -> Receipt:
        """Queue one usage event for the background sender; returns its Receipt: the idempotency key
        (a str) that, after `receipt.wait()`, holds the amount the server priced it at.

        Never blocks on the network. Raises ValueError/TypeError at once for an event the server
        would refuse for sure (no provider or model, unknown fields, floats for money, a `service`
        other than the API key's: ServiceMismatch, once the sender has learnt the key's service),
        since a dropped event found in a log later is worse than an exception now.
        """
        if not event.get("provider") or not event.get("model"):
            raise ValueError("an event needs a provider and a model")
        if not EVENT_FIELDS.issuperset(event):
            raise TypeError(f"unknown event fields: {sorted(set(event) - EVENT_FIELDS)}")
        for name in _DECIMAL_FIELDS:
            if name in event and event[name] is not None:
                event[name] = _money(event[name], name)
        key = event.get("idempotency_key")
        if not key:
            key = event["idempotency_key"] = uuid.uuid4().hex
        occurred_at = event.get("occurred_at")
        if occurred_at is None:
            # A datetime, not its text: isoformat() costs the caller more than now() does, so
            # the sender thread writes it (json_default) when it sends or spools the event.
            event["occurred_at"] = datetime.now(UTC)
        elif isinstance(occurred_at, datetime) and occurred_at.tzinfo is None:
            raise ValueError("occurred_at must carry a time zone (a naive datetime is ambiguous)")
        if self.service and not event.get("service"):
            event["service"] = self.service
        key_service = self._key_service
        if key_service is not None and event.get("service") and event["service"] != key_service:
            raise _service_mismatch(event["service"], key_service, default=event["service"] == self.service)
        receipt = Receipt(key, self)
        with self._lock:
            self._stats["recorded"] += 1
            queued = len(self._queue) < self.max_queue and not self._closed
            if queued:
                self._queue.append(event)
                self._receipts[id(event)] = receipt
                self._enqueued += 1
                size = len(self._queue)
        collecting = _collecting.get()
        if collecting is not None:
            collecting.append(receipt)
        if not queued:
            # Full (the server is slow or down) or closed: to disk rather than lost or blocking.
            with self._lock:
                self._receipts[id(event)] = receipt
            self._spool_events([event], reason="the queue is full" if not self._closed else "the client is closed")
        elif size >= self.batch_size:
            self._wake.set()
        return receipt

    @contextlib.contextmanager
    def receipts(self) -> Iterator[list[Receipt]]:
        """Collect the receipts of what is recorded inside the block, by this thread or asyncio task,
        wrapped SDK calls included: ``with cc.receipts() as got: openai.chat.completions.create(...)``,
        then ``got[0].wait(5)`` and ``got[0].amount``."""
        collected: list[Receipt] = []
        token = _collecting.set(collected)
        try:
            yield collected
        finally:
            _collecting.reset(token)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything recorded so far is sent (or spooled). False if `timeout` ran out first."""
        with self._lock:
            target = self._enqueued
        if not self._worker.is_alive():
            self._spool_queue("the sender thread is not running")
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: self._finished >= target, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop the sender. What cannot be sent in `timeout` seconds is spooled."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
        atexit.unregister(self._at_exit)
        self._stopping.set()
        self._wake.set()
        self._worker.join(timeout)
        if self._worker.is_alive():
            # Out of time: the sender stops waiting (backoff, probes) and spools what it holds;
            # give an HTTP request in flight its timeout to end.
            self._abort.set()
            self._wake.set()
            self._worker.join(self._timeout + 1.0)
        if self._worker.is_alive():
            logger.error("costcontrol: the sender thread did not stop; spooling what it still held")
            with self._lock:
                inflight = list(self._inflight)
            if inflight:
                self._spool_events(inflight, reason="the sender did not stop")  # may be sent too: deduped
        # Empty after a normal stop; not if the sender thread died or never drained.
        self._spool_queue("the sender is stopped")
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close(timeout=self.close_timeout)

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: recorded, accepted, duplicates, rejected, dead_letters (rejected events
        written to the dead-letter file), dropped, spooled, resent, retries."""
        with self._lock:
            return dict(self._stats)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _after_fork(self) -> None:
        # A forked child inherits the parent's queue (the parent sends those) but not its thread.
        with contextlib.suppress(Exception):
            self._setup_state()
            self.spool.after_fork()
            self._transport = self._new_transport()
            self._start_worker()

    def _new_transport(self) -> Transport:
        return Transport(self.url, self._api_key, timeout=self._timeout, user_agent=f"costcontrol-client/{__version__}")

    # --- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            # One try at start-up: a server still down sends us offline (spooling, probing) at once.
            self._resend_spool(attempts=1)
            while True:
                self._learn_key_service()
                self._wake.wait(self._wait_time())
                self._wake.clear()
                stopping = self._stopping.is_set()
                # Offline, probe when the backoff has passed, and always once on close: the server
                # may be back, and the queue then goes out rather than to the spool.
                if self._offline and not self._abort.is_set() and (stopping or time.monotonic() >= self._next_probe):
                    self._resend_spool(attempts=1)
                self._drain()
                if stopping and not self._queue:
                    return
        except Exception:  # the thread must not die silently with events queued
            logger.exception("costcontrol: the sender thread failed; spooling the queue")
            self._spool_queue("the sender thread failed")

    def _learn_key_service(self) -> None:
        """Ask the server for the key's service, once it answers (never while offline or stopping)."""
        if self._key_service is not None or self._offline or self._stopping.is_set():
            return
        if time.monotonic() < self._next_key_try:
            return
        try:
            self.key()
        except CostcontrolError as exc:
            if exc.status is None or exc.status in _RETRY_STATUSES or exc.status in _AUTH_STATUSES:
                self._next_key_try = time.monotonic() + self._backoff(self._key_failures)
                self._key_failures += 1
            else:  # a server without GET /api/v1/key: the server alone checks the service then
                self._next_key_try = math.inf
                logger.info("costcontrol: the server does not tell the API key's service (%s)", exc)

    def _wait_time(self) -> float:
        if self._offline:
            return max(0.0, min(self.flush_interval, self._next_probe - time.monotonic()))
        return self.flush_interval

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            count = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._inflight = batch
        return batch

    def _finish(self, batch: list[dict[str, Any]]) -> None:
        with self._progress:
            self._finished += len(batch)
            self._inflight = []
            self._progress.notify_all()

    def _drain(self) -> None:
        while batch := self._take():
            try:
                if self._offline or self._abort.is_set():
                    self._spool_events(batch, reason="the server is unreachable")
                    continue
                if self._deliver(batch, attempts=1 + self.max_retries):
                    if self.spool.pending():
                        self._resend_spool(attempts=1 + self.max_retries)
                else:
                    self._spool_events(batch, reason=f"the server still failed after {self.max_retries} retries")
                    self._go_offline(self._last_retry_after)
            finally:
                self._finish(batch)

    def _go_offline(self, retry_after: float | None = None) -> None:
        if not self._offline:
            logger.warning("costcontrol: the server is unreachable; spooling events to %s", self.spool.path)
        self._offline = True
        delay = retry_after if retry_after is not None else self._backoff(self._probe_failures)
        self._probe_failures += 1
        self._next_probe = time.monotonic() + delay

    def _go_online(self) -> None:
        if self._offline:
            logger.info("costcontrol: the server is back")
        self._offline = False
        self._probe_failures = 0

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with "equal jitter" (half fixed, half random) so senders spread out."""
        delay = min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 32)))
        return delay / 2 + random.uniform(0, delay / 2)

    def _resend_spool(self, *, attempts: int) -> None:
        """Send the spool in batches; on failure keep what is left and go (stay) offline."""
        if not self.spool.pending():
            self._go_online()
            return
        with self.spool.sending() as mine:
            if not mine:  # another process re-sends this spool now
                self._probe_later()
                return
            try:
                while self.spool.claim():
                    sent_to = 0
                    batches = self.spool.batches(self.batch_size)
                    for batch, offset in batches:
                        if not self._deliver(batch, attempts=attempts, resending=True):
                            batches.close()  # the file is closed before it is rewritten
                            if sent_to:
                                self.spool.keep_from(sent_to)
                            self._go_offline(self._last_retry_after)
                            return
                        sent_to = offset
                    self.spool.done()
            except OSError:
                logger.exception("costcontrol: cannot read the spool %s", self.spool.path)
                self._probe_later()
                return
        self._go_online()

    def _probe_later(self) -> None:
        # Offline, the loop probes when _next_probe has passed: leaving it in the past would spin.
        if self._offline:
            self._next_probe = time.monotonic() + self._backoff(self._probe_failures)

    def _deliver(self, batch: list[dict[str, Any]], *, attempts: int, resending: bool = False) -> bool:
        """POST one batch. True when the server has dealt with it (taken, deduped, rejected or refused for good)."""
        self._last_retry_after = None
        for attempt in range(attempts):
            retry_after = None
            try:
                response = self._transport.request("POST", EVENTS_PATH, {"events": batch})
            except NETWORK_ERRORS as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status < 300:
                    self._take_results(batch, response, resending=resending)
                    return True
                if response.status == 413 and len(batch) > 1:
                    # The server takes fewer per request than we send: halve and go on.
                    half = len(batch) // 2
                    return self._deliver(batch[:half], attempts=attempts, resending=resending) and self._deliver(
                        batch[half:], attempts=attempts, resending=resending
                    )
                if response.status in _AUTH_STATUSES:
                    logger.error(
                        "costcontrol: the server refused the API key (%s); %d events kept in the spool",
                        error_from_response(response.status, response.body, None),
                        len(batch),
                    )
                    return False
                if response.status not in _RETRY_STATUSES:
                    # Refused for good: sending it again gets the same answer. Kept with the reason.
                    error = error_from_response(response.status, response.body, None)
                    errors = error.errors or {"__all__": [error.message]}
                    self._resolve(
                        batch,
                        "rejected",
                        [{"index": i, "status": "rejected", "errors": errors} for i in range(len(batch))],
                    )
                    with self._lock:
                        self._stats["rejected"] += len(batch)
                    logger.warning(
                        "costcontrol: the server refused a batch of %d events (%s); kept in %s",
                        len(batch),
                        error,
                        self.dead_letters.path,
                    )
                    self._dead_letter(
                        [
                            _dead_letter_line(
                                event, status=error.status, code=error.code, message=error.message, errors=errors
                            )
                            for event in batch
                        ]
                    )
                    return True
                problem = f"HTTP {response.status}"
                retry_after = response.retry_after
            self._last_retry_after = retry_after
            if attempt + 1 >= attempts:
                logger.warning("costcontrol: sending %d events failed (%s)", len(batch), problem)
                return False
            delay = self._backoff(attempt)
            if retry_after is not None:
                if retry_after > self.backoff_max:
                    # Longer than we wait in line: spool now and probe again when the server said.
                    logger.warning("costcontrol: the server asks to wait %.0f s (%s)", retry_after, problem)
                    return False
                delay = max(delay, retry_after)
            with self._lock:
                self._stats["retries"] += 1
            logger.info("costcontrol: sending %d events failed (%s); retrying in %.2f s", len(batch), problem, delay)
            if self._abort.wait(delay):
                return False
        return False  # pragma: no cover - the loop returns

    def _take_results(self, batch: list[dict[str, Any]], response: Response, *, resending: bool) -> None:
        body = response.body if isinstance(response.body, dict) else {}
        self._resolve(batch, "sent", body.get("results"))
        accepted = int(body.get("accepted") or 0)
        duplicates = int(body.get("duplicates") or 0)
        rejected = int(body.get("rejected") or 0)
        dead: list[dict[str, Any]] = []
        for result in body.get("results") or ():
            if not isinstance(result, dict) or result.get("status") != "rejected":
                continue
            index = result.get("index")
            if not (isinstance(index, int) and 0 <= index < len(batch)):
                continue
            message = _field_errors(result.get("errors"))
            logger.warning(
                "costcontrol: the server rejected event %s (key %s): %s; kept in %s",
                index,
                batch[index].get("idempotency_key"),
                message,
                self.dead_letters.path,
            )
            code = str(result.get("code") or "rejected")
            errors = result.get("errors") if isinstance(result.get("errors"), dict) else None
            dead.append(
                _dead_letter_line(batch[index], status=response.status, code=code, message=message, errors=errors)
            )
        if dead:
            self._dead_letter(dead)
        with self._lock:
            self._stats["accepted"] += accepted
            self._stats["duplicates"] += duplicates
            self._stats["rejected"] += rejected
            if resending:
                self._stats["resent"] += len(batch)

    def _resolve(self, events: list[dict[str, Any]], status: str, results: Any = None) -> None:
        """Give the receipts of these events their answer: `results` (the server's, by index) or `status`."""
        by_index = {}
        if isinstance(results, list):
            by_index = {r.get("index"): r for r in results if isinstance(r, dict)}
        with self._progress:
            if not self._receipts:
                return
            for index, event in enumerate(events):
                receipt = self._receipts.pop(id(event), None)
                if receipt is not None:
                    result = by_index.get(index)
                    receipt._resolve(str(result.get("status") or status) if result else status, result)
            self._progress.notify_all()

    def _dead_letter(self, letters: list[dict[str, Any]]) -> None:
        """Keep rejected events with their reasons in the dead-letter file: never only in a log."""
        try:
            self.dead_letters.append(letters)
        except (SpoolFull, OSError, TypeError, ValueError) as exc:
            with self._lock:
                self._stats["dropped"] += len(letters)
            logger.error(
                "costcontrol: LOST %d rejected events: the dead-letter file %s failed: %s",
                len(letters),
                self.dead_letters.path,
                exc,
            )
            return
        with self._lock:
            self._stats["dead_letters"] += len(letters)

    def _dead_letter_refused(self, event: Mapping[str, Any], error: ValueError | TypeError) -> None:
        """Keep an event that record() refused where no caller sees the exception (the SDK wrappers)."""
        errors = {getattr(error, "field", "__all__"): [str(error)]}
        code = "service_mismatch" if isinstance(error, ServiceMismatch) else "refused_by_client"
        self._dead_letter([_dead_letter_line(dict(event), status=None, code=code, message=str(error), errors=errors)])

    def _spool_events(self, events: list[dict[str, Any]], *, reason: str) -> None:
        try:
            self.spool.append(events)
        except (SpoolFull, OSError) as exc:
            self._resolve(events, "dropped")
            with self._lock:
                self._stats["dropped"] += len(events)
            logger.error("costcontrol: LOST %d events (%s) and the spool failed: %s", len(events), reason, exc)
            return
        self._resolve(events, "spooled")
        with self._lock:
            self._stats["spooled"] += len(events)
        logger.debug("costcontrol: spooled %d events (%s)", len(events), reason)

    def _spool_queue(self, reason: str) -> None:
        with self._progress:
            events = list(self._queue)
            self._queue.clear()
            self._finished += len(events)
            self._progress.notify_all()
        if events:
            self._spool_events(events, reason=reason)

    # --- synchronous calls ---------------------------------------------------------------

    def _call(self, method: str, path: str, payload: Any = None, *, query: dict[str, str] | None = None) -> Any:
        try:
            response = self._transport.request(method, path, payload, query=query)
        except NETWORK_ERRORS as exc:
            raise Unavailable(f"cannot reach {self.url}: {exc}", code="unreachable") from exc
        if 200 <= response.status < 300:
            return response.body
        raise error_from_response(response.status, response.body, response.retry_after)

    def check(self, scope: str, amount: Decimal | str | int) -> dict[str, Any]:
        """Would spending `amount` in `scope` stay within its budgets? {"allowed": bool, "budgets": [...]}."""
        return self._call("POST", "/api/v1/budgets/check", {"scope": scope, "amount": _money(amount, "amount")})

    def reserve(
        self, scopes: str | Iterable[str], amount: Decimal | str | int, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """Hold `amount` against the budgets of `scopes`. Raises BudgetExceeded when a hard limit says no."""
        payload: dict[str, Any] = {
            "scopes": [scopes] if isinstance(scopes, str) else list(scopes),
            "amount": _money(amount, "amount"),
        }
        if ttl_seconds is not None:
            payload["ttl_seconds"] = ttl_seconds
        return self._call("POST", "/api/v1/budgets/reserve", payload)

    def settle(
        self,
        reservation_id: int | str,
        actual: Decimal | str | int | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Settle a reservation with the real cost: `actual` (an amount), or the call's `usage`
        (provider, model, quantities, service_tier, ... as for record()) for the server to price
        with the price recording it would get. Exactly one of the two. A usage the server cannot
        price raises InvalidRequest naming the missing rule; nothing is settled then."""
        if (actual is None) == (usage is None):
            raise ValueError("settle() takes either actual (an amount) or usage (the call's usage), not both")
        if actual is not None:
            payload: dict[str, Any] = {"actual": _money(actual, "actual")}
        else:
            assert usage is not None
            if not USAGE_FIELDS.issuperset(usage):
                raise TypeError(f"unknown usage fields: {sorted(set(usage) - USAGE_FIELDS)}")
            payload = {
                "usage": {
                    name: _money(value, name) if name in _DECIMAL_FIELDS else value
                    for name, value in usage.items()
                    if value is not None
                }
            }
        return self._call("POST", f"/api/v1/reservations/{reservation_id}/settle", payload)

    def release(self, reservation_id: int | str) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/reservations/{reservation_id}/release", {})

    def spend(
        self, scope: str, start: datetime | str, end: datetime | str, group_by: str | None = None
    ) -> dict[str, Any]:
        query = {"scope": scope, "from": _timestamp(start, "start"), "to": _timestamp(end, "end")}
        if group_by:
            query["group_by"] = group_by
        return self._call("GET", "/api/v1/spend", query=query)

    def budgets(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/api/v1/budgets")
        return body["budgets"] if isinstance(body, dict) and "budgets" in body else body

    def key(self) -> dict[str, Any]:
        """What the server says about this client's API key: name, prefix, service, team, scopes,
        rate_limit_per_minute, expires_at. The answer is kept: record() then refuses another service."""
        body = self._call("GET", KEY_PATH)
        if isinstance(body, dict) and isinstance(body.get("service"), str):
            self._key_service = body["service"]
        return body

    @property
    def key_service(self) -> str | None:
        """The API key's service once the server told it (see key()); None until then."""
        return self._key_service


def _service_mismatch(service: str, key_service: str, *, default: bool) -> ServiceMismatch:
    source = "the client's default service" if default else "service"
    return ServiceMismatch(
        f"service: {source} {service!r} is not this API key's service {key_service!r}; the server would "
        f"reject the event (record with service={key_service!r}, or use a key of service {service!r})",
        service=service,
        key_service=key_service,
    )


def _dead_letter_line(
    event: Mapping[str, Any], *, status: int | None, code: str, message: str, errors: dict[str, Any] | None
) -> dict[str, Any]:
    """One line of the dead-letter file: when, the server's reason, and the event as it was sent."""
    return {
        "rejected_at": datetime.now(UTC).isoformat(),
        "status": status,
        "code": code,
        "message": message,
        "errors": errors,
        "event": event,
    }


def _field_errors(errors: Any) -> str:
    if not isinstance(errors, dict) or not errors:
        return "no reason given"
    return "; ".join(
        f"{field}: {', '.join(map(str, messages)) if isinstance(messages, list) else messages}"
        for field, messages in errors.items()
    )


def _reinit_after_fork() -> None:
    for client in list(_clients):
        if not client._closed:
            client._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
