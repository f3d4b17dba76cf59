"""A circuit breaker in front of the counter store, so a Redis outage costs no time per request.

closed ──N consecutive failures──▶ open ──cool-down elapsed──▶ half-open (one probe request)
  ▲                                  ▲                               │
  └────────── probe succeeds ────────┴──────── probe fails ──────────┘

While open, `apply` raises BackendUnavailable at once without touching Redis; the limiter then
answers by each rule's `on_backend_error`. In half-open exactly one request goes through as the
probe; the others keep failing fast until it has answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from enum import StrEnum

from pavilion.errors import BackendUnavailable
from pavilion.log import get_logger
from ratelimit.store import Check, CounterStore, Outcome

log = get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Wraps a CounterStore; itself a CounterStore. `on_change(state)` is called on every transition."""

    def __init__(self, store: CounterStore, *, failures_to_open: int = 5, cool_down: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[BreakerState], None] | None = None) -> None:
        if failures_to_open < 1:
            raise ValueError("failures_to_open must be at least 1")
        self._store = store
        self._failures_to_open = failures_to_open
        self._cool_down = cool_down
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cool_down:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def usable(self) -> bool:
        """False while open: requests would be answered by `on_backend_error`, not by the store."""
        return self.state is not BreakerState.OPEN

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probing):
            raise BackendUnavailable("redis", "circuit breaker open")
        probe = state is BreakerState.HALF_OPEN
        if probe:
            self._probing = True
            self._set(BreakerState.HALF_OPEN)
        try:
            outcomes = await self._store.apply(checks)
        except BackendUnavailable:
            self._record_failure(probe)
            raise
        finally:
            if probe:
                self._probing = False
        self._record_success()
        return outcomes

    def _record_failure(self, probe: bool) -> None:
        self._failures += 1
        if probe or (self._state is BreakerState.CLOSED and self._failures >= self._failures_to_open):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def _record_success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        log.warning("redis_breaker", state=state.value, failures=self._failures)
        if self._on_change is not None:
            self._on_change(state)

    async def close(self) -> None:
        await self._store.close()
