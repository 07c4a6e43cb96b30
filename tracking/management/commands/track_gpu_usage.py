"""python manage.py track_gpu_usage [--once] [--interval S] [--count N]: the standalone GPU sampler.

Run it on a GPU host where no Celery worker runs (systemd unit deploy/systemd/costcontrol-gpu-tracker.service),
or rely on the beat task tracking.gpu_sample instead; both at once bill nothing twice.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.gpu import gpu_usage_sample

logger = logging.getLogger(__name__)


def _positive_seconds(raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise CommandError(f"--interval: {raw!r} is not a number of seconds") from None
    if not value.is_finite() or value <= 0:
        raise CommandError(f"--interval: must be a positive number of seconds, got {raw}")
    return value


class Command(BaseCommand):
    help = (
        "Sample every GPU through NVML and, in GPU burst mode, record the GPU time since each device's previous "
        "sample as busy and idle GPU-hours. Loops every --interval seconds until interrupted; --once samples once. "
        "Without a GPU or driver it prints one 'NVML not available' line and records nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Sample once and exit.")
        parser.add_argument(
            "--interval",
            default=None,
            help="Seconds between samples (default GPU_USAGE_CHECK_INTERVAL_SECONDS = "
            f"{settings.GPU_USAGE_CHECK_INTERVAL_SECONDS}). A gap of more than two intervals is billed as two.",
        )
        parser.add_argument("--count", type=int, default=None, help="Stop after this many samples.")

    def handle(self, *args: Any, **options: Any) -> None:
        interval = (
            _positive_seconds(options["interval"])
            if options["interval"] is not None
            else Decimal(settings.GPU_USAGE_CHECK_INTERVAL_SECONDS)
        )
        count = 1 if options["once"] else options["count"]
        if count is not None and count < 1:
            raise CommandError(f"--count: must be at least 1, got {count}")
        stop = threading.Event()
        previous: dict[int, Any] = {}
        if count != 1 and threading.current_thread() is threading.main_thread():
            # systemd stops the service with SIGTERM: finish the sample in progress, then exit 0.
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: stop.set())
        try:
            done = 0
            while not stop.is_set():
                started = time.monotonic()
                self._sample(interval, survive=count != 1)
                done += 1
                if count is not None and done >= count:
                    break
                stop.wait(max(0.0, float(interval) - (time.monotonic() - started)))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _sample(self, interval: Decimal, *, survive: bool) -> None:
        # NVML errors never raise (gpu_usage_sample logs them); this is for the database.
        try:
            run = gpu_usage_sample(interval_seconds=interval)
        except Exception:
            if not survive:
                raise
            # A long-running sampler outlives a database outage; the next sample bills the time (up to the cap).
            logger.exception("GPU sample failed; trying again in %s s", f"{interval.normalize():f}")
            return
        for line in run.summary_lines():
            self.stdout.write(line)
