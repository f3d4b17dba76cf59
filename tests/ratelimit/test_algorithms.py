from __future__ import annotations

import math

import pytest

from ratelimit.algorithms import fixed_window, sliding_window, token_bucket, window_start
from ratelimit.clock import ManualClock
from ratelimit.memory_store import MemoryStore
from ratelimit.store import Check, Outcome
from tests.ratelimit.vectors import T0, T0_US, VECTORS, Vector


def assert_outcome(got: Outcome, expect: Outcome, where: str) -> None:
    assert (got.allowed, got.remaining, got.used) == (expect.allowed, expect.remaining, expect.used), where
    assert math.isclose(got.reset_after, expect.reset_after, abs_tol=1e-6), f"{where}: {got} != {expect}"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
async def test_vectors_through_memory_store(vector: Vector) -> None:
    clock = ManualClock(T0)
    store = MemoryStore(clock)
    for index, step in enumerate(vector.steps):
        clock.set(T0 + step.at_ms / 1000)
        assert clock.now_us() == T0_US + step.at_ms * 1000
        [got] = await store.apply([vector.check("k", step.hits)])
        assert_outcome(got, step.expect, f"{vector.name} step {index}")


def test_window_start_is_epoch_aligned() -> None:
    assert window_start(T0_US + 59_999_999, 60) == T0
    assert window_start(T0_US + 60_000_000, 60) == T0 + 60
    assert window_start(T0_US + 1, 86_400) == T0 - T0 % 86_400 and (T0 - T0 % 86_400) % 86_400 == 0


def test_fixed_window_allows_twice_the_limit_across_a_boundary() -> None:
    check = Check("k", "fixed_window", 100, 60, hits=100)
    before = T0_US + 59_999_000
    count, first = fixed_window(0, before, check)
    _, second = fixed_window(0, before + 2_000, check)  # a new window: the store reads a new counter
    assert first.allowed and second.allowed and count == 100


def test_sliding_window_does_not_allow_twice_the_limit_across_a_boundary() -> None:
    check = Check("k", "sliding_window", 100, 60, hits=100)
    current, first = sliding_window(0, 0, T0_US + 59_999_000, check)
    _, second = sliding_window(current, 0, T0_US + 60_001_000, check)
    assert first.allowed and not second.allowed


def test_sliding_window_admits_in_proportion_as_the_previous_window_ages() -> None:
    check = Check("k", "sliding_window", 100, 60, hits=1)
    admitted = []
    for elapsed_s in (0, 15, 30, 45, 59):
        current = 0
        while True:
            current, outcome = sliding_window(100, current, T0_US + 60_000_000 + elapsed_s * 1_000_000, check)
            if not outcome.allowed:
                break
        admitted.append(current)
    assert admitted == [0, 25, 50, 75, 99]  # at 59 s: 100 - floor(100 / 60)


def test_token_bucket_refills_one_token_per_interval_up_to_the_burst() -> None:
    check = Check("k", "token_bucket", 60, 60, burst=5, hits=1)
    tat = 0
    for _ in range(5):
        tat, outcome = token_bucket(tat, T0_US, check)
        assert outcome.allowed
    tat, outcome = token_bucket(tat, T0_US, check)
    assert not outcome.allowed and outcome.reset_after == pytest.approx(1.0)
    # 100 s idle refills only to the burst, not 100 tokens.
    later = T0_US + 100_000_000
    allowed = 0
    while True:
        tat, outcome = token_bucket(tat, later, check)
        if not outcome.allowed:
            break
        allowed += 1
    assert allowed == 5


def test_token_bucket_sustained_rate_is_the_limit() -> None:
    check = Check("k", "token_bucket", 10, 1, burst=1, hits=1)
    tat, allowed = 0, 0
    for step in range(1000):  # one attempt per ms for one second
        tat, outcome = token_bucket(tat, T0_US + step * 1000, check)
        allowed += outcome.allowed
    assert allowed == 10


def test_zero_hits_never_changes_state() -> None:
    for algorithm in ("fixed_window", "sliding_window", "token_bucket"):
        check = Check("k", algorithm, 3, 10, hits=0)
        assert fixed_window(2, T0_US, check)[0] == 2
        assert sliding_window(1, 2, T0_US, check)[0] == 2
        assert token_bucket(T0_US + 5, T0_US, check)[0] == T0_US + 5
