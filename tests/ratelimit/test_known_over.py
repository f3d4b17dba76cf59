"""Fixed-window counters known to be over: answered without the store until their window ends,
never for an algorithm whose "over" can turn back, never across a limit override of another rate,
forgotten on a config swap, and of no effect on what is decided."""

from __future__ import annotations

from collections.abc import Sequence

from pavilion.errors import BackendUnavailable
from ratelimit.clock import ManualClock
from ratelimit.config import parse_config_text
from ratelimit.known_over import KnownOver
from ratelimit.limiter import Code, Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.rules import Limit
from ratelimit.store import Check, Outcome

T0 = 1_699_999_200.25  # 0.25 s into an hour window

CONFIG = """
domain: d
descriptors:
  - key: fixed
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: bucket
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: token_bucket}
  - key: sliding
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_window}
  - key: both
    rate_limits:
      - {unit: hour, requests_per_unit: 2, name: hourly}
      - {unit: day, requests_per_unit: 100, name: daily}
"""


class CountingStore:
    """A MemoryStore that records the checks of every apply call; `down` makes it fail."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryStore(clock)
        self.asked: list[list[str]] = []
        self.down = False

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        if self.down:
            raise BackendUnavailable("redis", "down")
        self.asked.append([check.key for check in checks])
        return await self.inner.apply(checks)

    async def close(self) -> None:
        await self.inner.close()


def make(config: str = CONFIG) -> tuple[Limiter, CountingStore, ManualClock]:
    clock = ManualClock(T0)
    store = CountingStore(clock)
    return Limiter(parse_config_text(config), store, clock=clock), store, clock  # type: ignore[arg-type]


def one(key: str, value: str = "v", override: Limit | None = None, hits: int | None = None) -> Descriptor:
    return Descriptor(((key, value),), override, hits)


async def test_an_over_fixed_window_is_answered_without_the_store_until_it_ends() -> None:
    limiter, store, clock = make()
    codes = [(await limiter.should_rate_limit("d", [one("fixed")])).code for _ in range(3)]
    assert codes == [Code.OK, Code.OK, Code.OVER_LIMIT]
    asked = len(store.asked)
    decision = await limiter.should_rate_limit("d", [one("fixed")])
    assert decision.code is Code.OVER_LIMIT
    assert len(store.asked) == asked  # no store call at all
    status = decision.statuses[0]
    assert status.limit_remaining == 0
    assert status.duration_until_reset == 3600 - 0.25  # to the end of the hour window
    probe = await limiter.should_rate_limit("d", [one("fixed", hits=0)])  # a probe: over as well
    assert probe.code is Code.OVER_LIMIT and len(store.asked) == asked
    clock.advance(3600)  # the next window: asked again, and admitted
    assert (await limiter.should_rate_limit("d", [one("fixed")])).code is Code.OK
    assert len(store.asked) == asked + 1


async def test_other_algorithms_are_always_asked() -> None:
    for key in ("bucket", "sliding"):
        limiter, store, _clock = make()
        for _ in range(4):
            await limiter.should_rate_limit("d", [one(key)])
        assert len(store.asked) == 4, key


async def test_only_the_known_check_is_skipped_the_rest_of_the_request_is_counted() -> None:
    limiter, store, _clock = make()
    for _ in range(3):
        await limiter.should_rate_limit("d", [one("fixed", "a")])
    decision = await limiter.should_rate_limit("d", [one("fixed", "a"), one("fixed", "b")])
    assert [s.code for s in decision.statuses] == [Code.OVER_LIMIT, Code.OK]
    assert store.asked[-1] == ["d|fixed=b|0.fixed_window.3600"]
    # Two limits on one descriptor: the hourly one known over, the daily one still counted.
    for _ in range(3):
        await limiter.should_rate_limit("d", [one("both")])
    decision = await limiter.should_rate_limit("d", [one("both")])
    assert decision.code is Code.OVER_LIMIT
    assert store.asked[-1] == ["d|both=v|1.fixed_window.86400"]
    assert decision.statuses[0].limits[1].outcome.used == 4


async def test_an_override_of_another_rate_on_the_same_key_is_asked() -> None:
    limiter, store, _clock = make()
    small, large = Limit(unit="hour", requests_per_unit=1), Limit(unit="hour", requests_per_unit=50)
    await limiter.should_rate_limit("d", [one("fixed", override=small)])
    assert (await limiter.should_rate_limit("d", [one("fixed", override=small)])).code is Code.OVER_LIMIT
    asked = len(store.asked)
    assert (await limiter.should_rate_limit("d", [one("fixed", override=large)])).code is Code.OK
    assert len(store.asked) == asked + 1


async def test_a_config_swap_forgets_what_was_known() -> None:
    limiter, _store, _clock = make()
    for _ in range(3):
        await limiter.should_rate_limit("d", [one("fixed")])
    limiter.config = parse_config_text(CONFIG.replace("requests_per_unit: 2}\n  - key: bucket",
                                                      "requests_per_unit: 10}\n  - key: bucket"))
    decision = await limiter.should_rate_limit("d", [one("fixed")])
    assert decision.code is Code.OK  # 4 of the new 10: the store was asked
    assert decision.statuses[0].limit_remaining == 6


async def test_when_the_store_fails_known_checks_stay_over_and_the_rest_fall_back() -> None:
    limiter, store, _clock = make()
    for _ in range(3):
        await limiter.should_rate_limit("d", [one("fixed", "a")])
    store.down = True
    decision = await limiter.should_rate_limit("d", [one("fixed", "a"), one("fixed", "b")])
    assert [s.code for s in decision.statuses] == [Code.OVER_LIMIT, Code.OK]
    assert [s.fallback for s in decision.statuses] == [None, "allow"]
    assert decision.backend_error is not None


def test_the_cache_is_bounded() -> None:
    known = KnownOver(max_entries=3)
    over = Outcome(False, 0, 10.0, 5)
    for i in range(10):
        known.remember([Check(f"k{i}", "fixed_window", 1, 60)], [over], now_us=0)
    assert len(known) <= 3


def test_a_long_key_is_not_remembered() -> None:
    known = KnownOver()
    over = Outcome(False, 0, 10.0, 5)
    known.remember([Check("k" * 2000, "fixed_window", 1, 60)], [over], now_us=0)
    assert len(known) == 0
