"""Where a training process's time goes before its first step has run: a clock that takes the
phases in turn, and the seconds since the process started (its imports come first)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Laps:
    """Seconds of each phase, in the order taken: `lap(name)` ends the phase that began at the last
    lap (or at creation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


def process_seconds() -> float | None:
    """Wall seconds since this process started (Linux: /proc/self/stat's start time, in clock
    ticks since boot); None where that is not known (macOS, Windows)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
