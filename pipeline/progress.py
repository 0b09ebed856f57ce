"""Progress reporting for long stages, without tying stage code to a terminal.

Stages take a :class:`Progress`; the CLI passes a rich progress bar, Airflow tasks and tests get
:class:`LogProgress`, which logs a line with rate and ETA at most every ``every_seconds``.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("pipeline.progress")


class Progress(Protocol):
    def start(self, description: str, total: int, unit: str = "items") -> None: ...

    def advance(self, items: int = 1, frames: int = 0) -> None: ...

    def finish(self) -> None: ...


class LogProgress:
    """Logs ``description: done/total (rate/s, ETA)`` periodically."""

    def __init__(self, every_seconds: float = 15.0) -> None:
        self.every_seconds = every_seconds
        self.description = ""
        self.total = 0
        self.unit = "items"
        self.done = 0
        self.frames = 0
        self._started = self._last = 0.0

    def start(self, description: str, total: int, unit: str = "items") -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = self.frames = 0
        self._started = self._last = time.monotonic()

    def advance(self, items: int = 1, frames: int = 0) -> None:
        self.done += items
        self.frames += frames
        now = time.monotonic()
        if now - self._last >= self.every_seconds:
            self._last = now
            log.info(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        frames = f", {self.frames / elapsed:.1f} frames/s" if self.frames else ""
        return (
            f"{self.description}: {self.done}/{self.total} {self.unit} "
            f"({rate:.1f}/s{frames}, ETA {eta:.0f} s)"
        )

    def finish(self) -> None:
        if self.total:
            log.info(self.line(time.monotonic()))


class NullProgress:
    def start(self, description: str, total: int, unit: str = "items") -> None:
        pass

    def advance(self, items: int = 1, frames: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass
