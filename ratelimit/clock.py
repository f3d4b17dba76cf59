"""The clock the rate-limit core reads, injected so tests and the in-memory store can control time.

Time is integer microseconds since the Unix epoch: the unit Redis's TIME gives, so the Lua
scripts and the Python algorithms compute on the same integers and agree to the microsecond.
"""

from __future__ import annotations

import time
from typing import Protocol

MICROS = 1_000_000


class Clock(Protocol):
    def now_us(self) -> int:
        """Microseconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall-clock time (UTC epoch): windows must line up across replicas, so not a monotonic clock."""

    def now_us(self) -> int:
        return time.time_ns() // 1000


class ManualClock:
    """A clock that moves only when told to; for tests and the shared test vectors."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now_us = round(start * MICROS)

    def now_us(self) -> int:
        return self._now_us

    def set(self, seconds: float) -> None:
        self._now_us = round(seconds * MICROS)

    def advance(self, seconds: float) -> None:
        self._now_us += round(seconds * MICROS)
