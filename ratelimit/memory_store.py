"""Counters in this process's memory: the backend without Redis, and the `local` fallback.

`apply` never awaits, so on one event loop the checks of one call are atomic with respect to every
other call, which is what makes it exact under asyncio concurrency without a lock. Keys expire like
the Redis store's (see algorithms.py); expired keys are dropped as time passes, so memory stays
bounded by the keys touched within the longest window.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ratelimit.algorithms import fixed_window, sliding_window, token_bucket, window_key, window_start
from ratelimit.clock import MICROS, Clock, SystemClock
from ratelimit.rules import FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET
from ratelimit.store import Check, Outcome


class MemoryStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._values: dict[str, tuple[int, int]] = {}  # storage key -> (value, expires_at_us)
        self._expiries: list[tuple[int, str]] = []  # heap of (expires_at_us, key); may hold stale entries

    def __len__(self) -> int:
        return len(self._values)

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        return self.apply_now(checks)

    def apply_now(self, checks: Sequence[Check]) -> list[Outcome]:
        """The synchronous core of `apply`, for callers already on the loop's thread."""
        now = self._clock.now_us()
        self._expire(now)
        return [self._apply_one(check, now) for check in checks]

    async def close(self) -> None:
        self._values.clear()
        self._expiries.clear()

    def _apply_one(self, check: Check, now: int) -> Outcome:
        if check.algorithm == TOKEN_BUCKET:
            tat, outcome = token_bucket(self._get(check.key), now, check)
            if tat > now:
                self._set(check.key, tat, tat)
            return outcome
        start = window_start(now, check.window)
        key = window_key(check.key, start)
        count = self._get(key)
        if check.algorithm == SLIDING_WINDOW:
            previous = self._get(window_key(check.key, start - check.window))
            new_count, outcome = sliding_window(previous, count, now, check)
            ttl = 2 * check.window
        elif check.algorithm == FIXED_WINDOW:
            new_count, outcome = fixed_window(count, now, check)
            ttl = check.window
        else:
            raise ValueError(f"unknown algorithm {check.algorithm!r}")
        if new_count != count:
            self._set(key, new_count, self._existing_expiry(key) or now + ttl * MICROS)
        return outcome

    def _get(self, key: str) -> int:
        entry = self._values.get(key)
        return entry[0] if entry else 0

    def _existing_expiry(self, key: str) -> int:
        entry = self._values.get(key)
        return entry[1] if entry else 0

    def _set(self, key: str, value: int, expires_at: int) -> None:
        # One heap entry per key: a key whose expiry moved later (a token bucket's TAT) is pushed
        # back when its old entry comes up, so a busy key costs no more heap than an idle one.
        if key not in self._values:
            heapq.heappush(self._expiries, (expires_at, key))
        self._values[key] = (value, expires_at)

    def _expire(self, now: int) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            entry = self._values.get(key)
            if entry is None:
                continue
            if entry[1] <= now:
                del self._values[key]
            else:
                heapq.heappush(self._expiries, (entry[1], key))
