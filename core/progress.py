"""A progress bar for long-running management commands: drawn on a terminal, silent otherwise.

    bar = progress_bar(total=len(work), label="demo data", stream=self.stderr, enabled=not options["json"])
    for item in work:
        ...
        bar.advance()
    bar.close()

It draws only when enabled and the stream is a TTY (so `--json`, pipes, cron and CI stay quiet),
on the command's stderr, so stdout stays machine-readable.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, *, total: int, label: str, stream: TextIO | Any, enabled: bool) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.enabled = bool(enabled and callable(isatty) and isatty())
        self.done = 0
        self._drawn_at = 0.0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self.enabled and (time.monotonic() - self._drawn_at > 0.1 or self.done >= self.total):
            self._draw()

    def _draw(self) -> None:
        self._drawn_at = time.monotonic()
        if self.total:
            filled = WIDTH * self.done // self.total
            text = f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}"
        else:
            text = f"\r{self.label} {self.done}"
        self.stream.write(text, ending="") if _is_output_wrapper(self.stream) else self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("", ending="\n") if _is_output_wrapper(self.stream) else self.stream.write("\n")
            self.stream.flush()


def _is_output_wrapper(stream: Any) -> bool:
    from django.core.management.base import OutputWrapper

    return isinstance(stream, OutputWrapper)


def progress_bar(*, total: int, label: str, stream: TextIO | Any, enabled: bool = True) -> ProgressBar:
    return ProgressBar(total=total, label=label, stream=stream, enabled=enabled)
