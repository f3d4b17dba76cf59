from __future__ import annotations

import asyncio

import pytest

from ratelimit.clock import ManualClock
from ratelimit.memory_store import MemoryStore
from ratelimit.store import Check


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket"])
async def test_concurrent_applies_admit_exactly_the_limit(algorithm: str) -> None:
    store = MemoryStore(ManualClock(1_700_000_000.5))
    check = Check("k", algorithm, 100, 60, hits=1)

    async def one() -> bool:
        await asyncio.sleep(0)  # let every task start before any applies
        [outcome] = await store.apply([check])
        return outcome.allowed

    results = await asyncio.gather(*(one() for _ in range(1000)))
    assert sum(results) == 100


async def test_checks_of_one_call_are_decided_independently() -> None:
    store = MemoryStore(ManualClock(1_700_000_000.5))
    outcomes = await store.apply([Check("a", "fixed_window", 1, 1, hits=2), Check("b", "fixed_window", 5, 1, hits=2)])
    assert [o.allowed for o in outcomes] == [False, True]
    assert outcomes[1].remaining == 3


async def test_expired_keys_are_dropped() -> None:
    clock = ManualClock(1_700_000_000.0)
    store = MemoryStore(clock)
    await store.apply([Check(f"f{i}", "fixed_window", 10, 1) for i in range(100)])
    await store.apply([Check(f"s{i}", "sliding_window", 10, 1) for i in range(100)])
    await store.apply([Check(f"t{i}", "token_bucket", 10, 1) for i in range(100)])
    assert len(store) == 300
    clock.advance(1.0)  # fixed windows and the token buckets (TAT now + 0.1 s) are gone
    await store.apply([])
    assert len(store) == 100
    clock.advance(1.0)  # sliding windows live two windows
    await store.apply([])
    assert len(store) == 0


async def test_a_busy_token_bucket_keeps_one_expiry_entry() -> None:
    clock = ManualClock(1_700_000_000.0)
    store = MemoryStore(clock)
    for _ in range(1000):
        await store.apply([Check("t", "token_bucket", 1_000_000, 1)])
        clock.advance(0.0001)
    assert len(store._expiries) == 1


async def test_zero_hits_creates_no_key() -> None:
    store = MemoryStore(ManualClock(1_700_000_000.0))
    await store.apply([Check("k", algorithm, 10, 1, hits=0) for algorithm in ("fixed_window", "sliding_window")])
    await store.apply([Check("t", "token_bucket", 10, 1, hits=0)])
    assert len(store) == 0


async def test_unknown_algorithm_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        await MemoryStore(ManualClock()).apply([Check("k", "leaky", 1, 1)])
