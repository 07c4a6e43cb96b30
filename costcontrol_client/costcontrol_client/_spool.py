"""The local spool: events the server could not take yet, one JSON object per line.

Files, for a spool at `P`:
  P           appended to (by any process using the same path) under the lock P.lock;
  P.sending   the part being re-sent: P is renamed to it atomically under the lock, so
              writers go on appending to a fresh P meanwhile and nothing is lost;
  P.lock      an empty file locked with flock() by whoever appends or renames.
A re-send that fails half way rewrites P.sending without the lines the server took
(a temp file and os.replace: a crash leaves the old or the new file, never half of one).
A crash after a send and before that rewrite re-sends lines the server already has; the
server's idempotency keys make that harmless. Only one sender at a time re-sends P.sending
(a second flock on P.sending.lock, not waited for).

Where flock is missing (Windows) the locks are per process only: give each process its
own spool_path there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._http import json_default

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("costcontrol_client")


class SpoolFull(Exception):
    pass


class Spool:
    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int) -> None:
        self.path = Path(path)
        self.sending_path = self.path.with_name(self.path.name + ".sending")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._sender_lock_path = self.path.with_name(self.path.name + ".sending.lock")
        self.max_bytes = max_bytes
        self._thread_lock = threading.Lock()

    def after_fork(self) -> None:
        # The parent's sender may have held the lock at fork time: a held copy would never be released.
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self, path: Path, *, wait: bool = True) -> Iterator[bool]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            if fcntl is None:
                yield True
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, events: list[dict[str, Any]]) -> None:
        """Add events at the end of the spool. Raises SpoolFull past max_bytes, OSError if the disk fails."""
        data = "".join(json.dumps(event, default=json_default, separators=(",", ":")) + "\n" for event in events)
        with self._thread_lock, self._locked(self._lock_path):
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size + len(data) > self.max_bytes:
                raise SpoolFull(f"{self.path} would grow past {self.max_bytes} bytes")
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(data)

    def pending(self) -> bool:
        """Whether anything waits to be re-sent (cheap: two stat calls)."""
        for path in (self.path, self.sending_path):
            try:
                if path.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                pass
        return False

    def count(self) -> int:
        """Events waiting in the spool (reads the files; for tests and diagnostics)."""
        total = 0
        for path in (self.sending_path, self.path):
            with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as handle:
                total += sum(1 for line in handle if line.strip())
        return total

    @contextlib.contextmanager
    def sending(self) -> Iterator[bool]:
        """Hold the right to re-send (False: another process is re-sending now)."""
        with self._locked(self._sender_lock_path, wait=False) as got:
            yield got

    def claim(self) -> bool:
        """Move P to P.sending unless a leftover P.sending waits first. True if there is something to send."""
        with self._thread_lock, self._locked(self._lock_path):
            if self.sending_path.exists() and self.sending_path.stat().st_size > 0:
                return True
            if not self.path.exists() or self.path.stat().st_size == 0:
                return False
            os.replace(self.path, self.sending_path)
            return True

    def batches(self, batch_size: int) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """(events, offset after them) from P.sending, batch_size at a time; unreadable lines are skipped."""
        batch: list[dict[str, Any]] = []
        with open(self.sending_path, "rb") as handle:
            offset = 0
            for raw in handle:
                offset += len(raw)
                line = raw.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    # A torn line from a crash in the middle of a write: the rest is still good.
                    logger.error("costcontrol spool %s: skipping an unreadable line: %.200r", self.sending_path, line)
                    continue
                if not isinstance(event, dict):
                    continue
                batch.append(event)
                if len(batch) >= batch_size:
                    yield batch, offset
                    batch = []
            if batch:
                yield batch, offset

    def keep_from(self, offset: int) -> None:
        """Drop P.sending's first `offset` bytes (the server has them)."""
        tmp = self.sending_path.with_name(self.sending_path.name + ".tmp")
        with open(self.sending_path, "rb") as source, open(tmp, "wb") as target:
            source.seek(offset)
            _copy(source, target)
        os.replace(tmp, self.sending_path)

    def done(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.sending_path)


def _copy(source: IO[bytes], target: IO[bytes]) -> None:
    while chunk := source.read(1 << 20):
        target.write(chunk)
