from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pavilion.errors import BackendUnavailable
from ratelimit.clock import ManualClock
from ratelimit.config import load_config, parse_config_text
from ratelimit.limiter import Code, Decision, Descriptor, Limiter
from ratelimit.matching import RateLimitConfig
from ratelimit.memory_store import MemoryStore
from ratelimit.rules import MAX_UINT32, Limit
from ratelimit.store import Check, Outcome

T0 = 1_699_999_200.25  # a quarter second into a second, minute and hour window


class CountingStore:
    """A MemoryStore that records every apply call."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryStore(clock)
        self.calls: list[list[Check]] = []

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        self.calls.append(list(checks))
        return await self.inner.apply(checks)

    async def close(self) -> None:
        await self.inner.close()


class BrokenStore:
    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        raise BackendUnavailable("redis", "connection refused")

    async def close(self) -> None:
        return None


def make(config: str | RateLimitConfig, **options: object) -> tuple[Limiter, CountingStore, ManualClock]:
    clock = ManualClock(T0)
    store = CountingStore(clock)
    cfg = parse_config_text(config) if isinstance(config, str) else config
    return Limiter(cfg, store, clock=clock, **options), store, clock  # type: ignore[arg-type]


def d(*entries: tuple[str, str], override: Limit | None = None, hits: int | None = None) -> Descriptor:
    return Descriptor(tuple(entries), override, hits)


async def run(limiter: Limiter, domain: str, times: int, *descriptors: Descriptor, hits: int = 1) -> list[Decision]:
    return [await limiter.should_rate_limit(domain, descriptors, hits) for _ in range(times)]


SIMPLE = """
domain: d
descriptors:
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 2}
"""


async def test_unmatched_descriptor_is_ok_without_a_limit_and_costs_nothing() -> None:
    limiter, store, _ = make(SIMPLE)
    decision = await limiter.should_rate_limit("d", [d(("user", "x"))])
    assert decision.code is Code.OK
    [status] = decision.statuses
    assert status.rule is None and status.current_limit is None and status.limit_remaining == 0
    assert store.calls == []


async def test_over_the_limit() -> None:
    limiter, _, _ = make(SIMPLE)
    decisions = await run(limiter, "d", 3, d(("ip", "1")))
    assert [x.code for x in decisions] == [Code.OK, Code.OK, Code.OVER_LIMIT]
    assert [x.statuses[0].limit_remaining for x in decisions] == [1, 0, 0]
    last = decisions[-1].statuses[0]
    assert last.current_limit == Limit("second", 2)
    assert last.duration_until_reset == pytest.approx(0.75)
    assert last.over and not last.shadowed
    other = await limiter.should_rate_limit("d", [d(("ip", "2"))])  # another value, another counter
    assert other.code is Code.OK


async def test_all_checks_of_a_request_go_to_the_store_in_one_call() -> None:
    config = load_config(Path(__file__).parent / "configs" / "extensions.yaml")
    limiter, store, _ = make(config)
    descriptors = [d(("tenant", f"t{i}")) for i in range(10)] + [d(("path", "/login"))]
    await limiter.should_rate_limit("api", descriptors)
    assert len(store.calls) == 1
    assert len(store.calls[0]) == 21  # two limits per tenant, one for the path
    assert len({check.key for check in store.calls[0]}) == 21


async def test_unlimited_is_never_limited_and_never_counted() -> None:
    limiter, store, _ = make(load_config(Path(__file__).parent / "configs" / "readme"))
    decisions = await run(limiter, "internal", 200, d(("ldap", "x")))
    assert all(x.code is Code.OK for x in decisions)
    assert decisions[-1].statuses[0].limit_remaining == MAX_UINT32 and decisions[-1].statuses[0].unlimited
    assert store.calls == []


async def test_shadow_mode_counts_and_reports_but_never_enforces() -> None:
    limiter, _, _ = make(load_config(Path(__file__).parent / "configs" / "readme"))
    user_a = d(("service", "s"), ("user", "user-a"))
    decisions = await run(limiter, "example6", 12, user_a)
    assert all(x.code is Code.OK for x in decisions)
    last = decisions[-1].statuses[0]
    assert last.over and last.shadowed and last.code is Code.OK and last.limit_remaining == 0
    assert decisions[9].statuses[0].over is False and decisions[10].statuses[0].over is True
    user_b = d(("service", "s"), ("user", "user-b"))
    assert (await run(limiter, "example6", 21, user_b))[-1].code is Code.OVER_LIMIT


async def test_replaces_cancels_the_named_limit_for_the_request() -> None:
    limiter, store, _ = make(load_config(Path(__file__).parent / "configs" / "readme"))
    specific = d(("key_1", "value_1"), ("user", "bkthomps"))
    replacing = d(("key_2", "value_2"), ("user", "bkthomps"))
    decisions = await run(limiter, "example7", 10, specific, replacing)
    assert all(x.code is Code.OK for x in decisions)  # 10 per second, not 5
    replaced = decisions[-1].statuses[0]
    assert replaced.replaced and replaced.code is Code.OK and replaced.current_limit is None
    assert all(len(call) == 1 for call in store.calls)  # the replaced limit was not counted...
    alone = await run(limiter, "example7", 6, specific)
    assert [x.code for x in alone] == [Code.OK] * 5 + [Code.OVER_LIMIT]  # ...so its own 5 are all there
    both = await limiter.should_rate_limit("example7", [specific, replacing])
    assert both.code is Code.OVER_LIMIT  # the 11th hit on the 10-per-second limit


async def test_several_rate_limits_on_one_descriptor_all_count() -> None:
    config = """
domain: d
descriptors:
  - key: k
    rate_limits:
      - {unit: second, requests_per_unit: 2}
      - {unit: minute, requests_per_unit: 3}
"""
    limiter, _, clock = make(config)
    first = await run(limiter, "d", 3, d(("k", "v")))
    assert [x.code for x in first] == [Code.OK, Code.OK, Code.OVER_LIMIT]
    assert first[-1].statuses[0].current_limit == Limit("second", 2)
    assert first[1].statuses[0].current_limit == Limit("second", 2)  # the least remaining decides
    clock.advance(1)
    # The over-limit hit above was counted by the minute limit too (fixed windows count every hit).
    nxt = await limiter.should_rate_limit("d", [d(("k", "v"))])
    assert nxt.code is Code.OVER_LIMIT
    status = nxt.statuses[0]
    assert status.current_limit == Limit("minute", 3)
    assert status.duration_until_reset == pytest.approx(58.75)
    assert [s.over for s in status.limits] == [False, True]


async def test_overall_code_is_over_when_any_descriptor_is() -> None:
    limiter, _, _ = make(SIMPLE)
    await run(limiter, "d", 2, d(("ip", "1")))
    decision = await limiter.should_rate_limit("d", [d(("ip", "2")), d(("ip", "1")), d(("other", "x"))])
    assert decision.code is Code.OVER_LIMIT
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OVER_LIMIT, Code.OK]


async def test_global_shadow_mode_answers_ok_and_keeps_the_statuses() -> None:
    limiter, _, _ = make(SIMPLE, global_shadow_mode=True)
    decisions = await run(limiter, "d", 3, d(("ip", "1")))
    assert all(x.code is Code.OK for x in decisions)
    assert decisions[-1].global_shadowed and not decisions[0].global_shadowed
    assert decisions[-1].statuses[0].code is Code.OVER_LIMIT


async def test_hits_addend_zero_checks_without_consuming() -> None:
    limiter, _, _ = make(SIMPLE)
    checks = await run(limiter, "d", 5, d(("ip", "1")), hits=0)
    assert all(x.code is Code.OK for x in checks) and checks[-1].statuses[0].limit_remaining == 2
    await run(limiter, "d", 2, d(("ip", "1")))
    exhausted = await limiter.should_rate_limit("d", [d(("ip", "1"))], 0)
    assert exhausted.code is Code.OVER_LIMIT  # no capacity left: a check says so


async def test_hits_addend_above_one_and_per_descriptor_override() -> None:
    limiter, _, _ = make(SIMPLE)
    decision = await limiter.should_rate_limit("d", [d(("ip", "1")), d(("ip", "2"), hits=0)], 2)
    assert [s.hits for s in decision.statuses] == [2, 0]
    assert [s.limit_remaining for s in decision.statuses] == [0, 2]
    assert (await limiter.should_rate_limit("d", [d(("ip", "3"))], 3)).code is Code.OVER_LIMIT


async def test_limit_override_replaces_the_configured_limit() -> None:
    limiter, store, _ = make(SIMPLE)
    override = Limit("minute", 3)
    decisions = await run(limiter, "d", 4, d(("ip", "1"), override=override))
    assert [x.code for x in decisions] == [Code.OK] * 3 + [Code.OVER_LIMIT]
    assert decisions[0].statuses[0].current_limit == override
    # The configured 2 per second kept its own counter.
    assert (await limiter.should_rate_limit("d", [d(("ip", "1"))])).code is Code.OK
    keys = {check.key for call in store.calls for check in call}
    assert keys == {"d|ip=1|o.fixed_window.60", "d|ip=1|0.fixed_window.1"}
    # A different unit counts apart; a different rate in the same unit keeps counting the same requests.
    assert (await limiter.should_rate_limit("d", [d(("ip", "1"), override=Limit("hour", 3))])).code is Code.OK
    assert (await limiter.should_rate_limit("d", [d(("ip", "1"), override=Limit("minute", 5))])).code is Code.OK
    assert (await limiter.should_rate_limit("d", [d(("ip", "1"), override=Limit("minute", 5))])).code \
        is Code.OVER_LIMIT


async def test_limit_override_applies_in_a_known_domain_only() -> None:
    limiter, _, _ = make(SIMPLE)
    override = Limit("second", 0)
    unmatched = await limiter.should_rate_limit("d", [d(("unmatched", "x"), override=override)])
    assert unmatched.code is Code.OVER_LIMIT
    rule = unmatched.statuses[0].rule
    assert rule is not None and rule.stats_key == "d.unmatched"  # no request value in a metric label
    matched = await limiter.should_rate_limit("d", [d(("ip", "10.0.0.1"), override=override)])
    assert matched.statuses[0].rule is not None and matched.statuses[0].rule.stats_key == "d.ip"
    assert (await limiter.should_rate_limit("other", [d(("ip", "1"), override=override)])).code is Code.OK


async def test_override_is_never_in_shadow_mode() -> None:
    limiter, _, _ = make("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: true\n"
                         "    rate_limit: {unit: second, requests_per_unit: 1}\n")
    decision = await limiter.should_rate_limit("d", [d(("k", "v"), override=Limit("second", 0))])
    assert decision.code is Code.OVER_LIMIT


FALLBACKS = """
domain: d
descriptors:
  - key: open
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: closed
    on_backend_error: deny
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: shadow_closed
    on_backend_error: deny
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: local
    on_backend_error: local
    rate_limit: {unit: second, requests_per_unit: 10}
"""


def broken(**options: object) -> Limiter:
    clock = ManualClock(T0)
    return Limiter(parse_config_text(FALLBACKS), BrokenStore(), clock=clock, **options)  # type: ignore[arg-type]


async def test_backend_error_allow() -> None:
    decision = await broken().should_rate_limit("d", [d(("open", "x"))])
    assert decision.code is Code.OK and isinstance(decision.backend_error, BackendUnavailable)
    status = decision.statuses[0]
    assert status.fallback == "allow" and status.limit_remaining == 10 and status.current_limit == Limit("second", 10)


async def test_backend_error_deny_is_over_limit_and_says_why() -> None:
    decision = await broken().should_rate_limit("d", [d(("open", "x")), d(("closed", "x"))])
    assert decision.code is Code.OVER_LIMIT
    assert [s.fallback for s in decision.statuses] == ["allow", "deny"]
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OVER_LIMIT]


async def test_backend_error_deny_in_shadow_mode_stays_ok() -> None:
    decision = await broken().should_rate_limit("d", [d(("shadow_closed", "x"))])
    assert decision.code is Code.OK and decision.statuses[0].shadowed


async def test_backend_error_local_enforces_the_replica_share() -> None:
    limiter = broken(replicas=3)
    decisions = await run(limiter, "d", 5, d(("local", "x")))
    assert [x.code for x in decisions] == [Code.OK] * 3 + [Code.OVER_LIMIT] * 2  # 10 // 3
    assert decisions[0].statuses[0].fallback == "local"


async def test_no_backend_error_when_nothing_is_counted() -> None:
    decision = await broken().should_rate_limit("d", [d(("nothing", "x"))])
    assert decision.code is Code.OK and decision.backend_error is None


def test_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replicas"):
        broken(replicas=0)


async def test_negative_hits_are_refused() -> None:
    limiter, _, _ = make(SIMPLE)
    with pytest.raises(ValueError, match="negative"):
        await limiter.should_rate_limit("d", [d(("ip", "1"), hits=-1)])
    with pytest.raises(ValueError, match="negative"):
        await limiter.should_rate_limit("d", [d(("ip", "1"))], -2)


async def test_config_swap_takes_effect_on_the_next_request() -> None:
    limiter, _, _ = make(SIMPLE)
    await run(limiter, "d", 2, d(("ip", "1")))
    limiter.config = parse_config_text(SIMPLE.replace("requests_per_unit: 2", "requests_per_unit: 5"))
    assert (await limiter.should_rate_limit("d", [d(("ip", "1"))])).code is Code.OK  # same key: counts kept, 3 <= 5


def test_storage_keys_escape_separators_and_hash_tag_braces() -> None:
    from ratelimit.store import storage_key

    plain = storage_key("d", [("ip", "10.0.0.1")], Limit("second", 1), 0)
    assert plain == "d|ip=10.0.0.1|0.fixed_window.1"
    tricky = storage_key("d{x}", [("a|b", "c=d"), ("e", "f:g h")], Limit("minute", 1, algorithm="token_bucket"), 2)
    assert tricky == "d%7Bx%7D|a%7Cb=c%3Dd|e=f%3Ag%20h|2.token_bucket.60"
    # Entries that would run together if joined naively stay apart.
    assert storage_key("d", [("a", "b|c=d")], Limit("second", 1), 0) != storage_key(
        "d", [("a", "b"), ("c", "d")], Limit("second", 1), 0)


ALGORITHMS = """
domain: d
descriptors:
  - key: fixed
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: sliding
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: sliding_window}
  - key: bucket
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: token_bucket}
"""


@pytest.mark.parametrize(("key", "admitted_after_boundary"), [("fixed", 10), ("sliding", 1), ("bucket", 0)])
async def test_a_burst_across_the_minute_boundary(key: str, admitted_after_boundary: int) -> None:
    # Fixed windows admit a second full burst; the sliding estimate floor(10 * 59.9/60) = 9 leaves one.
    limiter, _, clock = make(ALGORITHMS)
    clock.set(T0 - 0.25 + 59.9)  # 100 ms before the minute ends
    before = await run(limiter, "d", 10, d((key, "v")))
    assert all(x.code is Code.OK for x in before)
    clock.advance(0.2)  # 100 ms into the next minute
    after = await run(limiter, "d", 10, d((key, "v")))
    assert sum(x.code is Code.OK for x in after) == admitted_after_boundary


async def test_token_bucket_burst_from_config_then_steady_rate() -> None:
    limiter, _, clock = make("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
                             "      unit_multiplier: 10\n      requests_per_unit: 10\n"
                             "      algorithm: token_bucket\n      burst: 4\n")
    burst = await run(limiter, "d", 6, d(("k", "v")))
    assert [x.code for x in burst] == [Code.OK] * 4 + [Code.OVER_LIMIT] * 2
    assert burst[-1].statuses[0].duration_until_reset == pytest.approx(1.0)  # T = 10 s / 10
    clock.advance(3)
    assert sum(x.code is Code.OK for x in await run(limiter, "d", 5, d(("k", "v")))) == 3
