"""Shared test vectors for the rate-limit algorithms: the memory store and the Redis Lua must both pass them.

Each vector is one key under one check shape; its steps run in order against fresh state. Times are
integer milliseconds after `T0` (an epoch second aligned to the hour, so every window used here
starts at T0). Expected outcomes were worked out by hand from the definitions in
ratelimit/algorithms.py, not produced by running it. To replay against another store, give it the
time `T0_US + at_ms * 1000` for each step and compare with `expect` (reset_after within 1 µs).
"""

from __future__ import annotations

from dataclasses import dataclass

from ratelimit.store import Check, Outcome

T0 = 1_699_999_200  # 472222 hours after the epoch
T0_US = T0 * 1_000_000


@dataclass(frozen=True)
class Step:
    at_ms: int
    hits: int
    expect: Outcome


@dataclass(frozen=True)
class Vector:
    name: str
    algorithm: str
    limit: int
    window: int
    burst: int
    steps: tuple[Step, ...]

    def check(self, key: str, hits: int) -> Check:
        return Check(key, self.algorithm, self.limit, self.window, self.burst, hits)


def _s(at_ms: int, hits: int, allowed: bool, remaining: int, reset_after: float, used: int) -> Step:
    return Step(at_ms, hits, Outcome(allowed, remaining, reset_after, used))


VECTORS: tuple[Vector, ...] = (
    Vector("fixed_window double burst at the boundary", "fixed_window", 3, 10, 0, (
        _s(9_000, 1, True, 2, 1.0, 1),
        _s(9_500, 1, True, 1, 0.5, 2),
        _s(9_900, 1, True, 0, 0.1, 3),
        _s(9_950, 1, False, 0, 0.05, 4),   # over: still counted, as envoyproxy/ratelimit's INCRBY
        _s(10_000, 1, True, 2, 10.0, 1),   # new window: 3 more within 1.1 s of the last 3
        _s(10_100, 2, True, 0, 9.9, 3),
        _s(10_200, 0, False, 0, 9.8, 3),   # hits 0: would one more pass? no
    )),
    Vector("fixed_window hits_addend 0 and above 1", "fixed_window", 5, 60, 0, (
        _s(1_000, 0, True, 5, 59.0, 0),
        _s(2_000, 4, True, 1, 58.0, 4),
        _s(2_500, 0, True, 1, 57.5, 4),    # checking consumes nothing
        _s(3_000, 2, False, 0, 57.0, 6),
        _s(4_000, 1, False, 0, 56.0, 7),
        _s(60_000, 1, True, 4, 60.0, 1),
    )),
    Vector("fixed_window limit 0 refuses all", "fixed_window", 0, 1, 0, (
        _s(0, 1, False, 0, 1.0, 1),
        _s(250, 0, False, 0, 0.75, 1),
    )),
    Vector("sliding_window smooths the boundary", "sliding_window", 10, 10, 0, (
        _s(5_000, 10, True, 0, 5.0, 10),
        _s(6_000, 1, False, 0, 5.0, 10),   # passes once the window moves: 1 s into the next one
        _s(10_500, 1, True, 0, 9.5, 10),   # floor(10 * 0.95) + 0 + 1 = 10: one, not another 10
        _s(10_600, 1, False, 0, 1.4, 10),  # floor(10 * 0.94) + 1 + 1 = 11; at 12 s: 8 + 1 + 1
        _s(12_000, 1, True, 0, 8.0, 10),
        _s(21_000, 1, True, 8, 9.0, 2),    # previous window held 2: floor(2 * 0.9) = 1, + 1 now
        _s(25_000, 0, True, 8, 5.0, 2),    # floor(2 * 0.5) = 1, + 1 current
    )),
    Vector("sliding_window request larger than the limit", "sliding_window", 2, 1, 0, (
        _s(0, 3, False, 2, 2.0, 0),
        _s(500, 2, True, 0, 0.5, 2),
    )),
    Vector("sliding_window uneven weights", "sliding_window", 7, 60, 0, (
        _s(10_000, 5, True, 2, 50.0, 5),
        _s(59_999, 2, True, 0, 0.001, 7),
        _s(80_000, 1, True, 2, 40.0, 5),        # floor(7 * 40/60) = 4, + 1
        _s(80_000, 3, False, 2, 14.285715, 5),  # ceil(60e6 * (1 - 3/7)) = 34285715 us into the window
        _s(120_500, 7, True, 0, 59.5, 7),       # floor(1 * 59.5/60) = 0
    )),
    Vector("token_bucket interval that does not divide the window", "token_bucket", 3, 1, 0, (
        _s(0, 3, True, 0, 0.999999, 3),         # T = 333333 us, tolerance 999999 us
        _s(0, 1, False, 0, 0.333333, 3),
        _s(333, 1, False, 0, 0.000333, 3),
        _s(334, 1, True, 0, 0.999332, 3),
        _s(2_000, 0, True, 3, 0.0, 0),
    )),
    Vector("token_bucket burst then refill", "token_bucket", 10, 10, 3, (
        _s(0, 1, True, 2, 1.0, 1),         # T = 1 s, bucket of 3
        _s(0, 1, True, 1, 2.0, 2),
        _s(0, 1, True, 0, 3.0, 3),
        _s(0, 1, False, 0, 1.0, 3),        # retry after one emission interval
        _s(500, 1, False, 0, 0.5, 3),
        _s(1_000, 1, True, 0, 3.0, 3),     # one token back after 1 s
        _s(5_000, 0, True, 3, 0.0, 0),     # full again
        _s(5_000, 3, True, 0, 3.0, 3),
        _s(5_000, 0, False, 0, 1.0, 3),
    )),
    Vector("token_bucket default burst is the limit", "token_bucket", 2, 1, 0, (
        _s(0, 2, True, 0, 1.0, 2),          # T = 0.5 s, bucket of 2
        _s(250, 1, False, 0, 0.25, 2),
        _s(500, 1, True, 0, 1.0, 2),
        _s(10_000, 3, False, 2, 0.0, 0),    # larger than the bucket: never passes
        _s(10_000, 1, True, 1, 0.5, 1),
    )),
)
