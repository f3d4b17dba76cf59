"""The limiter's plan cache (rule and checks per domain, descriptor entries and hits): it answers
as the uncached path would, forgets everything when the config object is swapped, stays bounded,
and is not used for what it cannot hold (overrides, requests whose rules replace limits)."""

from __future__ import annotations

from ratelimit.clock import ManualClock
from ratelimit.config import parse_config_text
from ratelimit.limiter import Code, Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.rules import Limit

T0 = 1_699_999_200.25

TWO = """
domain: d
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 2}
"""
FIVE = TWO.replace("requests_per_unit: 2", "requests_per_unit: 5")
REPLACING = """
domain: d
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 2, name: base}
  - key: vip
    rate_limit: {unit: hour, requests_per_unit: 100, replaces: [{name: base}]}
"""


def make(text: str, **options: object) -> Limiter:
    clock = ManualClock(T0)
    return Limiter(parse_config_text(text), MemoryStore(clock), clock=clock, **options)  # type: ignore[arg-type]


def desc(value: str, key: str = "k") -> Descriptor:
    return Descriptor(((key, value),))


async def test_a_swapped_config_is_used_at_once_not_the_cached_plan() -> None:
    limiter = make(TWO)
    for _ in range(2):
        assert (await limiter.should_rate_limit("d", [desc("a")])).code is Code.OK
    assert (await limiter.should_rate_limit("d", [desc("a")])).code is Code.OVER_LIMIT
    assert limiter.cached_plans == 1
    limiter.config = parse_config_text(FIVE)
    decision = await limiter.should_rate_limit("d", [desc("a")])
    # Same key (the rate is not part of it), so the 4th hit is counted against the new limit of 5.
    assert decision.code is Code.OK
    assert decision.statuses[0].current_limit is not None
    assert decision.statuses[0].current_limit.requests_per_unit == 5
    assert decision.statuses[0].limit_remaining == 1
    assert limiter.cached_plans == 1  # the old plan was dropped, the new one cached


async def test_a_config_that_drops_the_rule_stops_limiting() -> None:
    limiter = make(TWO)
    for _ in range(3):
        await limiter.should_rate_limit("d", [desc("a")])
    limiter.config = parse_config_text("domain: d\ndescriptors:\n  - key: other\n    rate_limit: "
                                       "{unit: hour, requests_per_unit: 1}\n")
    decision = await limiter.should_rate_limit("d", [desc("a")])
    assert decision.code is Code.OK and decision.statuses[0].rule is None


async def test_the_cache_is_bounded_and_keeps_the_recently_used() -> None:
    limiter = make(TWO, plan_cache_size=3)
    for value in ("a", "b", "c"):
        await limiter.should_rate_limit("d", [desc(value)])
    await limiter.should_rate_limit("d", [desc("a")])  # "a" is now the most recently used
    await limiter.should_rate_limit("d", [desc("z")])  # evicts "b", the least recently used
    assert limiter.cached_plans == 3
    keys = {entries for _domain, entries, _hits in limiter._plans}
    assert keys == {(("k", "a"),), (("k", "c"),), (("k", "z"),)}
    for value in [f"v{i}" for i in range(50)]:
        await limiter.should_rate_limit("d", [desc(value)])
    assert limiter.cached_plans == 3


async def test_cached_and_uncached_answers_are_the_same() -> None:
    cached, uncached = make(TWO), make(TWO, plan_cache_size=0)
    for hits in (1, 0, 1, 1, 0):
        one = await cached.should_rate_limit("d", [desc("a"), desc("b")], hits)
        two = await uncached.should_rate_limit("d", [desc("a"), desc("b")], hits)
        assert one == two
    assert uncached.cached_plans == 0


async def test_hits_are_part_of_the_plan() -> None:
    limiter = make(TWO)
    await limiter.should_rate_limit("d", [desc("a")], 1)
    probe = await limiter.should_rate_limit("d", [desc("a")], 0)  # checks without consuming
    assert probe.statuses[0].limit_remaining == 1
    after = await limiter.should_rate_limit("d", [desc("a")], 1)
    assert after.statuses[0].limit_remaining == 0 and after.code is Code.OK


async def test_overrides_and_replacing_requests_bypass_the_cache() -> None:
    limiter = make(REPLACING)
    override = Descriptor((("k", "a"),), Limit(unit="hour", requests_per_unit=1))
    assert (await limiter.should_rate_limit("d", [override])).code is Code.OK
    assert (await limiter.should_rate_limit("d", [override])).code is Code.OVER_LIMIT
    assert limiter.cached_plans == 0
    # "vip" replaces "base": k's own limit is not counted in this request, though its plan is cached.
    for _ in range(5):
        decision = await limiter.should_rate_limit("d", [desc("b"), desc("x", key="vip")])
        assert decision.code is Code.OK
        assert decision.statuses[0].replaced and not decision.statuses[0].limits
    assert (await limiter.should_rate_limit("d", [desc("b")])).statuses[0].limit_remaining == 1
