"""The circuit breaker: opens after N consecutive failures, fails fast while open, probes once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pavilion.errors import BackendUnavailable
from ratelimit.breaker import BreakerState, CircuitBreaker
from ratelimit.store import Check, Outcome

CHECK = Check("k", "fixed_window", 10, 60)
OK = Outcome(True, 9, 1.0, 1)


class FlakyStore:
    def __init__(self) -> None:
        self.failing = False
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise BackendUnavailable("redis", "down")
        return [OK for _ in checks]

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_opens_after_consecutive_failures_and_then_fails_fast() -> None:
    store, clock, changes = FlakyStore(), Clock(), []
    breaker = CircuitBreaker(store, failures_to_open=3, cool_down=2.0, clock=clock, on_change=changes.append)
    store.failing = True
    for _ in range(3):
        with pytest.raises(BackendUnavailable, match="down"):
            await breaker.apply([CHECK])
    assert breaker.state is BreakerState.OPEN and not breaker.usable
    with pytest.raises(BackendUnavailable, match="breaker open"):
        await breaker.apply([CHECK])
    assert store.calls == 3  # the open breaker did not touch the store
    assert changes == [BreakerState.OPEN]


async def test_a_success_resets_the_failure_count() -> None:
    store = FlakyStore()
    breaker = CircuitBreaker(store, failures_to_open=2, clock=Clock())
    store.failing = True
    with pytest.raises(BackendUnavailable):
        await breaker.apply([CHECK])
    store.failing = False
    await breaker.apply([CHECK])
    store.failing = True
    with pytest.raises(BackendUnavailable):
        await breaker.apply([CHECK])
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    store, clock, changes = FlakyStore(), Clock(), []
    breaker = CircuitBreaker(store, failures_to_open=1, cool_down=2.0, clock=clock, on_change=changes.append)
    store.failing = True
    with pytest.raises(BackendUnavailable):
        await breaker.apply([CHECK])
    clock.now += 2.0
    assert breaker.state is BreakerState.HALF_OPEN
    store.failing = False
    store.gate = asyncio.Event()
    probe = asyncio.create_task(breaker.apply([CHECK]))
    await asyncio.sleep(0)
    with pytest.raises(BackendUnavailable, match="breaker open"):
        await breaker.apply([CHECK])  # a second request while the probe is out fails fast
    store.gate.set()
    assert await probe == [OK]
    assert breaker.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    assert store.calls == 2


async def test_a_failed_probe_opens_again_for_a_full_cool_down() -> None:
    store, clock = FlakyStore(), Clock()
    breaker = CircuitBreaker(store, failures_to_open=1, cool_down=2.0, clock=clock)
    store.failing = True
    with pytest.raises(BackendUnavailable):
        await breaker.apply([CHECK])
    clock.now += 2.5
    with pytest.raises(BackendUnavailable, match="down"):
        await breaker.apply([CHECK])  # the probe, which fails
    clock.now += 1.0
    assert breaker.state is BreakerState.OPEN
    clock.now += 1.0
    assert breaker.state is BreakerState.HALF_OPEN
