"""A real `celery -A costcontrol worker` subprocess for the reliability suite: started, SIGKILLed and
started again by the tests, against the test database and a real Redis broker.

The worker runs the production settings (the only ones that send real email), configured from its
environment like any deployment. Its output goes to a log file the test prints when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from celery import Celery

REPO = Path(__file__).resolve().parents[2]
READY_MARK = " ready."


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """DATABASE_URL of a Django connection (the pytest-django test database, on PostgreSQL)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return children


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class CeleryWorker:
    """One worker node (prefork, one pool process). start() / kill() / start() again: same node name,
    same environment, a new process each time, so a restart is what an operator's supervisor does."""

    def __init__(self, *, env: Mapping[str, str], log_path: Path, name: str = "crash") -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.pool_pids: list[int] = []

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker is not running"
        return self.process.pid

    def start(self, timeout: float = 90.0) -> CeleryWorker:
        assert self.process is None or self.process.poll() is not None, "the worker runs already"
        self.starts += 1
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"\n===== worker start #{self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "costcontrol",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=1",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    f"--hostname={self.name}@%h",
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: cleanup reaches every process it forked
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if READY_MARK in self.log_path.read_bytes()[log_start:].decode(errors="replace"):
                self.pool_pids = _children(self.process.pid)
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the worker was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self, timeout: float = 15.0) -> list[int]:
        """SIGKILL the main worker process (an OOM kill, a lost node): no warm shutdown, nothing
        acknowledged or requeued. Returns the pool processes still alive `timeout` s later (Celery
        gives them PR_SET_PDEATHSIG=SIGKILL, so they die with it: an empty list)."""
        assert self.process is not None
        pool = _children(self.process.pid) or self.pool_pids
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pool):
            time.sleep(0.05)
        return [p for p in pool if _alive(p)]

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL to the whole process group if it lingers."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.process.poll() is None:
                self.process.wait(timeout=10)
            self.process = None

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextmanager
def celery_worker(*, env: Mapping[str, str], log_path: Path, name: str = "crash") -> Iterator[CeleryWorker]:
    """A worker, stopped (and its process group killed) on the way out, whatever happened."""
    worker = CeleryWorker(env=env, log_path=log_path, name=name)
    try:
        yield worker
    finally:
        worker.stop()


def send_task(broker_url: str, name: str, *args: Any) -> str:
    """Publish a task by name to the broker, as the application's after-commit hooks and beat do.
    Returns the task id."""
    app = Celery("reliability-client", broker=broker_url, set_as_current=False)
    app.conf.task_serializer = "json"
    try:
        return app.send_task(name, args=list(args)).id
    finally:
        app.close()
