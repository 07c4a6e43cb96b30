"""gunicorn settings of docker/start/web (environment: WEB_CONCURRENCY, WEB_TIMEOUT)."""

from __future__ import annotations

import os
from typing import Any

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
timeout = int(os.environ.get("WEB_TIMEOUT", "60"))
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = "*"  # behind the proxy of docker/compose.yml only


def child_exit(server: Any, worker: Any) -> None:
    """A worker's django-prometheus metrics files leave with it (prometheus_client multiprocess mode)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
